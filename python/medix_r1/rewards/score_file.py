"""Score a JSONL file of (response, ground truth) rows with the composite reward, resumably.

Every non-blank input line gives exactly one output line, in order: the input's fields plus ``overall``,
``format``, ``accuracy_llm``, ``accuracy_embed``, ``modality`` (null when not applicable or unscorable) and
``errors``. Output is flushed after every batch; a rerun keeps the rows already written (a torn last line
from a crash is cut off) and continues after them. A bad input line (not UTF-8, not JSON, not an object,
``response``/``ground_truth`` missing or not a string) is not fatal: its output row has every component null
and an ``errors`` entry naming ``file:line`` and what was wrong; it is never scored 0.
"""

from __future__ import annotations

from medix_r1 import errors

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medix_r1.rewards.composite import COMPONENTS, CompositeReward, RewardConfig

__all__ = ["ScoreFileResult", "score_file"]

FIELDS = ("response", "ground_truth")


ResumeMismatchError = errors.ResumeMismatchError  # one type for the whole package (medix_r1.errors)


@dataclass
class ScoreFileResult:
    rows: int = 0
    """Rows in the output when done."""
    skipped: int = 0
    """Rows found already scored in the output (resume)."""
    scored: int = 0
    """Rows scored in this run (including bad rows written with errors)."""
    bad_rows: int = 0
    """Input lines that could not be read as a row."""
    unscorable: int = 0
    """Rows written with at least one error."""


@dataclass
class _Row:
    lineno: int
    data: dict[str, Any] | None
    error: str | None


def _read_rows(path: Path) -> Iterator[_Row]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield _Row(
                    lineno,
                    None,
                    f"{where}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
                )
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield _Row(lineno, None, f"{where}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield _Row(lineno, None, f"{where}: expected a JSON object, got {type(obj).__name__}")
                continue
            problems = []
            for name in FIELDS:
                if name not in obj:
                    problems.append(f"field `{name}` is missing")
                elif not isinstance(obj[name], str):
                    problems.append(f"field `{name}` must be a string, got {type(obj[name]).__name__}")
            yield _Row(lineno, obj, f"{where}: {'; '.join(problems)}" if problems else None)


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def _existing_rows(path: Path) -> list[dict[str, Any] | None]:
    """Rows already in the output; a torn or unreadable tail is cut off the file."""
    if not path.exists():
        return []
    rows: list[dict[str, Any] | None] = []
    good_end = 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # a last line without its newline was cut by a crash: write it again
        line = data[pos:nl]
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
        rows.append(obj if isinstance(obj, dict) else None)
        pos = good_end = nl + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


def _null_row(base: dict[str, Any] | None, error: str) -> dict[str, Any]:
    out = dict(base or {})
    for k in COMPONENTS:
        out[k] = None
    out["errors"] = [error]
    return out


def _line(row: dict[str, Any]) -> bytes:
    try:
        return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (from a "\ud800" escape in the input): keep it escaped
        return json.dumps(row).encode("ascii") + b"\n"


def _write(out: BinaryIO, rows: list[dict[str, Any]]) -> None:
    out.write(b"".join(_line(r) for r in rows))
    out.flush()
    os.fsync(out.fileno())


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    config: RewardConfig | None = None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    reward: CompositeReward | None = None,
) -> ScoreFileResult:
    """Score ``input_path`` into ``output_path`` (see the module docstring). Models are loaded before the
    output is touched, so a missing model fails fast (MissingModelError)."""
    inp, outp = Path(input_path), Path(output_path)
    if not inp.is_file():
        raise FileNotFoundError(f"input file not found: {inp}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if inp.resolve() == outp.resolve():
        raise ValueError("--output must differ from --input")
    reward = reward or CompositeReward(config)
    _ = reward.judge, reward.embedder  # load now: fail before writing anything
    if not reward.has_judge and not reward.has_embedder:
        print(
            "medix: no judge or embedding model given: scoring format and modality only "
            "(accuracy_llm and accuracy_embed do not apply; weights rescaled)",
            file=sys.stderr,
        )

    existing = _existing_rows(outp)
    result = ScoreFileResult(skipped=len(existing))
    total = _count_rows(inp)
    if len(existing) > total:
        raise ResumeMismatchError(
            f"{outp} already has {len(existing)} rows but {inp} has only {total}: not an output of this input"
        )
    bar = _progress(total, len(existing), progress)
    rows = _read_rows(inp)
    try:
        # Resume: the first len(existing) input rows are done; check ids where both sides have one.
        for k, done in enumerate(existing):
            row = next(rows)
            want = row.data.get("id") if row.data else None
            have = done.get("id") if done else None
            if want is not None and have is not None and want != have:
                raise ResumeMismatchError(
                    f"{outp} row {k + 1} has id {have!r} but {inp}:{row.lineno} has id {want!r}: "
                    "the output belongs to another input (use a new --output)"
                )
        with open(outp, "ab") as out:
            batch: list[_Row] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    _flush(batch, reward, out, result, bar)
                    batch = []
            if batch:
                _flush(batch, reward, out, result, bar)
    finally:
        if bar is not None:
            bar.close()
    result.rows = result.skipped + result.scored
    return result


def _flush(
    batch: list[_Row], reward: CompositeReward, out: BinaryIO, result: ScoreFileResult, bar: Any
) -> None:
    good = [r for r in batch if r.error is None and r.data is not None]
    scores = iter(
        reward.score([r.data["response"] for r in good], [r.data["ground_truth"] for r in good])  # type: ignore[index]
        if good
        else []
    )
    rows: list[dict[str, Any]] = []
    for r in batch:
        if r.error is not None or r.data is None:
            rows.append(_null_row(r.data, r.error or "unreadable row"))
            result.bad_rows += 1
            result.unscorable += 1
            continue
        s = next(scores)
        row = dict(r.data)
        for k in COMPONENTS:
            row[k] = s[k]
        row["errors"] = s["errors"]
        if s["errors"]:
            result.unscorable += 1
        rows.append(row)
    _write(out, rows)
    result.scored += len(batch)
    if bar is not None:
        bar.update(len(batch))


def _progress(total: int, done: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, unit="row", desc="scoring", file=sys.stderr, dynamic_ncols=True)
