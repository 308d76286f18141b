"""The judge/LLM options are declared once (BackendConfig's fields + medix_r1.llm.options.FLAGS): every
command's --help shows the same default for the same option, old spellings still parse, and --bundle is
accepted by every command that takes a model."""

from __future__ import annotations

import re

import pytest
from medix_r1.cli import build_parser
from medix_r1.llm import BackendConfig
from medix_r1.llm.options import declared_defaults

COMMANDS = [
    ["reward", "score"],
    ["eval", "judge"],
    ["eval", "run"],
    ["eval", "generate"],
    ["judge", "serve"],
    ["serve"],
    ["judge", "validate"],
    ["judge", "inspect"],
    ["doctor"],
    ["train"],
    ["demo"],
]


def _help(capsys, argv: list[str]) -> dict[str, str]:
    """flag -> its help entry (all its spellings, whitespace collapsed) in `medix <argv> --help`."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    text = capsys.readouterr().out
    entries: dict[str, str] = {}
    for block in re.split(r"\n(?=  -)", text):
        block = " ".join(block.split())
        for flag in re.findall(r"(?:^|, )(--[a-z0-9-]+)", block):
            entries[flag] = block
    return entries


def test_same_option_same_default_in_every_command(capsys):
    seen: dict[str, dict[str, str]] = {}
    for argv in COMMANDS:
        for flag, entry in _help(capsys, argv).items():
            m = re.search(r"\(default:? ([^)]*)\)", entry)
            if m and (flag.startswith("--judge-") or flag in ("--llama-extra-buffers", "--n-ctx")):
                seen.setdefault(flag, {})[" ".join(argv)] = m.group(1)
    d = declared_defaults()
    assert d["n_ctx"] == 4096
    for flag, by_cmd in seen.items():
        assert len(set(by_cmd.values())) == 1, (flag, by_cmd)
    # the options every judge command shares, with the one declared default
    for flag, want in (("--judge-n-ctx", "4096"), ("--judge-n-gpu-layers", "0")):
        assert set(seen[flag]) >= {"reward score", "eval judge", "judge serve", "judge validate"}, seen[flag]
        assert set(seen[flag].values()) == {want}
    assert set(seen["--n-ctx"]) >= {"eval generate", "eval run", "serve"}
    assert set(seen["--n-ctx"].values()) == {"4096"}


def test_every_model_command_takes_bundle_and_the_cpu_option(capsys):
    for argv in COMMANDS:
        entries = _help(capsys, argv)
        assert "--llama-extra-buffers" in entries, argv
        assert "auto" in entries["--llama-extra-buffers"]
        assert "--bundle" in entries, argv


@pytest.mark.parametrize(
    "argv, dest, value",
    [
        (["reward", "score", "--input", "a", "--output", "b", "--judge-threads", "3"], "judge_n_threads", 3),
        (["reward", "score", "--input", "a", "--output", "b", "--judge-ctx", "512"], "judge_n_ctx", 512),
        (["reward", "score", "--input", "a", "--output", "b", "--judge", "j.gguf"], "judge_model", "j.gguf"),
        (["eval", "judge", "--out", "o", "--judge", "j.gguf"], "judge_model", "j.gguf"),
        (["eval", "judge", "--out", "o", "--judge-ctx", "300"], "judge_n_ctx", 300),
        (["eval", "generate", "--tasks", "demo", "--out", "o", "--threads", "2"], "n_threads", 2),
        (["eval", "generate", "--tasks", "demo", "--out", "o", "--model-name", "m"], "name", "m"),
        (["judge", "serve", "--model", "j.gguf", "--n-ctx", "512"], "judge_n_ctx", 512),
        (["judge", "serve", "--model", "j.gguf", "--n-threads", "1"], "judge_n_threads", 1),
        (
            ["judge", "inspect", "--model", "j.gguf", "--answer", "a", "--ground-truth", "b"],
            "judge_model",
            "j.gguf",
        ),
        (["judge", "validate", "--judge-model", "j", "--out", "o", "--n-ctx", "512"], "judge_n_ctx", 512),
    ],
)
def test_old_spellings_still_parse(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_yaml_section_takes_the_cpu_option_and_checks_it():
    assert BackendConfig(model="j.gguf", llama_extra_buffers="off").llama_extra_buffers == "off"
    with pytest.raises(ValueError, match="llama_extra_buffers"):
        BackendConfig(model="j.gguf", llama_extra_buffers="sometimes")


def test_yaml_off_and_on_read_as_booleans_are_accepted():
    # YAML 1.1 reads a bare `llama_extra_buffers: off` as false
    assert BackendConfig(model="j.gguf", llama_extra_buffers=False).llama_extra_buffers == "off"
    assert BackendConfig(model="j.gguf", llama_extra_buffers=True).llama_extra_buffers == "on"


def test_backend_bounds_are_declared_and_reported_in_the_loaders_shape():
    from dataclasses import fields

    from medix_r1.errors import ConfigError

    bounds = {f.name: f.metadata.get("bounds") for f in fields(BackendConfig)}
    assert bounds["n_ctx"] == {"ge": 256} and bounds["max_retries"] == {"ge": 0}
    with pytest.raises(ConfigError) as e:
        BackendConfig(url="http://127.0.0.1:9/v1", n_ctx=10, timeout=0, max_retries=-1)
    keys = [x.key for x in e.value.errors]
    assert keys == ["backend.n_ctx", "backend.timeout", "backend.max_retries", "backend.name"]
    assert "backend.n_ctx: got 10; allowed: >= 256" in str(e.value)
    assert "backend.max_retries: got -1; allowed: >= 0" in str(e.value)
