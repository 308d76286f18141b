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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("--train.learning_rate=1e999", "train.learning_rate"),
        ("--algo.temperature=inf", "algo.temperature"),
        ("--algo.epsilon=1e400", "algo.epsilon"),
        ("--train.max_grad_norm=.inf", "train.max_grad_norm"),
        ("--train.judge_retry_wait=nan", "train.judge_retry_wait"),
        ("--reward.judge.timeout=.inf", "reward.judge.timeout"),
        ("--reward.judge.timeout=1e300", "reward.judge.timeout"),
        ("--reward.llm_weight=1e308", "reward.llm_weight"),
        ("--reward.format_weight=-0.1", "reward.format_weight"),
    ],
)
def test_non_finite_and_huge_numbers_are_refused(override: str, key: str):
    extra = ["--reward.judge.url=http://127.0.0.1:9/v1", "--reward.judge.name=j"] if "judge." in key else []
    with pytest.raises(ConfigError) as e:
        load_config(None, [*extra, override])
    assert e.value.key == key, str(e.value)


def test_a_field_may_allow_infinity():
    from dataclasses import dataclass

    from medix_r1.config import build, option

    @dataclass
    class Limits:
        budget: float = option(1.0, "seconds; .inf: no limit", gt=0, allow_inf=True)
        rate: float = option(1.0, "finite", gt=0)

    assert build(Limits, {"budget": ".inf"}).budget == math.inf
    assert build(Limits, {"budget": float("inf")}).budget == math.inf
    with pytest.raises(ConfigError, match="budget"):
        build(Limits, {"budget": float("nan")})
    with pytest.raises(ConfigError, match="a finite number"):
        build(Limits, {"rate": float("inf")})


def test_judge_timeout_inf_in_a_reward_file_exits_2(tmp_path: Path):
    f = tmp_path / "reward.yaml"
    f.write_text("judge: {url: 'http://127.0.0.1:9/v1', name: j, timeout: .inf}\n")
    (tmp_path / "in.jsonl").write_text("{}\n")
    r = _medix(
        "reward", "score", "--config", str(f), "--input", str(tmp_path / "in.jsonl"),
        "--output", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert r.returncode == 2 and "judge.timeout" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_jsonl_writers_never_write_infinity_or_nan(tmp_path: Path):
    from medix_r1 import jsonl
    from medix_r1.rewards.score_file import _encode

    row = {"overall": math.inf, "format": 1.0, "nested": {"x": [math.nan, 2.0]}, "errors": ["earlier"]}
    for line in (jsonl.dumps(row), _encode(row).decode()):
        got = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written"))
        assert got["overall"] is None and got["format"] == 1.0 and got["nested"]["x"] == [None, 2.0]
        assert got["errors"][0] == "earlier" and any("overall was inf" in e for e in got["errors"])
    with jsonl.open_append(tmp_path / "log.jsonl") as f:
        jsonl.append_row(f, {"score": -math.inf})
    [back] = jsonl.read_rows(tmp_path / "log.jsonl")
    assert back["score"] is None and "score was -inf" in back["errors"][0]
    assert jsonl.dumps({"a": 1.5}) == '{"a": 1.5}'


def test_an_override_is_never_an_abbreviation(tmp_path: Path):
    r = _medix("train", "--train.max_step=7", "--plan")
    assert r.returncode == 2 and "--train.max_step=7" in r.stderr, r.stderr
    assert _medix("train", "--train.max_steps=7", "--plan").returncode == 0
