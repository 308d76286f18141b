"""Configuration of the embedding-accuracy reward."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["BACKENDS", "EmbedConfig"]

BACKENDS = ("fastembed", "sentence-transformers")


@dataclass
class EmbedConfig:
    """Which embedding model scores answer/ground-truth similarity, and how."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "local model directory: for fastembed, one written by `medix embed export`; for "
            "sentence-transformers, the Hugging Face checkpoint itself"
        },
    )
    backend: str = field(
        default="fastembed",
        metadata={"help": "fastembed (ONNX Runtime, CPU or CUDA) or sentence-transformers (torch, GPU)"},
    )
    threshold: float = field(
        default=0.8, metadata={"help": "cosine similarity at or above which an answer counts as correct"}
    )
    soft: bool = field(
        default=False,
        metadata={"help": "reward the cosine similarity itself (clipped to [0, 1]) instead of thresholding"},
    )
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    threads: int | None = field(
        default=None, metadata={"help": "ONNX Runtime threads (fastembed); None: its default"}
    )
    device: str | None = field(
        default=None, metadata={"help": "torch device for sentence-transformers (e.g. cuda:0); None: auto"}
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"embed.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.model is not None:
            self.model = str(self.model)
            if not self.model.strip():
                raise ValueError("embed.model must be a directory path or None")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not -1 <= t <= 1:
            raise ValueError(f"embed.threshold must be a cosine in [-1, 1], got {t!r}")
        self.threshold = float(t)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"embed.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"embed.threads must be a positive integer or None, got {self.threads!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown embed option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
