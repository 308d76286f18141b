"""Format, modality and answer parsing of whole batches of completions, backed by the Rust core.

``mode="strict"`` is this project's definition; ``mode="reference"`` reproduces the MediX-R1 authors' released
reward code bit for bit. See the README's "Reward semantics" section for both.

Two things are settled here rather than in Rust, so that they match the Python the authors ran:

- reference-mode modality upper-cases with CPython's ``str.upper()`` (its Unicode tables differ from Rust's
  in dozens of code points, and from one CPython version to the next), for every row that is not pure ASCII;
- a string with a lone surrogate (valid in Python, not in Rust) affects its own row only: each distinct lone
  surrogate is stood in for by a private-use character absent from that string, which no rule of either mode
  treats specially (not whitespace, not a delimiter, not a period, its own upper case), and put back in the
  extracted answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from medix_r1 import _native
from medix_r1.errors import MedixInputError

__all__ = [
    "StructureScores",
    "analyze",
    "extract_answers",
    "format_rewards",
    "has_lone_surrogate",
    "is_invalid_answers",
    "modality_rewards",
    "parse_ground_truths",
]

_SURROGATE = re.compile("[\ud800-\udfff]")
_DELIMITER = re.compile("([<>/])")
_STAND_IN_FIRST = 0xF0000  # Supplementary Private Use Area-A: 65,534 code points, upper() leaves them alone


def has_lone_surrogate(s: str) -> bool:
    """True when ``s`` holds a lone surrogate (it cannot be encoded as UTF-8, nor reach Rust or a model)."""
    return not s.isascii() and _SURROGATE.search(s) is not None


def _stand_in(s: str) -> tuple[str, dict[int, str] | None]:
    """``s`` with each distinct lone surrogate replaced by a private-use character it does not contain,
    and the map back (None when ``s`` has none)."""
    if not has_lone_surrogate(s):
        return s, None
    present = set(s)
    forward: dict[int, str] = {}
    back: dict[int, str] = {}
    cp = _STAND_IN_FIRST
    for sur in sorted(set(_SURROGATE.findall(s))):
        while chr(cp) in present:
            cp += 1
        forward[ord(sur)] = chr(cp)
        back[cp] = sur
        cp += 1
    return s.translate(forward), back


def _stand_ins(texts: Sequence[str] | None) -> tuple[Sequence[str] | None, list[dict[int, str] | None]]:
    if texts is None:
        return None, []
    pairs = [_stand_in(t) if isinstance(t, str) else (t, None) for t in texts]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _native_call(fn, *texts: Sequence[str] | None, mode: str | None = None):
    """``fn(*texts[, mode])``; on a lone surrogate, again with stand-ins. Returns the result and the maps back
    for the first text argument (empty when no stand-in was needed)."""
    extra = () if mode is None else (mode,)
    try:
        return fn(*texts, *extra), []
    except MedixInputError:
        if not any(isinstance(t, str) and has_lone_surrogate(t) for seq in texts if seq for t in seq):
            raise
    converted = [_stand_ins(seq) for seq in texts]
    return fn(*(c[0] for c in converted), *extra), converted[0][1]


def _restore(strings: list[str], backs: list[dict[int, str] | None]) -> list[str]:
    if not backs:
        return strings
    return [s if b is None else s.translate(b) for s, b in zip(strings, backs)]


def _collapse(s: str) -> str:
    """The authors' pre-processing, linear time: whitespace around every ``<``, ``>`` and ``/`` removed."""
    parts = _DELIMITER.split(s)
    last = len(parts) - 1
    out = []
    for i in range(0, len(parts), 2):
        t = parts[i]
        if i > 0:
            t = t.lstrip()
        if i < last:
            out.append(t.rstrip())
            out.append(parts[i + 1])
        else:
            out.append(t)
    return "".join(out)


def _reference_modality(response: str, ground_truth: str) -> float:
    collapsed = _collapse(response)
    idx = collapsed.find("<thinking>")
    if idx == -1:
        return 0.0
    expected = ground_truth.partition(">")[0] + ">"
    return 1.0 if collapsed[:idx].strip().upper() == expected.upper() else 0.0


def _cpython_modality(responses: Sequence[str], ground_truths: Sequence[str], mod: np.ndarray) -> np.ndarray:
    """Reference modality redone with ``str.upper()`` where upper-casing could differ from Rust's."""
    redo = [
        i
        for i, (r, g) in enumerate(zip(responses, ground_truths))
        if not (str(r).isascii() and str(g).isascii())
    ]
    if redo:
        mod = np.array(mod, dtype=np.float64)
        for i in redo:
            mod[i] = _reference_modality(str(responses[i]), str(ground_truths[i]))
    return mod


def format_rewards(responses: Sequence[str], mode: str = "strict") -> np.ndarray:
    """1.0 where a response has the ``<TAG><think>..</think><answer>..</answer>`` shape, else 0.0."""
    raw, _ = _native_call(_native.format_rewards, responses, mode=mode)
    return np.frombuffer(raw, dtype=np.float64)


def modality_rewards(
    responses: Sequence[str], ground_truths: Sequence[str], mode: str = "strict"
) -> np.ndarray:
    """1.0 where the response opens with the ground truth's modality tag, 0.0 where not, NaN where the ground
    truth has no tag (strict mode: not applicable)."""
    raw, _ = _native_call(_native.modality_rewards, responses, ground_truths, mode=mode)
    mod = np.frombuffer(raw, dtype=np.float64)
    return _cpython_modality(responses, ground_truths, mod) if mode == "reference" else mod


def extract_answers(responses: Sequence[str], mode: str = "strict") -> list[str]:
    """The final answer of each response ("" in strict mode when there is no single answer block)."""
    answers, backs = _native_call(_native.extract_answers, responses, mode=mode)
    return _restore(answers, backs)


def parse_ground_truths(ground_truths: Sequence[str]) -> list[tuple[str | None, str]]:
    """``"<TAG> text"`` -> ``(TAG, text)``; without a known leading tag -> ``(None, text)``; text cleaned."""
    parsed, backs = _native_call(_native.parse_ground_truths, ground_truths)
    if not backs:
        return parsed
    return [(tag, text if b is None else text.translate(b)) for (tag, text), b in zip(parsed, backs)]


def is_invalid_answers(answers: Sequence[str], mode: str = "strict") -> np.ndarray:
    """True where an answer cannot be scored for accuracy (strict: blank; reference: the authors' rule)."""
    raw, _ = _native_call(_native.is_invalid_answers, answers, mode=mode)
    return np.frombuffer(raw, dtype=np.bool_)


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
    (fmt, mod, answers, invalid), backs = _native_call(
        _native.analyze_batch, responses, ground_truths, mode=mode
    )
    modality = np.frombuffer(mod, dtype=np.float64)
    if mode == "reference" and ground_truths is not None:
        modality = _cpython_modality(responses, ground_truths, modality)
    return StructureScores(
        np.frombuffer(fmt, dtype=np.float64),
        modality,
        _restore(answers, backs),
        np.frombuffer(invalid, dtype=np.bool_),
    )
