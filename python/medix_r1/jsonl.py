"""JSON Lines, read and written one way across the package: :func:`read` for input files (every line must be
a JSON object), and an append-only log that survives a kill (:func:`open_append`, :func:`append_row`,
:func:`read_rows`): each row is flushed and fsynced, so a killed run leaves at most a torn last line, which
is ignored on reading and cut before appending. Any other bad line is an error naming its line number; a
row is never skipped in silence.

(``rewards/score_file.py`` keeps its own streaming reader: it records bad rows in its output instead of
refusing the file.)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from medix_r1.errors import DataError

__all__ = ["append_row", "dumps", "finite_row", "open_append", "read", "read_rows"]


def _bad(path: Path, bad: list[tuple[int, str]], fix: str) -> DataError:
    shown = "; ".join(f"line {n}: {why}" for n, why in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return DataError(f"{path}: {len(bad)} bad line(s): {shown}{more}. {fix}", path=path, line=bad[0][0])


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as e:  # e.g. an integer longer than int() accepts
        return None, f"not valid JSON ({e})"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, ""


def _lines(path: Path) -> list[tuple[int, str | None, str]]:
    """(1-based line number, text or None when the line is not UTF-8, why not); the raw split keeps a torn
    last line without its newline."""
    out: list[tuple[int, str | None, str]] = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                out.append((n, raw.decode("utf-8"), ""))
            except UnicodeDecodeError as e:
                why = f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})"
                out.append((n, None, why))
    return out


def _collect(lines: list[tuple[int, str | None, str]]) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The JSON objects of ``lines`` (blank lines skipped) and the (line number, reason) of every bad one."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for n, text, why_not in lines:
        if text is None:
            bad.append((n, why_not))
            continue
        if not text.strip():
            continue
        obj, why = _parse(text)
        if obj is None:
            bad.append((n, why))
        else:
            rows.append(obj)
    return rows, bad


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSONL input file (blank lines skipped). Raises DataError listing every line that is
    not a UTF-8 JSON object, with line numbers (the first in ``.line``)."""
    p = Path(path)
    rows, bad = _collect(_lines(p))
    if bad:
        fix = "Fix or remove those lines."
        if any(why.startswith("not UTF-8") for _, why in bad):
            fix += f" Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {p} > fixed{p.suffix}`."
        raise _bad(p, bad, fix)
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of an append-only log (none when it does not exist). A torn last line (no newline:
    a run killed mid-write) is ignored, and :func:`open_append` cuts it; any other line that is not a JSON
    object is corruption and raises DataError naming the lines."""
    p = Path(path)
    if not p.exists():
        return []
    lines = _lines(p)
    if lines and (lines[-1][1] is None or not lines[-1][1].endswith("\n")):
        lines = lines[:-1]  # written by a run that was killed mid-line; open_append() removes it
    rows, bad = _collect(lines)
    if bad:
        raise _bad(
            p, bad, "The file was changed by something other than medix-r1: fix or delete those lines."
        )
    return rows


def open_append(path: str | Path) -> IO[str]:
    """Open ``path`` for appending after cutting any torn last line (left by a killed run)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() and p.stat().st_size:
        with p.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return p.open("a", encoding="utf-8")


def _finite(value: Any, where: str, why: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        why.append(f"{where} was {value!r}, not a finite number: written as null")
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), why) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", why) for i, v in enumerate(value)]
    return value


def finite_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every non-finite number (inf, -inf, NaN: not JSON) replaced by null and the reason
    appended to its ``errors`` list, as for an unscorable item; the row itself when all are finite."""
    why: list[str] = []
    out = _finite(row, "", why)
    if not why:
        return row
    errors = out.get("errors")
    out["errors"] = ([*errors] if isinstance(errors, list) else [] if errors is None else [errors]) + why
    return out  # type: ignore[no-any-return]


def dumps(row: dict[str, Any], *, ensure_ascii: bool = False) -> str:
    """One JSONL line (without its newline), always valid JSON: no Infinity or NaN (see
    :func:`finite_row`)."""
    try:
        return json.dumps(row, ensure_ascii=ensure_ascii, allow_nan=False)
    except ValueError:
        return json.dumps(finite_row(row), ensure_ascii=ensure_ascii, allow_nan=False)


def append_row(f: IO[str], row: dict[str, Any]) -> None:
    """Write one row and make it durable before returning (a kill loses at most the row being written).
    A non-finite number is written as null with the reason in ``errors``."""
    f.write(dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
