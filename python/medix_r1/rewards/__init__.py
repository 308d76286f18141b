"""Rewards of MediX-R1: structure (format, modality, answers) from the Rust core, and the composite reward.

The composite reward and the TRL reward functions load on first access, so importing this package stays
cheap (no torch, llama.cpp or fastembed until a judge or embedder is built).
"""

from typing import Any

from medix_r1.rewards.structure import (
    StructureScores,
    analyze,
    extract_answers,
    format_rewards,
    is_invalid_answers,
    modality_rewards,
    parse_ground_truths,
)

_LAZY = {
    "COMPONENTS": "medix_r1.rewards.composite",
    "CompositeReward": "medix_r1.rewards.composite",
    "RewardConfig": "medix_r1.rewards.composite",
    "parse_weights": "medix_r1.rewards.composite",
    "CustomReward": "medix_r1.rewards.trl",
    "EmbeddingReward": "medix_r1.rewards.trl",
    "FormatReward": "medix_r1.rewards.trl",
    "LLMJudgeReward": "medix_r1.rewards.trl",
    "ModalityReward": "medix_r1.rewards.trl",
    "score_file": "medix_r1.rewards.score_file",
}

__all__ = [
    "COMPONENTS",
    "CompositeReward",
    "CustomReward",
    "EmbeddingReward",
    "FormatReward",
    "LLMJudgeReward",
    "ModalityReward",
    "RewardConfig",
    "StructureScores",
    "analyze",
    "extract_answers",
    "format_rewards",
    "is_invalid_answers",
    "modality_rewards",
    "parse_ground_truths",
    "parse_weights",
    "score_file",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medix_r1.rewards' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
