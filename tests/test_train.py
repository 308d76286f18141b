"""A few real training steps on CPU (SmolLM2-135M policy converted from the test GGUF) for every algorithm,
DAPO's dynamic sampling, outputs, and resume after a SIGKILL. Tiny settings: group 2, one prompt per step,
16-token completions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from medix_r1.train.data import demo_dataset_path

    p = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    p.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:8]))
    return p


@pytest.fixture(scope="module")
def reward_overrides(gguf_path, minilm_onnx_dir):
    """The real composite reward: the in-process GGUF judge and the ONNX MiniLM embedder."""
    return [
        f"--reward.judge.model={gguf_path}",
        "--reward.judge.n_threads=2",
        f"--reward.embed.model={minilm_onnx_dir}",
    ]


def _cfg(gguf_path, data, out, algo, extra=()):
    from medix_r1.train.config import load_config

    return load_config(
        None,
        [
            f"--model.path={gguf_path}",
            f"--data.path={data}",
            "--data.few_shot=2",
            f"--algo.name={algo}",
            "--algo.num_generations=2",
            "--algo.max_completion_length=16",
            f"--train.output_dir={out}",
            "--train.max_steps=2",
            "--train.prompts_per_step=1",
            "--train.learning_rate=5e-4",
            "--train.threads=2",
            "--train.device=cpu",
            "--train.save_steps=1",
            *extra,
        ],
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("algo", ["grpo", "dapo", "gspo", "dr_grpo"])
def test_algorithm_trains_and_leaves_outputs(algo, gguf_path, tiny_data, reward_overrides, tmp_path):
    import torch
    from medix_r1.train.trainer import run_training

    torch.set_num_threads(2)
    extra = [*reward_overrides, "--algo.dynamic_max_rounds=1"] if algo == "dapo" else reward_overrides
    cfg = _cfg(gguf_path, tiny_data, tmp_path / algo, algo, extra)
    res = run_training(cfg, echo=None)
    assert res["steps"] == 2
    assert (res["adapter"] / "adapter_config.json").is_file()
    assert res["chart"] is not None and res["chart"].stat().st_size > 1000
    rows = _rows(res["metrics"])
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in (
            "reward/overall",
            "reward/format",
            "reward/accuracy_llm",
            "reward/accuracy_embed",
            "reward/modality",
        ):
            assert k in r
        for k in ("completion_length", "degenerate_groups", "judge_embed_disagreement", "repeated_answers"):
            assert f"monitor/{k}" in r
        assert 0.0 <= r["monitor/degenerate_groups"] <= 1.0
        if algo == "dapo":
            assert "dynamic/kept_groups" in r and r["dynamic/rounds"] <= 1
    assert any(r["reward/accuracy_embed"] is not None for r in rows)


def test_advantages_come_from_rust(monkeypatch, gguf_path, tiny_data, tmp_path):
    """The trainer's advantages are the Rust group advantages (NaN-aware, degenerate groups zero)."""
    import medix_r1.train.grpo as grpo
    import numpy as np

    calls = []
    real = grpo.group_stats

    def spy(rewards, *a, **k):
        st = real(rewards, *a, **k)
        calls.append((np.asarray(rewards).copy(), st))
        return st

    monkeypatch.setattr(grpo, "group_stats", spy)
    from medix_r1.train.trainer import run_training

    cfg = _cfg(gguf_path, tiny_data, tmp_path / "spy", "dr_grpo", ["--train.max_steps=1"])
    run_training(cfg, echo=None)
    assert calls
    rewards, st = calls[0]
    assert len(rewards) == 2 and st.advantages.shape == (2,)
    if st.degenerate[0]:
        assert np.all(st.advantages == 0)


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(2)
from medix_r1.train.config import load_config
from medix_r1.train.trainer import run_training
cfg = load_config(None, sys.argv[2:])
run_training(cfg, resume=sys.argv[1] == "resume", echo=None)
"""


def test_resume_after_sigkill(gguf_path, tiny_data, tmp_path):
    out = tmp_path / "run"
    args = [
        f"--model.path={gguf_path}",
        f"--data.path={tiny_data}",
        "--algo.num_generations=2",
        "--algo.max_completion_length=16",
        f"--train.output_dir={out}",
        "--train.max_steps=4",
        "--train.prompts_per_step=1",
        "--train.save_steps=1",
        "--train.save_total_limit=10",
        "--train.threads=2",
        "--train.device=cpu",
        "--algo.beta=0.0",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, "fresh", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 420
    try:
        while not (out / "checkpoint-1" / "trainer_state.json").exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    from medix_r1.train.trainer import last_checkpoint

    ck = last_checkpoint(out)
    assert ck is not None
    done_before = int(ck.name.split("-")[1])
    assert done_before < 4
    with pytest.raises(Exception, match="--resume"):  # a second fresh run refuses to clobber the checkpoints
        from medix_r1.train.config import load_config
        from medix_r1.train.trainer import run_training

        run_training(load_config(None, args), echo=None)
    r = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, "resume", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [row["step"] for row in _rows(out / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]  # no step lost or repeated past the checkpoint
    assert (out / "adapter" / "adapter_config.json").is_file()
