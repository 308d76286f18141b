"""`medix reward score`: the JSONL contract, resume, bad rows, the no-model example, real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from medix_r1.cli import main
from medix_r1.rewards.score_file import score_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "pairs.jsonl"
KEYS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality", "errors")
GOOD = "<X_RAY><think>Consolidation.</think>\n<answer>{}</answer>"
GT = "<X_RAY> Right lower lobe pneumonia"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_examples_without_models(tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    assert main(["reward", "score", "--input", str(EXAMPLES), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "format and modality only" in err and "16 rows" in err
    rows, src = _rows(out), _rows(EXAMPLES)
    assert len(rows) == len(src) == 16
    for r, s in zip(rows, src):
        assert {k: r[k] for k in s} == s  # input fields kept as they were
        assert list(r)[-6:] == list(KEYS)
        assert r["accuracy_llm"] is None and r["accuracy_embed"] is None and r["errors"] == []
        assert isinstance(r["overall"], float)
    by_id = {r["id"]: r for r in rows}
    assert by_id["q01"]["overall"] == 1.0
    assert by_id["q03"]["overall"] == pytest.approx(0.1)  # wrong modality, good format
    assert by_id["q04"]["format"] == 0.0
    assert by_id["q12"]["modality"] is None


def test_resume_after_partial_output(tmp_path):
    inp = _write(
        tmp_path / "in.jsonl",
        [{"id": i, "response": GOOD.format(f"a{i} b"), "ground_truth": GT} for i in range(10)],
    )
    out = tmp_path / "out.jsonl"
    score_file(inp, out, batch_size=3, progress=False)
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][:17])  # four rows, then a torn fifth line
    res = score_file(inp, out, batch_size=3, progress=False)
    assert (res.skipped, res.scored, res.rows) == (4, 6, 10)
    assert out.read_bytes() == full
    res = score_file(inp, out, progress=False)  # complete: nothing to do
    assert (res.skipped, res.scored) == (10, 0)
    other = _write(tmp_path / "other.jsonl", [{"id": "zz", "response": "r", "ground_truth": "g"}] * 10)
    assert main(["reward", "score", "--input", str(other), "--output", str(out), "--no-progress"]) == 2


def test_bad_lines_are_rows_with_errors(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b'{"id": 1, "response": "<think>a</think><answer>b c</answer>", "ground_truth": "b c"}\n'
        b"not json at all\n"
        b"\n"
        b'{"id": 3, "response": "x"}\n'
        b'{"id": 4, "response": 5, "ground_truth": "g"}\n'
        b"[1, 2]\n"
        b'{"id": 6, "response": "caf\xe9", "ground_truth": "g"}\n'
        b'{"id": 7, "response": "<think>a</think><answer>b c</answer>", "ground_truth": "b c"}'
    )
    out = tmp_path / "out.jsonl"
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]) == 0
    assert "5 unreadable input rows" in capsys.readouterr().err
    rows = _rows(out)
    assert len(rows) == 7  # the blank line gives no row
    assert rows[0]["overall"] == 1.0 and rows[-1]["overall"] == 1.0
    expect = {
        1: f"{inp}:2: not valid JSON",
        2: f"{inp}:4: field `ground_truth` is missing",
        3: f"{inp}:5: field `response` must be a string",
        4: f"{inp}:6: expected a JSON object",
        5: f"{inp}:7: not valid UTF-8 (byte 0xe9",
    }
    for i, msg in expect.items():
        assert all(rows[i][k] is None for k in KEYS[:-1]), rows[i]
        assert rows[i]["errors"][0].startswith(msg), rows[i]["errors"]
    assert rows[2]["id"] == 3  # a JSON object keeps its fields


def test_cli_errors(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", [{"response": "r", "ground_truth": "g"}])
    out = tmp_path / "out.jsonl"
    assert main(["reward", "score", "--input", str(tmp_path / "nope"), "--output", str(out)]) == 2
    assert "input file not found" in capsys.readouterr().err
    assert (
        main(
            [
                "reward",
                "score",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--judge-model",
                str(tmp_path / "j.gguf"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "j.gguf" in err and "never downloads" in err
    assert not out.exists()  # nothing written before the models were found
    assert (
        main(["reward", "score", "--input", str(inp), "--output", str(out), "--embed-model", str(tmp_path)])
        == 2
    )
    assert "medix embed export" in capsys.readouterr().err
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--weights", "speed=1"]) == 2
    assert "unknown component" in capsys.readouterr().err
    assert (
        main(["reward", "score", "--input", str(inp), "--output", str(out), "--judge-url", "http://h/v1"])
        == 2
    )
    assert "judge.name" in capsys.readouterr().err


def test_weights_and_mode_options(tmp_path):
    inp = _write(
        tmp_path / "in.jsonl",
        [{"response": "<CT_SCAN><thinking>a</thinking><answer>b c</answer>", "ground_truth": GT}],
    )
    out = tmp_path / "out.jsonl"
    args = [
        "reward",
        "score",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--no-progress",
        "--mode",
        "reference",
    ]
    assert main([*args, "--weights", "format=0.3"]) == 0
    [r] = _rows(out)
    assert r["format"] == 1.0 and r["modality"] == 0.0 and r["overall"] == pytest.approx(0.3)


@pytest.mark.slow
def test_real_models_cli(tmp_path, gguf_path, minilm_onnx_dir):
    out = tmp_path / "scored.jsonl"
    args = ["reward", "score", "--input", str(EXAMPLES), "--output", str(out), "--no-progress"]
    args += ["--judge-model", str(gguf_path), "--judge-threads", "2", "--embed-model", str(minilm_onnx_dir)]
    assert main([*args, "--batch-size", "5"]) == 0
    rows = _rows(out)
    assert len(rows) == 16
    by_id = {r["id"]: r for r in rows}
    assert by_id["q01"]["accuracy_llm"] == 1.0 and by_id["q01"]["accuracy_embed"] == 1.0
    assert by_id["q10"]["accuracy_llm"] == 0.0  # empty answer: invalid, a real zero
    for r in rows:
        assert r["errors"] == []
        assert r["accuracy_llm"] in (0.0, 1.0) and r["accuracy_embed"] in (0.0, 1.0)
        assert 0.0 <= r["overall"] <= 1.0
    soft = tmp_path / "soft.jsonl"
    assert main([*args[:5], str(soft), *args[6:], "--soft-judge", "--soft-embed"]) == 0
    q02 = {r["id"]: r for r in _rows(soft)}["q02"]
    assert 0.0 < q02["accuracy_embed"] < 1.0 and 0.0 < q02["accuracy_llm"] < 1.0
