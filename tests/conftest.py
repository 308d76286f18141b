"""Shared fixtures: paths of the real test models (see DEVELOPERS.md) and a small bundle of fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/oracle.py and helpers

MODELS = Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models"))
HOW = "run `scripts/test-models.sh` (or set MEDIX_TEST_MODELS to where it put them)"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test model missing: {path}; {HOW}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF: a tiny real llama.cpp model."""
    return _require(MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def minilm_hf_dir() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face checkpoint (safetensors)."""
    return _require(MODELS / "all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def minilm_onnx_dir(minilm_hf_dir: Path) -> Path:
    """all-MiniLM-L6-v2 exported to ONNX for fastembed, once per models directory."""
    from medix_r1.embed.export import export_onnx

    out = MODELS / "all-MiniLM-L6-v2-onnx"
    if not (out / "model.onnx").exists():
        export_onnx(minilm_hf_dir, out)
    return out
