"""Embedding backends: fastembed over an exported ONNX directory (default, CPU-friendly) and
sentence-transformers (optional, for a GPU). Both return L2-normalised float32 rows."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from medix_r1.embed.config import EmbedConfig
from medix_r1.embed.export import MANIFEST, read_manifest
from medix_r1.errors import DataError, MissingModelError, check_model_path

__all__ = [
    "MAX_EMBED_CHARS",
    "Embedder",
    "FastEmbedEmbedder",
    "SentenceTransformerEmbedder",
    "cap_text",
    "make_embedder",
]

# Characters of one text an embedder is given. The tokenizer would otherwise allocate for the whole text
# before truncating to the model's 256-512 tokens (a 20 MB answer took 3.2 GB; 200 MB aborted the process);
# 16 Ki characters is over 30 per token of a 512-token model, so only text that is mostly whitespace can
# reach the model's token limit later than this cap. Callers record which rows were cut.
MAX_EMBED_CHARS = 16_384


def cap_text(text: str, limit: int = MAX_EMBED_CHARS) -> str:
    """``text`` cut to ``limit`` characters (the embedder never sees more)."""
    return text if len(text) <= limit else text[:limit]


_HOW_ONNX = (
    "Export a local Hugging Face checkpoint first: `medix embed export --from CHECKPOINT_DIR --to ONNX_DIR`, "
    "then pass ONNX_DIR"
)


def _reexport(d: Path) -> str:
    return f"re-export it: `medix embed export --from CHECKPOINT_DIR --to {d}`"


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (they derive from Exception only, so they are named here)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    names = (
        "Fail InvalidArgument InvalidGraph InvalidProtobuf NoModel NoSuchFile NotImplemented RuntimeException"
    )
    return tuple(getattr(ort_state, n) for n in names.split() if hasattr(ort_state, n))


def _bad_onnx(path: Path, what: str, e: BaseException) -> DataError:
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return DataError(
        f"{path} {what} ({detail}); {_reexport(path.parent)}",
        path=path,
    )


def _check_tokenizer_files(d: Path) -> None:
    """fastembed needs tokenizer.json and tokenizer_config.json and would fail on them with a traceback."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = check_model_path(d / name, f"embedding model ({name})", _HOW_ONNX)
        try:
            json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise DataError(
                f"{path}: not valid JSON ({e}); {_reexport(d)}",
                path=path,
            ) from None


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class FastEmbedEmbedder:
    """fastembed's ONNX pipeline over a directory written by :func:`medix_r1.embed.export_onnx`.

    The directory is registered as a fastembed custom model (pooling from the manifest, normalisation on) and
    loaded from ``specific_model_path`` with ``local_files_only``: nothing is downloaded, ever.
    """

    def __init__(self, model_dir: str | Path, *, batch_size: int = 64, threads: int | None = None) -> None:
        d = check_model_path(model_dir, "embedding model (ONNX directory)", _HOW_ONNX, directory=True)
        if not (d / MANIFEST).is_file():
            hint = (
                " It looks like a Hugging Face checkpoint, not an export."
                if (d / "config.json").is_file() and not (d / "model.onnx").is_file()
                else ""
            )
            raise MissingModelError(f"embedding model: no {MANIFEST} in {d}.{hint} {_HOW_ONNX}.")
        manifest = read_manifest(d)
        model_file = manifest.get("model_file", "model.onnx")
        check_model_path(d / model_file, "embedding model (ONNX file)", _HOW_ONNX)
        _check_tokenizer_files(d)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only below already
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
        from fastembed.text.custom_text_embedding import CustomTextEmbedding

        pooling = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS}[manifest.get("pooling", "mean")]
        # One registry name per (directory, manifest): fastembed's registry is class-level and refuses
        # duplicates, and a re-export with other settings must not reuse the old entry.
        key = hashlib.sha1(f"{d}\0{sorted(manifest.items())}".encode()).hexdigest()[:16]
        registered = f"medix-local/{d.name}-{key}"
        if not any(m.model == registered for m in CustomTextEmbedding.SUPPORTED_MODELS):
            TextEmbedding.add_custom_model(
                model=registered,
                pooling=pooling,
                normalization=True,
                sources=ModelSource(hf=registered),  # never used: specific_model_path wins
                dim=int(manifest["dim"]),
                model_file=model_file,
                description=f"medix export of {manifest.get('source', d)}",
            )
        try:
            self._model = TextEmbedding(
                model_name=registered,
                cache_dir=str(d),
                threads=threads,
                specific_model_path=str(d),
                local_files_only=True,
                cuda=False,
            )
        except _ort_errors() as e:
            raise _bad_onnx(d / model_file, "is not a valid ONNX model", e) from None
        self.model_dir = d
        self.model_file = d / model_file
        self.dim = int(manifest["dim"])
        self.batch_size = int(batch_size)
        self.name = f"fastembed:{d.name}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One (n, dim) float32 array of unit rows, in input order, batched over the whole input; each text
        cut to :data:`MAX_EMBED_CHARS` first."""
        texts = [cap_text(str(t)) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            return _l2(np.stack(list(self._model.embed(texts, batch_size=self.batch_size))))
        except (*_ort_errors(), ValueError) as e:  # type: ignore[misc]
            # A graph that loads but does not take what its manifest says (another model's export);
            # onnxruntime's Python layer checks the feed with ValueError, its core with its own types.
            raise _bad_onnx(self.model_file, "does not run as its manifest describes", e) from None


class SentenceTransformerEmbedder:
    """sentence-transformers on a local Hugging Face checkpoint (optional; install sentence-transformers)."""

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 64) -> None:
        d = check_model_path(
            model_dir,
            "embedding model (sentence-transformers checkpoint)",
            "Give a local Hugging Face sentence-embedding checkpoint directory",
            directory=True,
        )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(
                "the sentence-transformers embedding backend needs the `sentence-transformers` package "
                "(`pip install sentence-transformers`); or use the default fastembed backend on an "
                f"exported directory (`medix embed export`). ({e})"
            ) from e
        self._model = SentenceTransformer(str(d), device=device, local_files_only=True)
        self.model_dir = d
        self.batch_size = int(batch_size)
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        self.name = f"sentence-transformers:{d.name}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [cap_text(str(t)) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return _l2(out)


def make_embedder(cfg: EmbedConfig) -> FastEmbedEmbedder | SentenceTransformerEmbedder:
    """The embedder ``cfg`` describes (``cfg.model`` must be set)."""
    if cfg.model is None:
        raise ValueError("no embedding model configured (EmbedConfig.model is None)")
    if cfg.backend == "sentence-transformers":
        return SentenceTransformerEmbedder(cfg.model, device=cfg.device, batch_size=cfg.batch_size)
    return FastEmbedEmbedder(cfg.model, batch_size=cfg.batch_size, threads=cfg.threads)
