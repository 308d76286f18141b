"""The evaluation's output files: append-only JSONL (from :mod:`medix_r1.jsonl`: a killed run leaves at most a
torn last line; the rows already there tell a rerun what is done), plus the small metadata file that stops
two models mixing in one output directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medix_r1.errors import ResumeMismatchError
from medix_r1.jsonl import append_row, open_append, read_rows

__all__ = ["ResumeMismatchError", "append_row", "check_meta", "open_append", "read_rows"]


def check_meta(path: Path, meta: dict[str, Any], what: str) -> None:
    """Write ``meta`` beside the output, or check that the one already there agrees on every key. A meta
    file that cannot be read is a mismatch too: nothing proves the outputs beside it belong to this run."""
    start_over = f"Use another output directory, or delete {path.parent} to start over."
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            raise ResumeMismatchError(
                f"{path} cannot be read ({e}), so the {what} in {path.parent} cannot be checked against "
                f"these settings. {start_over}"
            ) from None
        if not isinstance(old, dict):
            raise ResumeMismatchError(
                f"{path} is not a JSON object, so the {what} in {path.parent} cannot be checked against "
                f"these settings. {start_over}"
            )
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k, v) != v or k not in old}
        if diff:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ResumeMismatchError(
                f"{path.parent} holds {what} made with other settings ({detail}). {start_over}"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves a half-written meta file that would refuse the rerun
