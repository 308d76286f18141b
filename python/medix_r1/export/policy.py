"""Find the files of an exported policy: the model GGUF and its vision projector in a ``medix export``
folder (from its ``export.json``), so commands can take the folder where they take a GGUF."""

from __future__ import annotations

import json
from pathlib import Path

from medix_r1.errors import MissingModelError

__all__ = ["policy_files"]


def policy_files(folder: str | Path) -> tuple[str, str | None]:
    """(model GGUF, mmproj GGUF or None) of the export in ``folder``."""
    d = Path(folder).expanduser()
    rec_file = d / "export.json"
    if rec_file.is_file():
        rec = json.loads(rec_file.read_text())
        by_role = {f["role"]: d / f["name"] for f in rec.get("files", [])}
        if "model" in by_role:
            mm = by_role.get("mmproj")
            return str(by_role["model"]), None if mm is None else str(mm)
        raise MissingModelError(
            f"{d}: this export is a {rec.get('format')} export, not a model GGUF; export with --format gguf"
        )
    ggufs = sorted(p for p in d.glob("*.gguf") if not p.name.startswith("mmproj"))
    if len(ggufs) != 1:
        raise MissingModelError(f"{d}: no export.json and not exactly one model .gguf inside; name the file")
    mm = sorted(d.glob("mmproj*.gguf"))
    return str(ggufs[0]), str(mm[0]) if mm else None
