"""Typed errors and the files behind resuming: the native MedixInputError pickles and carries arg/index; JSONL
logs report corrupt lines (a torn last line stays repairable); an unreadable meta file fails the resume
check; a missing pydicom is reported as such; the GPU-only settings raise GpuRequiredError."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
from medix_r1 import MedixInputError, _native
from medix_r1.advantages import group_advantages
from medix_r1.errors import DataError, GpuRequiredError, ResumeMismatchError
from medix_r1.eval.io import check_meta
from medix_r1.jsonl import append_row, open_append, read, read_rows
from medix_r1.media import MissingDependencyError, is_vision_checkpoint, load_image


def test_medix_input_error_carries_arg_index_and_pickles():
    assert MedixInputError.__module__ == "medix_r1._native"
    # The public wrappers score a lone surrogate per row; the raw extension still refuses it, naming where.
    with pytest.raises(MedixInputError) as e:
        _native.format_rewards(["ok", "bad \ud800"])
    assert (e.value.arg, e.value.index) == ("responses", 1)
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is MedixInputError and str(back) == str(e.value)
    assert (back.arg, back.index) == ("responses", 1)
    with pytest.raises(MedixInputError) as e:
        group_advantages([0.0, float("inf")], group_size=2)
    assert (e.value.arg, e.value.index) == ("rewards", 1)
    plain = MedixInputError("made in Python")
    assert plain.arg is None and plain.index is None
    assert pickle.loads(pickle.dumps(plain)).args == ("made in Python",)


def test_read_rows_reports_corrupt_middle_lines_and_ignores_a_torn_tail(tmp_path: Path):
    p = tmp_path / "g.jsonl"
    p.write_text('{"id": 1}\n{"id": 2\n[3]\n{"id": 4}\n{"id": 5, "tor')
    with pytest.raises(DataError) as e:
        read_rows(p)
    assert (
        e.value.line == 2
        and "line 2: not valid JSON" in str(e.value)
        and "line 3: a JSON list" in str(e.value)
    )
    p.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "tor')
    assert [r["id"] for r in read_rows(p)] == [1, 2]
    with open_append(p) as f:  # the torn line is cut before appending
        append_row(f, {"id": 3})
    assert [r["id"] for r in read_rows(p)] == [1, 2, 3]
    p.write_bytes(b'{"id": 1}\n\xff\xfe\n{"id": 2}\n')
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        read_rows(p)
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        read(p)


def test_unreadable_meta_fails_the_resume_check(tmp_path: Path):
    meta = tmp_path / "generate.json"
    check_meta(meta, {"model": "a"}, "answers")
    check_meta(meta, {"model": "a"}, "answers")  # agrees: fine
    with pytest.raises(ResumeMismatchError, match="'a' there, 'b' now"):
        check_meta(meta, {"model": "b"}, "answers")
    for bad in ("{not json", "[1, 2]", "{}"):
        meta.write_text(bad)
        with pytest.raises(ResumeMismatchError):
            check_meta(meta, {"model": "a"}, "answers")
    with pytest.raises(ResumeMismatchError) as e:
        check_meta(meta, {"model": "a"}, "answers")
    assert "--" not in str(e.value)  # the library names no CLI flag; the CLI adds it


def test_missing_pydicom_is_reported_as_missing(monkeypatch, tmp_path: Path):
    from medix_r1.train.data import check_rows

    dicom = b"\0" * 128 + b"DICM" + b"\0" * 64
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match="install pydicom"):
        load_image(dicom, tmp_path)
    (tmp_path / "scan.dcm").write_bytes(dicom)
    rows = [{"problem": "q", "solution": "<CT_SCAN> a", "image": ["scan.dcm"]}]
    with pytest.raises(MissingDependencyError, match="install pydicom"):  # not an "unreadable image" row
        check_rows(rows, tmp_path)


def test_vision_checkpoint_detection(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert not is_vision_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {}}))
    assert is_vision_checkpoint(tmp_path) and not is_vision_checkpoint(tmp_path, "text")
    (tmp_path / "config.json").write_text("[]")
    assert not is_vision_checkpoint(tmp_path)


def test_gpu_only_settings_raise_gpu_required():
    from medix_r1.train.backends import select_backend
    from medix_r1.train.config import load_config

    for ov in (["--train.backend=unsloth"], ["--lora.load_in_4bit=true"], ["--train.device=cuda"]):
        with pytest.raises(GpuRequiredError):
            select_backend(load_config(None, ov), cuda=False, unsloth=False)
    with pytest.raises(GpuRequiredError, match="unsloth is not installed"):
        select_backend(load_config(None, ["--train.backend=unsloth"]), cuda=True, unsloth=False)


def test_attack_no_option_is_matched_by_a_prefix(capsys):
    """`--train.max_step=7` is refused, not taken as `--train.max_steps` (no prefix matching anywhere)."""
    from medix_r1.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--train.max_step=7", "--print-config"])
    assert e.value.code == 2 and "unrecognized arguments: --train.max_step=7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reward", "score", "--inp", "a.jsonl", "--output", "b.jsonl"])  # --inp is not --input
    assert "--input" in capsys.readouterr().err
    assert main(["train", "--train.max_steps=7", "--print-config"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out
