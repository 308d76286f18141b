"""Append-only JSONL files that survive a kill: a torn last line is dropped before appending, and the rows
already there tell a rerun what is done. Plus the small metadata file that stops two models mixing in one
output directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medix_r1.errors import ResumeMismatchError

__all__ = ["ResumeMismatchError", "append_row", "check_meta", "open_append", "read_rows"]




def read_rows(path: Path) -> list[dict]:
    """The complete rows of ``path`` (none when it does not exist); a torn last line is ignored."""
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # written by a run that was killed mid-line; open_append() removes it
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def open_append(path: Path):
    """Open ``path`` for appending after cutting any torn last line (left by a killed run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8")


def append_row(f, row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def check_meta(path: Path, meta: dict[str, Any], what: str) -> None:
    """Write ``meta`` beside the output, or check that the one already there agrees on every key."""
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        diff = {k: (old.get(k), v) for k, v in meta.items() if k in old and old[k] != v}
        if diff:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ResumeMismatchError(
                f"{path.parent} holds {what} made with other settings ({detail}). Use another --out, or "
                f"delete {path.parent} to start over."
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
