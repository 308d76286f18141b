"""Per-step training monitors logged beside the reward components: completion length, share of degenerate
groups, judge-vs-embedding disagreement, and identical answers repeated across different prompts (a collapse
or reward-hacking sign)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["COMPONENTS", "completion_text", "component_means", "monitor_values"]

# Keys of the composite reward's per-completion score dicts, in the order they are logged.
COMPONENTS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")


def completion_text(c: Any) -> str:
    """A TRL completion (plain text, or a list of chat messages) as text."""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for m in c:
            content = m.get("content", "") if isinstance(m, dict) else m
            if isinstance(content, list):
                content = "".join(p.get("text", "") or "" for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
        return "".join(parts)
    return str(c)


def _mean(values: Sequence[float | None]) -> float:
    """Mean over the scorable values; NaN when none is (unscorable never counts as 0)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def component_means(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {k: _mean([s.get(k) for s in scores]) for k in COMPONENTS}


def monitor_values(
    scores: Sequence[dict[str, Any]],
    answers: Sequence[str],
    prompt_keys: Sequence[Any],
    completion_lengths: Sequence[int],
    degenerate_fraction: float,
) -> dict[str, float]:
    """The four monitors for one generated batch."""
    both = [
        (s.get("accuracy_llm"), s.get("accuracy_embed"))
        for s in scores
        if s.get("accuracy_llm") is not None and s.get("accuracy_embed") is not None
    ]
    both = [(a, b) for a, b in both if not (math.isnan(float(a)) or math.isnan(float(b)))]
    disagreement = float(np.mean([float(a) != float(b) for a, b in both])) if both else math.nan
    # An answer counts as repeated when the same (normalised, non-empty) text was given for another prompt.
    by_answer: dict[str, set[Any]] = {}
    for ans, key in zip(answers, prompt_keys):
        norm = " ".join(ans.lower().split())
        if norm:
            by_answer.setdefault(norm, set()).add(key)
    non_empty = [" ".join(a.lower().split()) for a in answers]
    non_empty = [a for a in non_empty if a]
    repeated = float(np.mean([len(by_answer[a]) > 1 for a in non_empty])) if non_empty else 0.0
    return {
        "completion_length": float(np.mean(completion_lengths)) if len(completion_lengths) else math.nan,
        "degenerate_groups": float(degenerate_fraction),
        "judge_embed_disagreement": disagreement,
        "repeated_answers": repeated,
    }
