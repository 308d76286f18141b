"""Embedding accuracy: cosine similarity of answer and ground-truth embeddings, thresholded (MediX-R1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medix_r1.embed.backends import MAX_EMBED_CHARS, Embedder, cap_text

__all__ = ["MAX_EMBED_CHARS", "embedding_accuracy", "pair_cosines", "was_cut"]


def was_cut(*texts: str) -> bool:
    """True when the embedder sees only a prefix of one of ``texts`` (longer than MAX_EMBED_CHARS)."""
    return any(len(t) > MAX_EMBED_CHARS for t in texts)


def pair_cosines(embedder: Embedder, answers: Sequence[str], ground_truths: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each (answer, ground truth) pair, embedding every distinct text once."""
    if len(answers) != len(ground_truths):
        raise ValueError(f"{len(answers)} answers but {len(ground_truths)} ground truths")
    index: dict[str, int] = {}  # texts as the embedder gets them: cut to MAX_EMBED_CHARS
    a_idx = np.fromiter(
        (index.setdefault(cap_text(str(t)), len(index)) for t in answers), np.int64, len(answers)
    )
    g_idx = np.fromiter(
        (index.setdefault(cap_text(str(t)), len(index)) for t in ground_truths), np.int64, len(ground_truths)
    )
    if not index:
        return np.zeros(0, dtype=np.float64)
    vecs = np.asarray(embedder.embed(list(index)), dtype=np.float32)
    if vecs.shape[0] != len(index):
        raise RuntimeError(f"embedder returned {vecs.shape[0]} rows for {len(index)} texts")
    cos = np.einsum("ij,ij->i", vecs[a_idx], vecs[g_idx]).astype(np.float64)
    return np.clip(cos, -1.0, 1.0)


def embedding_accuracy(
    embedder: Embedder,
    answers: Sequence[str],
    ground_truths: Sequence[str],
    threshold: float = 0.8,
    soft: bool = False,
) -> np.ndarray:
    """1.0 where cosine >= ``threshold`` else 0.0 (``soft``: the cosine clipped to [0, 1]); an exact match
    scores 1.0 without being embedded, as in the authors' code. Each distinct text of the batch is embedded
    once, in one batched call."""
    if len(answers) != len(ground_truths):
        raise ValueError(f"{len(answers)} answers but {len(ground_truths)} ground truths")
    answers = [str(a) for a in answers]
    ground_truths = [str(g) for g in ground_truths]
    out = np.ones(len(answers), dtype=np.float64)
    todo = [i for i, (a, g) in enumerate(zip(answers, ground_truths)) if a != g]
    if todo:
        cos = pair_cosines(embedder, [answers[i] for i in todo], [ground_truths[i] for i in todo])
        out[todo] = np.clip(cos, 0.0, 1.0) if soft else (cos >= threshold).astype(np.float64)
    return out
