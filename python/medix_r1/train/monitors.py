"""Per-step training monitors logged beside the reward components: completion length, share of degenerate
groups, judge-vs-embedding disagreement, and identical answers repeated across different prompts (a collapse
or reward-hacking sign).

Also the per-completion component table the trainer logs from: which reward function supplies which
component (one composite reward, or TRL's split rewards), and a fixed-width numeric packing of it so that
several processes can gather their rows with one tensor all-gather instead of pickled dicts. The columns
come from the component registry (:mod:`medix_r1.rewards.components`) plus the reward's custom components.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medix_r1.rewards.composite import COMPONENTS, CompositeReward, completion_texts

__all__ = [
    "COMPLETIONS_FILE",
    "COMPONENTS",
    "ROW_WIDTH",
    "completion_text",
    "component_matrix",
    "component_means",
    "ground_truths",
    "monitor_values",
    "pack_rows",
    "reward_columns",
    "reward_mode",
    "unpack_rows",
]

COMPLETIONS_FILE = "completions.jsonl"  # train.log_completions: sampled completions with their rewards

# One packed row: the components, the completion length, a hash of the normalised answer, a hash of the
# prompt. ROW_WIDTH is the width with the built-in components only; custom components widen it.
ROW_WIDTH = len(COMPONENTS) + 3


def completion_text(c: Any) -> str:
    """A TRL completion (plain text, or a list of chat messages) as the text the reward scores."""
    return completion_texts([c])[0]


def ground_truths(inputs: Sequence[dict[str, Any]]) -> list[str]:
    """The ground-truth column of TRL input rows, read in the order the reward reads it."""
    out = []
    for x in inputs:
        g = x.get("ground_truth")
        if g is None:
            g = x.get("solution")
        out.append("" if g is None else str(g))
    return out


def _mean(values: Sequence[float | None]) -> float:
    """Mean over the scorable values; NaN when none is (unscorable never counts as 0)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def component_means(
    scores: Sequence[dict[str, Any]], columns: Sequence[str] = COMPONENTS
) -> dict[str, float]:
    return {k: _mean([s.get(k) for s in scores]) for k in columns}


def reward_columns(reward_funcs: Sequence[Any]) -> tuple[str, ...]:
    """The logged reward columns: the built-in ones, then the custom components of the reward functions
    (a composite's ``extra``, or TRL split custom rewards), each once."""
    out = list(COMPONENTS)
    for f in reward_funcs:
        names = [x.name for x in getattr(f, "extras", ())]
        comp = _split_component(f)
        if comp is not None:
            names.append(comp)
        out += [k for k in names if k not in out]
    return tuple(out)


def reward_mode(reward_funcs: Sequence[Any]) -> str:
    """The answer-parsing mode ("strict" or "reference") the reward functions were configured with."""
    for f in reward_funcs:
        for holder in (f, getattr(f, "config", None), getattr(getattr(f, "reward", None), "config", None)):
            mode = getattr(holder, "mode", None)
            if mode in ("strict", "reference"):
                return str(mode)
    return "strict"


def _split_component(f: Any) -> str | None:
    """The component a split TRL reward function returns (its ``component``), None for anything else."""
    from medix_r1.rewards.trl import SplitReward

    return f.component if isinstance(f, SplitReward) else None


def component_matrix(
    reward_funcs: Sequence[Any],
    texts: Sequence[str],
    truths: Sequence[str],
    rewards_per_func: np.ndarray,
    overall: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """The components of each completion (rows, columns in :func:`reward_columns` order, NaN where not
    applicable or unscorable) and its parsed answer, in the reward's own mode.

    ``rewards_per_func`` holds the same rows (one column per reward function), ``overall`` the trainer's
    weighted reward. A single composite reward supplies every component from its ``last_scores``; split
    rewards (format, judge, embedding, modality as separate functions) supply their own column each, and
    ``overall`` is then the weighted sum the trainer learns from. What no function supplies (format and
    modality without a format/modality reward) is read from the text.
    """
    from medix_r1.rewards.structure import analyze

    n = len(texts)
    rpf = np.asarray(rewards_per_func, dtype=np.float64).reshape(n, len(reward_funcs))
    st = analyze(list(texts), list(truths), reward_mode(reward_funcs))
    columns = reward_columns(reward_funcs)
    col = {k: i for i, k in enumerate(columns)}
    out = np.full((n, len(columns)), np.nan)
    out[:, col["overall"]] = np.asarray(overall, dtype=np.float64)
    out[:, col["format"]] = st.format
    out[:, col["modality"]] = st.modality
    for j, f in enumerate(reward_funcs):
        last = getattr(f, "last_scores", None)
        if isinstance(f, CompositeReward) and isinstance(last, list) and len(last) == n:
            keys = f.columns if len(reward_funcs) == 1 else f.columns[1:]
            for k in keys:
                out[:, col[k]] = [np.nan if s.get(k) is None else float(s[k]) for s in last]
        comp = _split_component(f)
        if comp is not None:
            out[:, col[comp]] = rpf[:, j]
    return out, list(st.answers)


def _normal(answer: str) -> str:
    return " ".join(answer.lower().split())


def _hash48(text: str) -> float:
    """A 48-bit hash of a non-empty text as a float (exact in float64), 0.0 for the empty text."""
    if not text:
        return 0.0
    return float(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big") or 1)


def pack_rows(
    components: np.ndarray, lengths: Sequence[int], answers: Sequence[str], prompt_keys: Sequence[str]
) -> np.ndarray:
    """One float64 row per completion (one column per component, then 3) with everything the monitors
    need."""
    n = len(lengths)
    components = np.asarray(components, dtype=np.float64).reshape(n, -1)
    c = components.shape[1]
    out = np.empty((n, c + 3), dtype=np.float64)
    out[:, :c] = components
    out[:, c] = np.asarray(lengths, dtype=np.float64)
    out[:, c + 1] = [_hash48(_normal(a)) for a in answers]
    out[:, c + 2] = [_hash48(str(k)) for k in prompt_keys]
    return out


def unpack_rows(
    rows: np.ndarray, columns: Sequence[str] = COMPONENTS
) -> tuple[list[dict[str, Any]], list[str], list[str], list[int]]:
    """(score dicts, answers, prompt keys, completion lengths) of packed rows whose components are
    ``columns``; answers and keys come back as hash strings, equal where the originals were equal ("" for
    an empty answer)."""
    c = len(columns)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, c + 3)
    scores = [
        {k: (None if math.isnan(float(r[i])) else float(r[i])) for i, k in enumerate(columns)} for r in rows
    ]
    a_col, k_col = c + 1, c + 2
    answers = ["" if r[a_col] == 0 else f"{int(r[a_col]):012x}" for r in rows]
    keys = [f"{int(r[k_col]):012x}" for r in rows]
    lengths = [int(r[c]) for r in rows]
    return scores, answers, keys, lengths


def monitor_values(
    scores: Sequence[dict[str, Any]],
    answers: Sequence[str],
    prompt_keys: Sequence[Any],
    completion_lengths: Sequence[int],
    degenerate_fraction: float,
) -> dict[str, float]:
    """The four monitors for one generated batch."""
    pairs: list[tuple[float, float]] = []
    for s in scores:
        a, b = s.get("accuracy_llm"), s.get("accuracy_embed")
        if a is None or b is None:
            continue
        fa, fb = float(a), float(b)
        if not (math.isnan(fa) or math.isnan(fb)):
            pairs.append((fa, fb))
    disagreement = float(np.mean([a != b for a, b in pairs])) if pairs else math.nan
    # An answer counts as repeated when the same (normalised, non-empty) text was given for another prompt.
    by_answer: dict[str, set[Any]] = {}
    for ans, key in zip(answers, prompt_keys):
        norm = _normal(ans)
        if norm:
            by_answer.setdefault(norm, set()).add(key)
    non_empty = [_normal(a) for a in answers]
    non_empty = [a for a in non_empty if a]
    repeated = float(np.mean([len(by_answer[a]) > 1 for a in non_empty])) if non_empty else 0.0
    return {
        "completion_length": float(np.mean(completion_lengths)) if len(completion_lengths) else math.nan,
        "degenerate_groups": float(degenerate_fraction),
        "judge_embed_disagreement": disagreement,
        "repeated_answers": repeated,
    }
