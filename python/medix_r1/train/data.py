"""Local training data in the MediX-R1 authors' schema (``image`` list, ``problem``, ``solution`` = "<TAG>
answer"): loading from JSONL / Parquet / image folders / ``datasets.save_to_disk`` directories, checking, and
turning rows into the conversational dataset the trainer reads. Never reaches a hub.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medix_r1 import jsonl
from medix_r1._native import MODALITY_TAGS
from medix_r1.errors import DataError
from medix_r1.media import load_image

if TYPE_CHECKING:
    from medix_r1.train.config import DataConfig

__all__ = [
    "DataError",
    "Problem",
    "check_rows",
    "demo_dataset_path",
    "load_image",
    "load_rows",
    "to_training_rows",
]

_TAG_RE = re.compile(r"^\s*<\s*([A-Za-z_][A-Za-z0-9_ ]*)\s*>\s*(.*)$", re.S)


@dataclass(frozen=True)
class Problem:
    row: int  # 1-based, in file order
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.message}"


def demo_dataset_path() -> Path:
    """The small bundled medical QA set (50 text items, all 16 modality tags) used by ``medix demo``."""
    return Path(__file__).parent / "data" / "demo_medqa.jsonl"


def _not_utf8(p: Path, e: UnicodeDecodeError, line: int | None = None) -> DataError:
    where = f"{p}:{line}" if line is not None else str(p)
    return DataError(
        f"{where}: not UTF-8 text (byte {e.object[e.start]:#04x} at {'column' if line else 'offset'} "
        f"{e.start + 1 if line else e.start}); re-save it as UTF-8, "
        f"e.g. `iconv -f latin1 -t utf-8 {p} > fixed{p.suffix}`",
        path=p,
        line=line,
    )


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    return jsonl.read(p)  # DataError naming every bad line


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _not_utf8(p, e) from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"{p}: not valid JSON: {e}", path=p) from None


def load_rows(path: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows as plain dicts plus the base directory that relative image paths are resolved against."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"dataset not found: {p} (give a local .jsonl, .json, .parquet, image folder or "
            "save_to_disk directory; medix-r1 never downloads data)"
        )
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(p), p.parent
        if suffix == ".json":
            data = _read_json(p)
            if isinstance(data, dict) and "data" in data:
                data = data["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{p}: expected a JSON list of row objects", path=p)
            return data, p.parent
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist(), p.parent
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")
    # A directory: save_to_disk output, an image folder with metadata, or a folder of parquet/jsonl shards.
    if (
        (p / "dataset_info.json").exists()
        or (p / "dataset_dict.json").exists()
        or (p / "state.json").exists()
    ):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(p))
        if isinstance(ds, DatasetDict):
            split = "train" if "train" in ds else next(iter(ds))
            ds = ds[split]
        # Keep images as bytes/path dicts so checking can report unreadable ones row by row.
        if "image" in ds.column_names:
            from datasets import Image, Sequence

            feat = ds.features["image"]
            if isinstance(feat, (Sequence, list)):
                ds = ds.cast_column("image", [Image(decode=False)])
            elif isinstance(feat, Image):
                ds = ds.cast_column("image", Image(decode=False))
        return ds.to_list(), p
    meta = next((p / n for n in ("metadata.jsonl", "metadata.json") if (p / n).exists()), None)
    if meta is not None:
        rows = _read_jsonl(meta) if meta.suffix == ".jsonl" else _read_json(meta)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{meta}: expected a JSON list of row objects", path=meta)
        for r in rows:  # the imagefolder convention: file_name (or a list file_names) next to the metadata
            if "image" not in r:
                names = r.get("file_names") or ([r["file_name"]] if r.get("file_name") else [])
                r["image"] = list(names)
        return rows, p
    shards = sorted(p.glob("*.parquet")) or sorted(p.glob("*.jsonl"))
    if shards:
        rows = []
        for s in shards:
            rows += load_rows(s)[0]
        return rows, p
    raise DataError(
        f"{p}: a directory must hold a save_to_disk dataset, metadata.jsonl (image folder) or "
        "*.parquet / *.jsonl shards"
    )


def _images_of(row: dict[str, Any]) -> list[Any]:
    img = row.get("image", row.get("images"))
    if img is None:
        return []
    if isinstance(img, (list, tuple)):
        return list(img)
    return [img]


def check_rows(rows: list[dict[str, Any]], base: Path, *, images: bool = True) -> list[Problem]:
    """Every problem in the rows (missing fields, unknown or missing modality tags, empty answers, unreadable
    images), with 1-based row numbers."""
    known = set(MODALITY_TAGS)
    problems: list[Problem] = []
    for i, row in enumerate(rows, 1):
        q = row.get("problem")
        if q is None:
            problems.append(Problem(i, "problem", "missing"))
        elif not isinstance(q, str) or not q.strip():
            problems.append(Problem(i, "problem", "empty"))
        sol = row.get("solution", row.get("ground_truth"))
        if sol is None:
            problems.append(Problem(i, "solution", "missing"))
        elif not isinstance(sol, str) or not sol.strip():
            problems.append(Problem(i, "solution", "empty"))
        else:
            m = _TAG_RE.match(sol)
            if m is None:
                problems.append(
                    Problem(i, "solution", f"no leading modality tag in {sol[:40]!r} (want '<TAG> answer')")
                )
            else:
                tag = m.group(1).strip().upper()
                if tag not in known:
                    problems.append(Problem(i, "solution", f"unknown modality tag <{m.group(1)}>"))
                if not m.group(2).strip():
                    problems.append(Problem(i, "solution", "empty answer after the tag"))
        raw = row.get("image", row.get("images"))
        if raw is not None and not isinstance(raw, (list, tuple, str, dict, bytes)):
            problems.append(Problem(i, "image", f"expected a list of images, got {type(raw).__name__}"))
            continue
        if images:
            for j, ref in enumerate(_images_of(row)):
                try:
                    load_image(ref, base)
                except ValueError as e:
                    problems.append(Problem(i, f"image[{j}]", str(e)))
    return problems


def to_training_rows(
    rows: list[dict[str, Any]],
    base: Path,
    *,
    vision: bool,
    reasoning_tag: str = "think",
    system_prompt: str = "",
    image_max_side: int = 0,
    few_shot: int = 0,
) -> list[dict[str, Any]]:
    """Rows the trainer reads: ``prompt`` (chat messages), ``solution`` and, for vision models, ``images``."""
    from medix_r1.train.prompt import build_prompt

    out = []
    for row in rows:
        imgs = [load_image(r, base, image_max_side) for r in _images_of(row)] if vision else []
        item: dict[str, Any] = {
            "prompt": build_prompt(
                row["problem"],
                len(imgs),
                vision=vision,
                reasoning_tag=reasoning_tag,
                system_prompt=system_prompt,
                few_shot=few_shot,
            ),
            "solution": row.get("solution", row.get("ground_truth")),
        }
        if vision:
            item["images"] = imgs
        out.append(item)
    return out


def rows_for_run(
    data: DataConfig, rows: list[dict[str, Any]], base: Path, *, vision: bool
) -> list[dict[str, Any]]:
    """:func:`to_training_rows` with the prompt settings of a run's ``data:`` section (the trainer and the
    before/after comparison ask the same questions)."""
    return to_training_rows(
        rows,
        base,
        vision=vision,
        reasoning_tag=data.reasoning_tag,
        system_prompt=data.system_prompt,
        image_max_side=data.image_max_side,
        few_shot=data.few_shot,
    )
