"""Configuration of the embedding-accuracy reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medix_r1.config import bad_value, build, check_fields, option

__all__ = ["BACKENDS", "EmbedConfig"]

BACKENDS = ("fastembed", "sentence-transformers")


@dataclass
class EmbedConfig:
    """Which embedding model scores answer/ground-truth similarity, and how."""

    model: str | None = option(
        None,
        "local model directory: for fastembed, one written by `medix embed export`; for "
        "sentence-transformers, the Hugging Face checkpoint itself",
    )
    backend: Literal["fastembed", "sentence-transformers"] = option(
        "fastembed", "fastembed (ONNX Runtime, CPU or CUDA) or sentence-transformers (torch, GPU)"
    )
    threshold: float = option(
        0.8, "cosine similarity at or above which an answer counts as correct", ge=-1, le=1
    )
    soft: bool = option(
        False, "reward the cosine similarity itself (clipped to [0, 1]) instead of thresholding"
    )
    batch_size: int = option(64, "texts per forward pass", ge=1)
    threads: int | None = option(None, "ONNX Runtime threads (fastembed); None: its default", ge=1)
    device: str | None = option(None, "torch device for sentence-transformers (e.g. cuda:0); None: auto")

    def __post_init__(self) -> None:
        check_fields(self, "embed")
        if self.model is not None and not self.model.strip():
            raise bad_value("embed.model", self.model, "a directory path or null")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedConfig:
        cfg: EmbedConfig = build(cls, d, "embed")
        return cfg
