"""A few real training steps on CPU (SmolLM2-135M policy converted from the test GGUF) for every algorithm,
DAPO's dynamic sampling, outputs, and resume after a SIGKILL. Tiny settings: group 2, one prompt per step,
16-token completions. Also (fast) the trainer's pure parts: which reward function supplies which logged
component, answers parsed in the reward's mode, and DAPO's per-process refill plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


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


@pytest.mark.slow
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
        assert r["num_processes"] == 1
        if algo == "dapo":
            assert "dynamic/kept_groups" in r and r["dynamic/refill_rounds"] <= 1
    assert any(r["reward/accuracy_embed"] is not None for r in rows)


@pytest.mark.slow
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


@pytest.mark.slow
def test_log_completions_writes_every_nth_steps_completions(gguf_path, tiny_data, tmp_path):
    """train.log_completions=2 over 2 steps: completions.jsonl holds step 2's completions only (1 prompt x 2
    generations), each with its ground truth, reward components and advantage."""
    from medix_r1.train.trainer import run_training

    out = tmp_path / "log"
    cfg = _cfg(gguf_path, tiny_data, out, "grpo", ["--train.log_completions=2"])
    run_training(cfg, echo=None)
    rows = _rows(out / "completions.jsonl")
    assert [(r["step"], r["round"], r["process"], r["group"]) for r in rows] == [(2, 0, 0, 0), (2, 0, 0, 0)]
    for r in rows:
        assert isinstance(r["completion"], str) and r["ground_truth"].startswith("<")
        assert r["format"] in (0.0, 1.0) and "overall" in r and "accuracy_llm" in r
        assert r["advantage"] is not None
    assert sum(r["advantage"] for r in rows) == pytest.approx(0.0, abs=1e-6)


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(2)
from medix_r1.train.config import load_config
from medix_r1.train.trainer import run_training
cfg = load_config(None, sys.argv[2:])
run_training(cfg, resume=sys.argv[1] == "resume", echo=None)
"""


@pytest.mark.slow
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


# -- fast: the trainer's pure parts -------------------------------------------------------------------------

WELL_FORMED = "<X_RAY><think>opacity</think><answer>Pneumonia</answer>"


def test_split_rewards_log_each_component_from_its_own_column(gguf_path, minilm_onnx_dir):
    """With TRL's split rewards, the judge's column is accuracy_llm and the embedder's accuracy_embed; the
    judge-only composite inside LLMJudgeReward (its last_scores: format 0, overall = judge) is not logged."""
    from medix_r1.rewards.trl import EmbeddingReward, FormatReward, LLMJudgeReward
    from medix_r1.train.monitors import COMPONENTS, component_matrix

    judge = LLMJudgeReward({"model": str(gguf_path)})
    judge.reward.last_scores = [
        {"overall": 0.0, "format": 0.0, "accuracy_llm": 0.0, "accuracy_embed": None, "modality": None}
    ] * 2
    funcs = [FormatReward(), judge, EmbeddingReward({"model": str(minilm_onnx_dir)})]
    rpf = np.array([[1.0, 1.0, 0.0], [0.0, np.nan, 1.0]])
    overall = np.array([0.75, 0.3])
    comps, _ = component_matrix(funcs, [WELL_FORMED, "no tags"], ["<X_RAY> Pneumonia"] * 2, rpf, overall)
    col = {k: i for i, k in enumerate(COMPONENTS)}
    np.testing.assert_array_equal(comps[:, col["overall"]], overall)
    np.testing.assert_array_equal(comps[:, col["format"]], [1.0, 0.0])
    np.testing.assert_array_equal(comps[:, col["accuracy_llm"]], [1.0, np.nan])
    np.testing.assert_array_equal(comps[:, col["accuracy_embed"]], [0.0, 1.0])
    np.testing.assert_array_equal(comps[:, col["modality"]], [1.0, 0.0])  # no modality reward: from the text


def test_one_composite_reward_logs_its_own_scores():
    from medix_r1.rewards.composite import CompositeReward
    from medix_r1.train.monitors import COMPONENTS, component_matrix

    reward = CompositeReward({})
    scores = reward.score([WELL_FORMED], ["<X_RAY> Pneumonia"])
    comps, answers = component_matrix(
        [reward], [WELL_FORMED], ["<X_RAY> Pneumonia"], np.array([[9.0]]), [9.0]
    )
    for i, k in enumerate(COMPONENTS):
        v = scores[0][k]
        assert np.isnan(comps[0, i]) if v is None else comps[0, i] == v, k
    assert answers == ["Pneumonia"]


def test_answers_follow_the_reward_mode():
    """The repeated-answer monitor reads answers in the reward's mode: a reference-mode run does not
    re-parse strictly (issue 10)."""
    from medix_r1.rewards.composite import CompositeReward
    from medix_r1.rewards.structure import extract_answers
    from medix_r1.train.monitors import component_matrix, reward_mode

    text = "Pneumonia"
    assert extract_answers([text], "strict") != extract_answers([text], "reference")
    for mode in ("strict", "reference"):
        reward = CompositeReward({"mode": mode})
        assert reward_mode([reward]) == mode
        _, answers = component_matrix([reward], [text], ["<X_RAY> Pneumonia"], np.array([[0.0]]), [0.0])
        assert answers == extract_answers([text], mode)


def test_packed_rows_round_trip():
    from medix_r1.train.monitors import monitor_values, pack_rows, unpack_rows

    comps = np.array([[1.0, 1.0, 1.0, 0.0, np.nan], [0.5, 0.0, np.nan, np.nan, 1.0], [0.2, 1, 0, 0, 1]])
    answers, keys = ["Pneumonia ", "", "pneumonia"], ["p1", "p1", "p2"]
    scores, a2, k2, lengths = unpack_rows(pack_rows(comps, [5, 6, 7], answers, keys))
    assert lengths == [5, 6, 7]
    assert scores[0]["modality"] is None and scores[1]["accuracy_llm"] is None and scores[0]["format"] == 1.0
    assert a2[1] == "" and a2[0] == a2[2] and k2[0] == k2[1] != k2[2]
    assert monitor_values(scores, a2, k2, lengths, 0.0) == monitor_values(scores, answers, keys, lengths, 0.0)


def test_refill_plan_fills_each_process_from_its_own_rows():
    from medix_r1.train.grpo import refill_plan

    t, f = True, False
    # 2 processes x 3 rows; round 0 keeps 2 rows on process 0 and 1 on process 1.
    masks = [np.array([t, f, t, f, f, t]), np.array([t, t, t, t, f, t])]
    take, short = refill_plan(masks[:1], 2, 3)
    assert short.tolist() == [1, 2]
    take, short = refill_plan(masks, 2, 3)
    assert short.tolist() == [0, 0]
    assert [r.tolist() for r in take[0]] == [[0, 2], [0]]
    assert [r.tolist() for r in take[1]] == [[2], [0, 2]]


def test_kept_rows_drop_degenerate_and_out_of_range_groups():
    from medix_r1.advantages import group_stats
    from medix_r1.train.grpo import kept_rows

    st = group_stats(np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.05, np.nan, 0.5]), group_size=2)
    assert kept_rows(st, 0.01, 0.99).tolist() == [True, True, False, False, True, True, False, False]
    assert kept_rows(st, 0.1, 0.99).tolist()[4:6] == [False, False]
