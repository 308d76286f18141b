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


# --------------------------------------------------------------------------------------------------------
# No row stops a run (issue 11, item 3)
# --------------------------------------------------------------------------------------------------------


def test_no_row_stops_a_run(tmp_path, capsys):
    ok = {"response": GOOD.format("right lower lobe pneumonia"), "ground_truth": GT}
    deep = "[" * 200 + "]" * 200
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b"\n".join(
            [
                json.dumps({"id": 0, **ok}).encode(),
                b'{"id": 1, "response": "\\ud800 lone", "ground_truth": "g"}',
                b'{"id": 2, "response": "ok", "ground_truth": "<X_RAY> \\udfff"}',
                json.dumps({"id": 3, **ok, "note": "\ud800", "\udc00key": ["\udbff"]}).encode(),
                json.dumps({"id": 4, **ok}).encode()[:-1] + b', "meta": ' + deep.encode() + b"}",
                b"[" * 100_000,
                b'{"id": 6, "big": ' + b"9" * 5000 + b"}",
                b'"just a string"',
                b'{"id": 8, "response": null, "ground_truth": {"a": 1}}',
                b'{"id": 9, "response": "caf\xe9", "ground_truth": "\xff"}',
                b"\xef\xbb\xbf{}",
                json.dumps({"id": 11, **ok}).encode(),
            ]
        )
        + b"\n"
    )
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    rows = _rows(out)
    assert len(rows) == 12
    for i in (0, 3, 11):
        assert rows[i]["overall"] == 1.0 and rows[i]["errors"] == [], rows[i]
    # Fields that are not valid Unicode are kept exactly (as JSON escapes) on a row that is scored.
    assert rows[3]["note"] == "\ud800" and rows[3]["\udc00key"] == ["\udbff"]
    out.read_bytes().decode("utf-8")  # and the file itself is valid UTF-8
    # A lone surrogate in `response`/`ground_truth` is the reward's business, per row: format and modality
    # are scored here (format-only: no model would see the text); see test_reference_diff for the judge.
    assert rows[1]["format"] == 0.0 and rows[1]["overall"] is not None
    assert rows[2]["format"] == 0.0 and rows[2]["overall"] is not None
    expect = {
        4: "field(s) `meta` nested deeper than 64 levels (dropped)",
        5: "JSON nested too deeply to read",
        6: "not valid JSON (Exceeds the limit",
        7: "expected a JSON object, got str",
        8: "field `response` must be a string, got NoneType; field `ground_truth` must be a string, got dict",
        9: "not valid UTF-8 (byte 0xe9",
        10: "not valid JSON",
    }
    for i, msg in expect.items():
        assert all(rows[i][k] is None for k in KEYS[:-1]), rows[i]
        assert rows[i]["errors"][0].startswith(f"{inp}:{i + 1}: {msg}"), (i, rows[i]["errors"])
    assert rows[4]["id"] == 4 and "meta" not in rows[4]  # the shallow fields stay
    # A rerun resumes after them instead of failing at the same row again.
    res = score_file(inp, out, progress=False)
    assert (res.skipped, res.scored, res.failed) == (12, 0, 7)


def test_exit_status_is_1_only_when_every_row_failed(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", ["[1]", '{"response": 1}'])
    out = tmp_path / "out.jsonl"
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]) == 1
    assert "every row failed" in capsys.readouterr().err
    assert len(_rows(out)) == 2
    empty = _write(tmp_path / "empty.jsonl", [])
    assert main(["reward", "score", "--input", str(empty), "--output", str(tmp_path / "e.jsonl")]) == 0


# --------------------------------------------------------------------------------------------------------
# Resume trusts nothing (item 5) and one-line errors for paths (item 8)
# --------------------------------------------------------------------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("medix: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_sidecar_records_what_produced_the_output(tmp_path, capsys):
    from medix_r1.errors import ResumeMismatchError
    from medix_r1.rewards.score_file import meta_path

    rows = [{"id": i, "response": GOOD.format(f"a{i}"), "ground_truth": GT} for i in range(6)]
    inp = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]
    assert main([*args, "--batch-size", "4"]) == 0
    meta = json.loads(meta_path(out).read_text())
    fp = meta["fingerprint"]
    assert meta["input"] == str(inp.resolve()) and meta["rows"] == 6
    assert fp["mode"] == "strict" and fp["judge"] is None and fp["embed"] is None
    assert fp["weights"] == {"format": 0.1, "llm": 0.575, "embed": 0.375, "modality": 0.05}
    assert len(fp["input_sha256"]) == 64
    before = out.read_bytes()
    capsys.readouterr()
    for extra, named in (
        (["--mode", "reference"], '--mode was "strict", now "reference"'),
        (["--weights", "format=0.5"], '--weights was {"format": 0.1,'),
    ):
        assert main([*args, *extra]) == 2
        err = _one_line_error(capsys)
        assert named in err and f"delete {out} and {meta_path(out)}" in err, err
    # A changed input (one row edited) is another input, even with the same ids.
    _write(inp, [*rows[:5], {**rows[5], "response": "edited"}])
    with pytest.raises(ResumeMismatchError, match="the input's content"):
        score_file(inp, out, progress=False)
    assert out.read_bytes() == before  # refusing touches nothing


def test_judge_and_embedder_identity(tmp_path):
    import shutil

    from medix_r1.rewards.composite import CompositeReward, RewardConfig
    from medix_r1.rewards.score_file import _fingerprint

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + bytes(range(256)) * 20_000)
    b.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 20_000)
    (tmp_path / "moved").mkdir()
    copy = Path(shutil.copy(a, tmp_path / "moved" / "a-copy.gguf"))
    emb = tmp_path / "emb"
    emb.mkdir()
    (emb / "medix_embed.json").write_text('{"dim": 4}')
    (emb / "model.onnx").write_bytes(b"onnx" * 1000)

    def fp(**cfg):
        return _fingerprint(CompositeReward(RewardConfig.from_dict(cfg)), "0" * 64)

    assert fp(judge={"model": str(a)}) == fp(judge={"model": str(copy)})  # moved or copied: the same model
    assert fp(judge={"model": str(a)}) != fp(judge={"model": str(b)})
    assert fp(judge={"url": "http://127.0.0.1:1/v1", "name": "x"})["judge"] == {
        "url": "http://127.0.0.1:1/v1",
        "name": "x",
    }
    e1 = fp(embed={"model": str(emb)})
    (emb / "fastembed-cache.lock").write_text("")  # what a loader drops there is not the model
    assert fp(embed={"model": str(emb)}) == e1
    assert fp(embed={"model": str(emb), "threshold": 0.7}) != e1
    (emb / "model.onnx").write_bytes(b"ONNX" * 1000)  # a re-export
    assert fp(embed={"model": str(emb)}) != e1


def test_output_that_is_the_input_or_a_folder(tmp_path, capsys):
    import os

    inp = _write(tmp_path / "in.jsonl", [{"response": "r", "ground_truth": "g"}])
    before = inp.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(inp)
    os.link(inp, tmp_path / "hard.jsonl")
    for out, says in (
        (inp, "is the input file"),
        (tmp_path / "link.jsonl", "is a link to the input file"),
        (tmp_path / "hard.jsonl", "is a link to the input file"),
        (tmp_path, "is a directory: give a file path"),
        (tmp_path / "no" / "such" / "out.jsonl", "does not exist (create it first)"),
    ):
        assert main(["reward", "score", "--input", str(inp), "--output", str(out)]) == 2
        err = _one_line_error(capsys)
        assert str(out) in err and says in err, err
    assert main(["reward", "score", "--input", str(tmp_path), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "is not a file" in _one_line_error(capsys)
    assert inp.read_bytes() == before


def test_a_copy_of_the_input_is_not_resumed(tmp_path, capsys):
    import shutil

    inp = _write(tmp_path / "in.jsonl", [{"id": i, "response": "r", "ground_truth": "g"} for i in range(3)])
    out = Path(shutil.copy(inp, tmp_path / "copy.jsonl"))
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "has no copy.jsonl.meta.json record" in err and "already there (resumed)" not in err
    assert out.read_bytes() == inp.read_bytes()
    # With a record beside it (copied from a real run), its lines still are not scored rows.
    real = tmp_path / "real.jsonl"
    score_file(inp, real, progress=False)
    shutil.copy(tmp_path / "real.jsonl.meta.json", tmp_path / "copy.jsonl.meta.json")
    capsys.readouterr()
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]) == 2
    assert "lines 1, 2, 3 are not a scored row" in _one_line_error(capsys)


def test_corrupt_middle_lines_are_refused_by_number(tmp_path, capsys):
    from medix_r1.errors import DataError

    inp = _write(
        tmp_path / "in.jsonl", [{"id": i, "response": GOOD.format(i), "ground_truth": GT} for i in range(8)]
    )
    out = tmp_path / "out.jsonl"
    score_file(inp, out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"id": 2, "overall": 1.0, "form\n'
    lines[5] = b"\x00\x00\x00\n"
    damaged = b"".join(lines[:7]) + lines[7][:10]  # and a torn last line
    out.write_bytes(damaged)
    with pytest.raises(DataError, match=r"lines 3, 6 are not a scored row") as e:
        score_file(inp, out, progress=False)
    assert e.value.line == 3 and "head -n 2" in str(e.value)
    assert out.read_bytes() == damaged  # nothing dropped, not even the torn tail, when refusing
    capsys.readouterr()
    assert main(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]) == 2
    _one_line_error(capsys)


def _medix(args: list[str]) -> list[str]:
    import sys

    return [sys.executable, "-c", "import sys; from medix_r1.cli import main; sys.exit(main())", *args]


def _subprocess_env() -> dict:
    import os

    import medix_r1

    env = dict(os.environ)
    pkg_root = str(Path(medix_r1.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.slow
def test_kill_9_at_random_points_loses_no_rows(tmp_path):
    """A real `medix reward score` process is killed with SIGKILL at random points (before, during and
    between batch writes); reruns resume, and the result equals an uninterrupted run byte for byte."""
    import random
    import signal
    import subprocess
    import time

    n = 1000
    responses = [GOOD, "<think>x</think><answer>finding {}</answer>", "no format {}", GOOD.format("")]
    inp = _write(
        tmp_path / "in.jsonl",
        [{"id": i, "response": responses[i % 4].format(i), "ground_truth": GT} for i in range(n)],
    )
    ref = tmp_path / "ref.jsonl"
    score_file(inp, ref, batch_size=8, progress=False)
    full = ref.stat().st_size
    env = _subprocess_env()
    out = tmp_path / "out.jsonl"
    cmd = _medix(["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"])
    cmd += ["--batch-size", "8"]
    rng = random.Random(11)
    rows_at_kill = []
    for k in range(5):
        # A kill point: first a random instant after the start (it may land before the record file or the
        # first row), then a random share of what is left to write.
        now = out.stat().st_size if out.exists() else 0
        target = now + rng.uniform(0.0, 0.5) * (full - now)
        delay = rng.uniform(0.0, 0.8) if k == 0 else None
        p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while p.poll() is None:
            size = out.stat().st_size if out.exists() else 0
            if (delay is not None and time.monotonic() - t0 >= delay) or (delay is None and size > target):
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        _, err = p.communicate()
        assert p.returncode in (0, -signal.SIGKILL), err.decode()
        if p.returncode != 0:
            rows_at_kill.append(out.read_bytes().count(b"\n") if out.exists() else 0)
    done = subprocess.run(cmd, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    want, got = _rows(ref), _rows(out)
    lost = len({r["id"] for r in want} - {r["id"] for r in got})
    differing = sum(a != b for a, b in zip(want, got)) + abs(len(want) - len(got))
    print(
        f"kill -9 of `medix reward score` with {rows_at_kill} of {n} rows on disk: "
        f"rows lost {lost}, rows differing from an uninterrupted run {differing}"
    )
    assert lost == 0 and differing == 0 and out.read_bytes() == ref.read_bytes()


@pytest.mark.slow
def test_format_only_output_is_not_resumed_with_a_judge(tmp_path, capsys, gguf_path):
    """Rerunning a format-only output with a real judge would mix two configurations in one file."""
    rows = [{"id": i, "response": GOOD.format(f"a{i}"), "ground_truth": GT} for i in range(4)]
    inp = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]
    assert main([*args, "--batch-size", "2"]) == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]))  # as if it had stopped half-way
    capsys.readouterr()
    assert main([*args, "--judge-model", str(gguf_path), "--judge-threads", "1"]) == 2
    err = _one_line_error(capsys)
    assert "produced by another run (the judge: none then, one now;" in err and "delete" in err, err
    assert out.read_bytes() == b"".join(lines[:2])


def test_a_row_that_breaks_its_batch_is_that_rows_error(tmp_path):
    """If scoring a batch raises because of one row's content, the batch is scored row by row: that row
    gets the error, the others their scores."""
    from medix_r1 import MedixInputError
    from medix_r1.rewards.composite import CompositeReward

    class Picky(CompositeReward):  # the real reward, refusing one kind of content as a native error would
        def score(self, responses, ground_truths):
            if any("BOOM" in r for r in responses):
                raise MedixInputError("responses[0] is not acceptable")
            return super().score(responses, ground_truths)

    rows = [{"id": i, "response": GOOD.format("x"), "ground_truth": GT} for i in range(5)]
    rows[2]["response"] = "BOOM"
    inp = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    res = score_file(inp, out, batch_size=5, progress=False, reward=Picky())
    got = _rows(out)
    assert (res.rows, res.failed) == (5, 1)
    assert [r["overall"] for r in got] == [1.0, 1.0, None, 1.0, 1.0]
    assert got[2]["errors"] == [
        f"{inp}:3: could not be scored: MedixInputError: responses[0] is not acceptable"
    ]


def test_two_runs_on_one_output_are_stopped(tmp_path):
    import fcntl

    from medix_r1.errors import DataError

    inp = _write(tmp_path / "in.jsonl", [{"response": GOOD.format("x"), "ground_truth": GT}])
    out = tmp_path / "out.jsonl"
    with open(out, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a run in progress holds it
        with pytest.raises(DataError, match="being written by another"):
            score_file(inp, out, progress=False)
    assert score_file(inp, out, progress=False).rows == 1


def test_attack_embedder_input_is_capped_by_characters(minilm_onnx_dir):
    """The embedder sees at most MAX_EMBED_CHARS characters of a text: a 1 MB text embeds as its prefix."""
    from medix_r1.embed import FastEmbedEmbedder
    from medix_r1.embed.backends import MAX_EMBED_CHARS

    emb = FastEmbedEmbedder(minilm_onnx_dir)
    long = ("pneumonia of the right lower lobe " * 40_000)[:1_000_000]
    a, b = emb.embed([long, long[:MAX_EMBED_CHARS]])
    assert float(a @ b) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_attack_a_64_mb_answer_is_scored_on_a_prefix_and_marked(tmp_path, minilm_onnx_dir):
    """A 64 MB answer with the embedder on: every row scored, that row marked truncated, bounded memory
    (before: the tokenizer allocated ~160 bytes per character; 200 MB aborted the process, output empty)."""
    import subprocess
    import sys

    inp = tmp_path / "in.jsonl"
    huge = "pneumonia " * (64 * 2**20 // 10)
    with open(inp, "w", encoding="utf-8") as f:
        f.write(
            json.dumps({"response": GOOD.format("Right lower lobe pneumonia"), "ground_truth": GT}) + "\n"
        )
        f.write(json.dumps({"response": GOOD.format(huge), "ground_truth": GT}) + "\n")
        f.write(json.dumps({"response": GOOD.format("pneumonia"), "ground_truth": GT}) + "\n")
    del huge
    out = tmp_path / "out.jsonl"
    # The child reports its own peak (VmHWM of its own address space): the kernel's ru_maxrss of a child also
    # counts the RSS its parent (this pytest process, with torch loaded) had when it forked.
    peak = (
        "import runpy, sys\n"
        "try:\n    runpy.run_module('medix_r1.cli', run_name='__main__', alter_sys=True)\n"
        "finally:\n    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
        "    sys.stderr.write(f'\\nMEDIX_VMHWM_KB={hwm}\\n')\n"
    )
    cmd = [sys.executable, "-c", peak, "reward", "score", "--input", str(inp), "--output", str(out)]
    cmd += ["--embed-model", str(minilm_onnx_dir), "--no-progress"]
    p = subprocess.run(cmd, env=_subprocess_env(), stderr=subprocess.PIPE, check=False)
    err = p.stderr.decode(errors="replace")
    peak_kib = int(err.rsplit("MEDIX_VMHWM_KB=", 1)[1].split()[0])
    print(f"\n64 MB answer: exit {p.returncode}, peak RSS {peak_kib / 1024:.0f} MiB")
    assert p.returncode == 0, err[-2000:]
    rows = []
    with open(out, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            r.pop("response")
            rows.append(r)
    assert len(rows) == 3 and all(r["accuracy_embed"] is not None for r in rows)
    assert rows[1]["truncated"] == ["accuracy_embed"]
    assert "truncated" not in rows[0] and "truncated" not in rows[2]
    assert peak_kib < 2 * 2**20  # KiB: under 2 GiB for a 64 MB row


@pytest.mark.slow
def test_attack_resuming_a_long_output_streams_it(tmp_path):
    """Resuming an output of 300,000 rows reads it line by line: the resuming process's peak memory is
    about that of resuming 30,000 rows (it held every row as a dict before: ~+200 MB here, ~1 GB at 1M)."""
    import subprocess
    import sys

    from medix_r1.rewards.score_file import score_file

    peaks = {}
    for n in (30_000, 300_000):
        inp, out = tmp_path / f"in{n}.jsonl", tmp_path / f"out{n}.jsonl"
        with open(inp, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(
                    json.dumps({"id": f"r{i}", "response": GOOD.format(f"a{i}"), "ground_truth": GT}) + "\n"
                )
        score_file(inp, out, batch_size=20_000, progress=False)  # format-only: no models
        code = (
            "import resource, sys; from medix_r1.rewards.score_file import score_file; "
            "r = score_file(sys.argv[1], sys.argv[2], progress=False); "
            "print(r.skipped, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(inp), str(out)],
            env=_subprocess_env(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        skipped, peak = map(int, done.stdout.split())
        assert skipped == n
        peaks[n] = peak / 1024
    print(f"\nresume peak RSS: 30,000 rows {peaks[30_000]:.0f} MiB, 300,000 rows {peaks[300_000]:.0f} MiB")
    assert peaks[300_000] - peaks[30_000] < 40  # MiB; streaming: independent of the row count


def test_an_answer_the_judge_sees_cut_is_marked_truncated(tmp_path, gguf_path):
    """The strict judge reads at most MAX_ANSWER_CHARS characters of an answer: a longer answer's row says so
    (``"truncated": ["accuracy_llm"]``), and its verdict is the judge's verdict on that prefix, unchanged;
    short answers carry no mark; reference mode (which sends the whole text) marks nothing."""
    from medix_r1.judge import JudgeConfig, make_judge
    from medix_r1.judge.prompt import MAX_ANSWER_CHARS, was_cut

    long = "right lower lobe pneumonia " * 60  # 1,620 characters
    exact = ("x" * (MAX_ANSWER_CHARS - 1)) + " y"  # 1,201: cut by one character
    edge = "z" * MAX_ANSWER_CHARS  # exactly the limit: not cut
    assert was_cut(long) and was_cut(exact) and not was_cut(edge) and not was_cut("\n" * 3000)
    assert was_cut(" " * (4 * MAX_ANSWER_CHARS) + "hidden")  # past what the judge reads at all
    answers = ["pneumonia", long, exact, edge]
    inp = _write(
        tmp_path / "in.jsonl",
        [{"id": i, "response": GOOD.format(a), "ground_truth": GT} for i, a in enumerate(answers)],
    )
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--input", str(inp), "--output", str(out), "--no-progress"]
    args += ["--judge-model", str(gguf_path), "--judge-threads", "1"]
    assert main(args) == 0
    rows = _rows(out)
    assert [r.get("truncated") for r in rows] == [None, ["accuracy_llm"], ["accuracy_llm"], None]
    judge = make_judge(JudgeConfig(model=str(gguf_path), n_threads=1))
    try:
        direct = judge.judge([(a, "Right lower lobe pneumonia") for a in answers])
    finally:
        judge.close()
    assert [r["accuracy_llm"] for r in rows] == [1.0 if v.match else 0.0 for v in direct]
    ref = tmp_path / "ref.jsonl"
    assert main([*args[:5], str(ref), *args[6:], "--mode", "reference"]) == 0
    assert all("truncated" not in r for r in _rows(ref))
