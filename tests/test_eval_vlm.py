"""The bundled image task `demo_vlm` end to end through the transformers backend: a tiny VLM assembled offline
(SmolLM2-135M text weights, random SigLIP tower: it cannot see, it tests the plumbing) as the evaluated model
and the SmolLM2 GGUF as the judge; and the same VLM with a LoRA adapter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from medix_r1.cli import main

pytestmark = pytest.mark.slow

IDS = [f"demo_vlm-0{i}" for i in range(1, 7)]


def _rows(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_vlm(gguf_path: Path) -> Path:
    """Built once beside the test models (shared with test_train_vlm; rebuilt when its recipe changes)."""
    from support.tinyvlm import build_tiny_vlm, default_family

    return build_tiny_vlm(gguf_path, gguf_path.parent / f"tiny-vlm-{default_family()}")


def test_run_demo_vlm_with_tiny_vlm(tiny_vlm: Path, gguf_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "run", "--model", str(tiny_vlm), "--judge", str(gguf_path), "--tasks", "demo_vlm",
            "--out", str(out), "--max-new-tokens", "8", "--threads", "2", "--judge-threads", "2",
            "--judge-ctx", "2048", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "demo_vlm" in capsys.readouterr().out
    gens = _rows(out / "demo_vlm" / "generations.jsonl")
    assert [g["id"] for g in gens] == IDS
    for g in gens:
        assert g["model"] == tiny_vlm.name and g["max_new_tokens"] == 8
        assert Path(g["image"]).name in ("ct_small.png", "mr_small.png", "nm_bone_scan.png")
        assert isinstance(g["response"], str) and g["response"].strip()
    judg = _rows(out / "demo_vlm" / "judgements.jsonl")
    assert [j["id"] for j in judg] == IDS
    for j in judg:
        assert j["error"] is None and len(j["votes"]) == 3 and j["score"] == int(sum(j["votes"]) >= 2)
    for name in ("scores.md", "scores.csv", "scores.png"):
        assert (out / name).stat().st_size > 0
    acc = 100 * sum(j["score"] for j in judg) / len(judg)
    assert f"| demo_vlm | correct/total | {acc:.1f} | 6 | 0 | 0 |" in (out / "scores.md").read_text()
    with (out / "scores.csv").open() as f:
        assert any(r[1:3] == ["demo_vlm", "binary"] for r in csv.reader(f))

    # Rerunning on the same --out does no work already done.
    before = {p: p.read_bytes() for p in (out / "demo_vlm").glob("*.jsonl")}
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "0 answers written (6 already there)" in err and "0 judged (6 already there)" in err
    assert {p: p.read_bytes() for p in (out / "demo_vlm").glob("*.jsonl")} == before


def test_generate_demo_vlm_with_lora_adapter(tiny_vlm: Path, tmp_path: Path):
    """A LoRA adapter shaped like `medix train`'s for a VLM (language-model projections only) on top."""
    import torch
    from medix_r1.train.backends import peft_lora_config
    from medix_r1.train.config import load_config
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_vlm), local_files_only=True)
    lora = get_peft_model(base, peft_lora_config(load_config(None, ["--lora.r=2"]), vision=True))
    lora.save_pretrained(str(tmp_path / "adapter"))
    out = tmp_path / "gen"
    argv = ["eval", "generate", "--model", str(tiny_vlm), "--adapter", str(tmp_path / "adapter"),
            "--tasks", "demo_vlm", "--out", str(out), "--limit", "2", "--max-new-tokens", "4",
            "--threads", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out / "demo_vlm" / "generations.jsonl")
    assert [r["id"] for r in rows] == IDS[:2]
    assert all(r["model"] == f"{tiny_vlm.name}+adapter" for r in rows)
