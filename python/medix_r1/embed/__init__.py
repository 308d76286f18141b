"""Sentence embedders for the embedding-accuracy reward (fastembed ONNX by default, sentence-transformers on a
GPU) and the exporter that turns a Hugging Face checkpoint into the ONNX directory fastembed loads offline.

Importing this package is cheap: fastembed, torch and sentence-transformers load when an embedder is built.
"""

from medix_r1.embed.accuracy import embedding_accuracy, pair_cosines
from medix_r1.embed.backends import (
    Embedder,
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)
from medix_r1.embed.config import BACKENDS, EmbedConfig
from medix_r1.embed.export import export_onnx, read_manifest

__all__ = [
    "BACKENDS",
    "EmbedConfig",
    "Embedder",
    "FastEmbedEmbedder",
    "SentenceTransformerEmbedder",
    "embedding_accuracy",
    "export_onnx",
    "make_embedder",
    "pair_cosines",
    "read_manifest",
]
