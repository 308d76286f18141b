"""The numbers of a validation report: AUROC, the confusion counts and rates of YES/NO verdicts, and the
best cosine threshold of an embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["auroc", "best_threshold", "rates"]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rates(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Confusion counts (tp, fn, fp, tn), accuracy, balanced accuracy and the YES rates on mismatches and
    matches of the verdicts ``pred`` against the labels ``y``; a rate without its class is None."""
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    n = tp + tn + fp + fn
    tpr = tp / (tp + fn) if tp + fn else None
    tnr = tn / (tn + fp) if tn + fp else None
    parts = [r for r in (tpr, tnr) if r is not None]
    return {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "accuracy": (tp + tn) / n if n else None,
        "balanced_accuracy": sum(parts) / len(parts) if parts else None,
        "yes_rate_on_mismatch": fp / (fp + tn) if fp + tn else None,
        "yes_rate_on_match": tpr,
    }


def best_threshold(cos: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The cut ``cos >= t`` with the best accuracy on these pairs (the lowest such t), and that accuracy."""
    candidates = np.unique(np.concatenate([cos, [np.inf]]))
    best_t, best_acc = float(candidates[0]), -1.0
    for t in candidates:
        acc = float(((cos >= t) == y).mean())
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t, best_acc
