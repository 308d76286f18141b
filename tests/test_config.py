"""The one config loader (medix_r1.config): values converted and checked by their annotations and bounds, from
YAML and from --section.key=value, with errors that name the key, the value and what is allowed; the CLI
refuses a bad value with exit status 2 before any model loads. Also the task YAML of `medix eval`."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from medix_r1.cli import main
from medix_r1.config import build, check_fields, option, render
from medix_r1.embed.config import EmbedConfig
from medix_r1.errors import ConfigError
from medix_r1.train.config import load_config


@dataclass
class Inner:
    depth: int = option(1, "how deep", ge=0)


@dataclass
class Sample:
    flag: bool = option(False, "a switch")
    n: int = option(3, "a count", ge=1)
    rate: float = option(0.5, "a share", ge=0, le=1)
    mode: Literal["a", "b"] = option("a", "a choice")
    path: Path = option(Path("x"), "a path")  # noqa: RUF009
    names: list[str] = option(factory=list, help="a list")  # noqa: RUF009
    maybe: int | None = option(None, "optional")
    inner: Inner = option(factory=Inner, help="a nested section")  # noqa: RUF009

    def __post_init__(self) -> None:
        check_fields(self, "s")


def test_values_are_converted_by_annotation():
    got = build(
        Sample,
        {
            "flag": "yes",
            "n": "4",
            "rate": 1,
            "path": "/d",
            "names": ["a", 2],
            "maybe": 7.0,
            "inner": {"depth": 2},
        },
        "s",
    )
    assert got.flag is True and got.n == 4 and got.rate == 1.0 and isinstance(got.rate, float)
    assert got.path == Path("/d") and got.names == ["a", "2"] and got.maybe == 7 and got.inner.depth == 2


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"flag": "maybe"}, "s.flag", "true or false"),
        ({"n": 4.7}, "s.n", "an integer"),
        ({"n": "abc"}, "s.n", "an integer"),
        ({"n": True}, "s.n", "an integer"),
        ({"n": 0}, "s.n", ">= 1"),
        ({"rate": 1.5}, "s.rate", "<= 1"),
        ({"rate": "fast"}, "s.rate", "a finite number"),
        ({"mode": "c"}, "s.mode", "one of a, b"),
        ({"names": "a"}, "s.names", "a list of a string"),
        ({"maybe": "x"}, "s.maybe", "an integer or null"),
        ({"inner": {"depth": -1}}, "s.inner.depth", ">= 0"),
        ({"inner": {"deep": 1}}, "s.inner.deep", "depth"),
    ],
)
def test_bad_value_names_key_value_and_allowed(data, key, allowed):
    with pytest.raises(ConfigError) as e:
        build(Sample, data, "s")
    assert e.value.key == key and allowed in (e.value.allowed or "")
    assert key in str(e.value) and allowed in str(e.value)


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match=r"s\.mode: got 'z'"):
        Sample(mode="z")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        EmbedConfig(threshold=1.5)
    assert e.value.key == "embed.threshold" and e.value.value == 1.5


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("--lora.enabled=maybe", "lora.enabled", "maybe"),
        ("--algo.num_generations=4.7", "algo.num_generations", 4.7),
        ("--train.max_steps=abc", "train.max_steps", "abc"),
        ("--model.kind=audio", "model.kind", "audio"),
        ("--reward.embed.threshold=2", "reward.embed.threshold", 2.0),
        ("--reward.judge.n_ctx=big", "reward.judge.n_ctx", "big"),
    ],
)
def test_run_config_errors_name_the_full_key(override, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert (e.value.key, e.value.value) == (key, value) and e.value.allowed


def test_yaml_values_are_checked(tmp_path: Path):
    y = tmp_path / "run.yaml"
    y.write_text("lora:\n  enabled: maybe\n")
    with pytest.raises(ConfigError, match=r"lora\.enabled: got .maybe.; allowed: true or false"):
        load_config(y)
    y.write_text("train:\n  max_steps: '12'\nreward:\n  weights: format=0.2\n")
    cfg = load_config(y)
    assert cfg.train.max_steps == 12 and cfg.reward.format_weight == 0.2


def test_cli_refuses_before_any_model_loads(tmp_path: Path, capsys):
    # model.path points nowhere: had anything tried to load it, the error would be a missing model instead.
    y = tmp_path / "run.yaml"
    y.write_text(f"model:\n  path: {tmp_path / 'absent.gguf'}\ndata:\n  path: {tmp_path / 'absent.jsonl'}\n")
    cases = [
        ("--lora.enabled=maybe", "lora.enabled: got 'maybe'; allowed: true or false"),
        ("--algo.num_generations=4.7", "algo.num_generations: got 4.7; allowed: an integer"),
        ("--train.max_steps=abc", "train.max_steps: got 'abc'; allowed: an integer"),
    ]
    for flag, needle in cases:
        assert main(["train", "--config", str(y), flag]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    # In a fresh process: no model library was even imported.
    code = (
        "import sys; from medix_r1.cli import main; rc = main(sys.argv[1:]); "
        "heavy = {'torch', 'transformers', 'llama_cpp'} & set(sys.modules); "
        "assert not heavy, heavy; sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "train", "--config", str(y), cases[0][0]], capture_output=True, text=True
    )
    assert r.returncode == 2 and cases[0][1] in r.stderr, r.stderr


def test_print_config_shows_allowed_values_once(capsys):
    assert main(["train", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "kind: auto  # [auto | text | vision]" in out
    assert "num_generations: 4  # [>= 2]" in out
    text = render(Sample(), "sample")
    assert "mode: a  # [a | b] a choice" in text and "depth: 1  # [>= 0] how deep" in text


def test_task_yaml_values_are_checked(tmp_path: Path):
    from medix_r1.eval.tasks import TaskError, load_task_file

    (tmp_path / "t.yaml").write_text("name: t\npath: d.jsonl\ntype: essay\n")
    with pytest.raises(TaskError, match="type: got 'essay'; allowed: one of qa, mcq, report, summary"):
        load_task_file(tmp_path / "t.yaml")
    (tmp_path / "t.yaml").write_text("name: t\npath: d.jsonl\nchoices: [a, b]\nfilter: {lang: en}\n")
    (spec,) = load_task_file(tmp_path / "t.yaml")
    assert spec.choices == ["a", "b"] and spec.filter == {"lang": "en"}


def test_demo_config_is_valid_and_keeps_the_users_choices(tmp_path: Path):
    from medix_r1.train.demo import DEMO_STEPS, demo_config

    models = {"policy": tmp_path / "p.gguf", "judge": tmp_path / "j.gguf", "embedder": tmp_path / "onnx"}
    cfg = demo_config(tmp_path / "out", DEMO_STEPS, models)
    assert cfg.train.max_steps == DEMO_STEPS and cfg.data.few_shot == 2
    assert "<think>" in cfg.data.system_prompt
    ov = ["--data.reasoning_tag=thinking", "--algo.num_generations=6"]
    cfg = demo_config(tmp_path / "out", 3, models, ov)
    assert "<thinking>" in cfg.data.system_prompt and cfg.algo.num_generations == 6
    with pytest.raises(ConfigError, match=r"algo\.num_generations"):
        demo_config(tmp_path / "out", 3, models, ["--algo.num_generations=1"])
