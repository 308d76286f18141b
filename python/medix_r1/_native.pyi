"""Type stub for the Rust extension ``medix_r1._native`` (rust/medix-py). Use the wrappers in
``medix_r1.rewards`` and ``medix_r1.advantages``; they turn the returned buffers into NumPy arrays."""

from collections.abc import Sequence
from typing import Literal, overload

__all__ = [
    "MODALITY_TAGS",
    "MedixInputError",
    "analyze_batch",
    "extract_answers",
    "format_rewards",
    "group_advantages_raw",
    "is_invalid_answers",
    "modality_rewards",
    "parse_ground_truths",
]

MODALITY_TAGS: tuple[str, ...]
"""The 16 MediX-R1 modality tags, upper-case, in the paper's order."""

class MedixInputError(ValueError):
    """Bad input to a batch function; the message names the argument and the index. Picklable."""

    arg: str | None
    """The argument at fault (e.g. ``"responses"``), or None when the error concerns several."""
    index: int | None
    """The index of the bad item in that argument, or None when the error is not about one item."""

def format_rewards(responses: Sequence[str], mode: str = "strict") -> bytearray:
    """1.0/0.0 per response, as native-endian float64."""

def modality_rewards(
    responses: Sequence[str], ground_truths: Sequence[str], mode: str = "strict"
) -> bytearray:
    """1.0/0.0 (NaN = not applicable) per response, as native-endian float64."""

def extract_answers(responses: Sequence[str], mode: str = "strict") -> list[str]:
    """The final answer of each response."""

def parse_ground_truths(ground_truths: Sequence[str]) -> list[tuple[str | None, str]]:
    """(modality TAG or None, answer text) per ground truth."""

def is_invalid_answers(answers: Sequence[str], mode: str = "strict") -> bytearray:
    """0/1 per answer (1 = cannot be scored for accuracy), one byte each."""

def analyze_batch(
    responses: Sequence[str], ground_truths: Sequence[str] | None = None, mode: str = "strict"
) -> tuple[bytearray, bytearray, list[str], bytearray]:
    """(format float64, modality float64, answers, invalid u8) in one crossing."""

@overload
def group_advantages_raw(
    rewards: bytes,
    group_size: int | None = None,
    group_ids: bytes | None = None,
    scale: str = "group",
    eps: float = 1e-6,
    with_stats: Literal[False] = False,
) -> bytearray:
    """Advantages from float64 rewards (and int64 group ids), as float64."""

@overload
def group_advantages_raw(
    rewards: bytes,
    group_size: int | None,
    group_ids: bytes | None,
    scale: str,
    eps: float,
    with_stats: Literal[True],
) -> tuple[bytearray, bytearray, bytearray, bytearray, bytearray, bytearray]:
    """Advantages plus per-sample group index and per-group mean, std, valid count (all float64) and
    degenerate flags (u8)."""
