"""The bundle manifest (``medix-bundle.json``): every file with its size and SHA-256, and the check that the
files which crossed the air gap are the files that left."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medix_r1.bundle import standalone
from medix_r1.bundle.models import read_json
from medix_r1.bundle.standalone import sha256_file
from medix_r1.errors import MedixError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "BundleError",
    "VerifyResult",
    "file_entry",
    "read_manifest",
    "sha256_file",
    "verify_bundle",
    "write_json_atomic",
]

MANIFEST = "medix-bundle.json"
FORMAT = 1


class BundleError(MedixError):
    """A bundle folder is missing, half-written, altered, or not for this machine; the message says what to
    do."""


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name and rename: a kill never leaves a half-written file under the real name."""
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """The manifest of ``bundle``; BundleError naming the file when the folder is not a finished bundle."""
    root = Path(bundle).expanduser()
    if not root.is_dir():
        raise BundleError(
            f"{root}: no such bundle directory (make one with `medix bundle create --out {root}`)"
        )
    m = root / MANIFEST
    if not m.is_file():
        raise BundleError(
            f"{m} is missing: {root} is not a finished bundle (was `medix bundle create` interrupted? rerun "
            "it with the same options to finish; it skips what is done)"
        )
    data = read_json(m, BundleError, "copy the bundle again")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), list):
        raise BundleError(f"{m}: not a medix-r1 bundle manifest (format {FORMAT}); copy the bundle again")
    return data


@dataclass
class VerifyResult:
    checked: int = 0
    bytes: int = 0
    unsafe: list[str] = field(default_factory=list)  # "path: why" (outside the bundle, absolute, a symlink)
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)  # "path: why"
    extra: list[str] = field(default_factory=list)
    allow_extra: bool = False

    @property
    def ok(self) -> bool:
        return not (self.unsafe or self.missing or self.altered or (self.extra and not self.allow_extra))


def verify_bundle(bundle: str | Path, *, progress: bool = False, allow_extra: bool = False) -> VerifyResult:
    """Hash every file the manifest lists and compare; a path leaving the bundle, and (unless
    ``allow_extra``) a file that is there but not listed, also fail. The same check install.sh runs."""
    root = Path(bundle).expanduser()
    data = read_manifest(root)
    r = standalone.verify_files(root, data, progress=progress and sys.stderr.isatty())
    sizes = {e["path"]: e["size"] for e in data["files"] if isinstance(e, dict) and "path" in e}
    return VerifyResult(
        checked=len(r["ok"]),
        bytes=sum(sizes[p] for p in r["ok"]),
        unsafe=r["unsafe"],
        missing=r["missing"],
        altered=r["altered"],
        extra=r["extra"],
        allow_extra=allow_extra,
    )
