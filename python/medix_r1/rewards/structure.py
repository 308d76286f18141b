"""Format, modality and answer parsing of whole batches of completions, backed by the Rust core.

``mode="strict"`` is this project's definition; ``mode="reference"`` reproduces the MediX-R1 authors' released
reward code bit for bit. See the README's "Reward semantics" section for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from medix_r1 import _native

__all__ = [
    "StructureScores",
    "analyze",
    "extract_answers",
    "format_rewards",
    "is_invalid_answers",
    "modality_rewards",
    "parse_ground_truths",
]


def format_rewards(responses: Sequence[str], mode: str = "strict") -> np.ndarray:
    """1.0 where a response has the ``<TAG><think>..</think><answer>..</answer>`` shape, else 0.0."""
    return np.frombuffer(_native.format_rewards(responses, mode), dtype=np.float64)


def modality_rewards(
    responses: Sequence[str], ground_truths: Sequence[str], mode: str = "strict"
) -> np.ndarray:
    """1.0 where the response opens with the ground truth's modality tag, 0.0 where not, NaN where the ground
    truth has no tag (strict mode: not applicable)."""
    return np.frombuffer(_native.modality_rewards(responses, ground_truths, mode), dtype=np.float64)


def extract_answers(responses: Sequence[str], mode: str = "strict") -> list[str]:
    """The final answer of each response ("" in strict mode when there is no single answer block)."""
    return _native.extract_answers(responses, mode)


def parse_ground_truths(ground_truths: Sequence[str]) -> list[tuple[str | None, str]]:
    """``"<TAG> text"`` -> ``(TAG, text)``; without a known leading tag -> ``(None, text)``; text cleaned."""
    return _native.parse_ground_truths(ground_truths)


def is_invalid_answers(answers: Sequence[str], mode: str = "strict") -> np.ndarray:
    """True where an answer cannot be scored for accuracy (strict: blank; reference: the authors' rule)."""
    return np.frombuffer(_native.is_invalid_answers(answers, mode), dtype=np.bool_)


class StructureScores(NamedTuple):
    """Everything the composite reward reads from the text, from one pass of the Rust core."""

    format: np.ndarray
    modality: np.ndarray
    answers: list[str]
    invalid: np.ndarray


def analyze(
    responses: Sequence[str], ground_truths: Sequence[str] | None = None, mode: str = "strict"
) -> StructureScores:
    """Format, modality (NaN without ground truths), answers and validity in a single call."""
    fmt, mod, answers, invalid = _native.analyze_batch(responses, ground_truths, mode)
    return StructureScores(
        np.frombuffer(fmt, dtype=np.float64),
        np.frombuffer(mod, dtype=np.float64),
        answers,
        np.frombuffer(invalid, dtype=np.bool_),
    )
