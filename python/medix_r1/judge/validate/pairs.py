"""The labelled pairs a judge is validated on: JSONL of ``answer``, ``ground_truth``, ``match`` (true/false)
and optional ``category`` and ``question``; the bundled medical set is the default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medix_r1.errors import DataError

__all__ = ["DEFAULT_PAIRS", "Pair", "load_pairs"]

DEFAULT_PAIRS = Path(__file__).parent.parent / "data" / "pairs.jsonl"


@dataclass(frozen=True)
class Pair:
    """One labelled pair."""

    answer: str
    ground_truth: str
    match: bool
    category: str = "uncategorised"
    question: str | None = None


def load_pairs(path: str | Path) -> list[Pair]:
    """Read a pairs JSONL file; a bad line raises DataError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"pairs file not found: {p} (JSONL: answer, ground_truth, match, optional category, question)",
            path=p,
        )
    out: list[Pair] = []
    with open(p, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(enumerate(f, start=1))
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not valid UTF-8 ({e.reason})", path=p) from None
    for lineno, line in lines:
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})", path=p, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object", path=p, line=lineno)
        for k in ("answer", "ground_truth"):
            if not isinstance(obj.get(k), str):
                raise DataError(f"{where}: field `{k}` must be a string", path=p, line=lineno)
        if not isinstance(obj.get("match"), bool):
            raise DataError(f"{where}: field `match` must be true or false", path=p, line=lineno)
        cat = obj.get("category")
        q = obj.get("question")
        out.append(
            Pair(
                obj["answer"],
                obj["ground_truth"],
                obj["match"],
                str(cat) if cat not in (None, "") else "uncategorised",
                q if isinstance(q, str) else None,
            )
        )
    labels = {x.match for x in out}
    if labels != {True, False}:
        raise DataError(
            f"{p}: needs pairs labelled match=true and match=false (got {len(out)} pairs)", path=p
        )
    return out
