"""Rewards of MediX-R1: structure (format, modality, answers) from the Rust core, and the composite reward."""

from medix_r1.rewards.structure import (
    StructureScores,
    analyze,
    extract_answers,
    format_rewards,
    is_invalid_answers,
    modality_rewards,
    parse_ground_truths,
)

__all__ = [
    "StructureScores",
    "analyze",
    "extract_answers",
    "format_rewards",
    "is_invalid_answers",
    "modality_rewards",
    "parse_ground_truths",
]
