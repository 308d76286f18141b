"""End to end with the real tiny GGUF (SmolLM2-135M) as both the evaluated model and the judge: `medix eval
run` on the bundled demo, the stored three-round conversations, resuming after a rerun and after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from medix_r1.cli import main
from medix_r1.eval.grading import REEVALUATE

pytestmark = pytest.mark.slow

SMALL = ["--n-ctx", "1024", "--threads", "2", "--judge-threads", "2", "--judge-ctx", "2048", "--no-progress"]


def _rows(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_run_demo_end_to_end_and_resume(gguf_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "run", "--model", str(gguf_path), "--judge", str(gguf_path), "--tasks", "demo",
            "--out", str(out), "--limit", "4", "--max-new-tokens", "24", *SMALL]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "demo" in table and "average over tasks" in table
    gens = _rows(out / "demo" / "generations.jsonl")
    judg = _rows(out / "demo" / "judgements.jsonl")
    assert [g["id"] for g in gens] == ["demo-01", "demo-02", "demo-03", "demo-04"]
    assert all(g["response"] and g["model"] == gguf_path.name for g in gens)
    assert [j["id"] for j in judg] == [g["id"] for g in gens]
    for j in judg:
        # The constrained in-process judge always yields a score: three votes, majority vote.
        assert j["error"] is None and len(j["votes"]) == 3 and j["score"] == int(sum(j["votes"]) >= 2)
        roles = [m["role"] for m in j["conversation"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
        assert [m["content"] for m in j["conversation"] if m["content"] == REEVALUATE] == [REEVALUATE] * 2
        assert all(json.loads(m["content"])["score"] in (0, 1) for m in j["conversation"][2::2])
    for name in ("scores.md", "scores.csv", "scores.png"):
        assert (out / name).stat().st_size > 0
    acc = 100 * sum(j["score"] for j in judg) / len(judg)
    assert f"| demo | correct/total | {acc:.1f} | 4 | 0 | 0 |" in (out / "scores.md").read_text()

    # Rerunning on the same --out does no work already done.
    before = {p: p.read_bytes() for p in (out / "demo").glob("*.jsonl")}
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "0 answers written (4 already there)" in err and "0 judged (4 already there)" in err
    assert {p: p.read_bytes() for p in (out / "demo").glob("*.jsonl")} == before

    # A different judge on the same --out is refused rather than mixed in.
    other = tmp_path / "other.gguf"
    os.symlink(gguf_path, other)
    rc = main(["eval", "judge", "--judge", str(other), "--out", str(out), "--no-progress"])
    assert rc == 2 and "other settings" in capsys.readouterr().err


def test_generate_resumes_after_kill(gguf_path: Path, tmp_path: Path):
    out = tmp_path / "gen"
    path = out / "demo" / "generations.jsonl"
    cmd = [sys.executable, "-m", "medix_r1.cli", "eval", "generate", "--model", str(gguf_path),
           "--tasks", "demo", "--out", str(out), "--limit", "8", "--max-new-tokens", "32",
           "--n-ctx", "512", "--threads", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    first = [json.loads(x)["id"] for x in path.read_text().splitlines() if x.endswith("}")]
    assert first, proc.stderr.read().decode() if proc.stderr else ""
    if killed:
        assert len(first) < 8
    rc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr
    ids = [r["id"] for r in _rows(path)]
    assert len(ids) == len(set(ids)) == 8  # nothing generated twice, nothing missing
    assert ids[: len(first)] == first


def test_remote_judge_free_text_against_judge_serve(gguf_path: Path, tmp_path: Path, capsys):
    """The tiny model behind `medix judge serve`, unconstrained: whatever it writes is either a valid score
    or, after the bounded retries, an error with score null and the raw reply; never a silent 0."""
    from medix_r1.llm.server import ChatServer

    out = tmp_path / "remote"
    argv = ["eval", "generate", "--model", str(gguf_path), "--tasks", "demo", "--out", str(out),
            "--limit", "3", "--max-new-tokens", "16", "--n-ctx", "512", "--threads", "2",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    with ChatServer(gguf_path, port=0, n_ctx=2048, n_threads=2).start() as srv:
        rc = main(["eval", "judge", "--judge-url", srv.url, "--judge-name", srv.model_name, "--out", str(out),
                   "--judge-max-tokens", "12", "--parse-retries", "1", "--judge-concurrency", "3",
                   "--no-progress"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    rows = _rows(out / "demo" / "judgements.jsonl")
    assert len(rows) == 3
    for r in rows:
        assert r["judge"] == srv.model_name
        if r["error"] is None:
            assert r["score"] in (0, 1) and len(r["votes"]) == 3
        else:
            assert r["score"] is None and "unparseable" in r["error"] and r["rounds"][-1]["reply"] is not None
            assert r["rounds"][-1]["attempts"] == 2
    n_err = sum(r["error"] is not None for r in rows)
    if n_err:
        assert f"{n_err} samples could not be judged" in err
    assert main(["eval", "score", "--out", str(out)]) == 0
    assert f"| {n_err} | 0 |" in (out / "scores.md").read_text()


def test_transformers_checkpoint_with_lora_adapter(gguf_path: Path, tmp_path: Path, capsys):
    """A local transformers checkpoint (the GGUF converted once, as in training) plus a LoRA adapter."""
    import torch
    from medix_r1.train.convert import gguf_to_checkpoint
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    ckpt = gguf_to_checkpoint(gguf_path)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(ckpt))
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(str(tmp_path / "adapter"))
    out = tmp_path / "hf"
    argv = ["eval", "generate", "--model", str(ckpt), "--adapter", str(tmp_path / "adapter"), "--tasks",
            "demo", "--out", str(out), "--limit", "2", "--max-new-tokens", "8", "--threads", "2",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out / "demo" / "generations.jsonl")
    assert [r["id"] for r in rows] == ["demo-01", "demo-02"]
    assert all(r["response"].strip() for r in rows)
    assert rows[0]["model"] == f"{ckpt.name}+adapter"
    # A text-only checkpoint cannot see the demo_vlm images.
    rc = main(
        ["eval", "generate", "--model", str(ckpt), "--tasks", "demo_vlm", "--out", str(out), "--no-progress"]
    )
    assert rc == 2 and "text-only checkpoint" in capsys.readouterr().err
