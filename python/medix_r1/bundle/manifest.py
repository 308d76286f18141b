"""The bundle manifest (``medix-bundle.json``): every file with its size and SHA-256, and the check that the
files which crossed the air gap are the files that left."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
_CHUNK = 1 << 20


class BundleError(MedixError):
    """A bundle folder is missing, half-written, altered, or not for this machine; the message says what to
    do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


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
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{m}: not readable JSON ({e}); copy the bundle again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), list):
        raise BundleError(f"{m}: not a medix-r1 bundle manifest (format {FORMAT}); copy the bundle again")
    return data


@dataclass
class VerifyResult:
    checked: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)  # "path: why"
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered)


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


def verify_bundle(bundle: str | Path, *, progress: bool = False) -> VerifyResult:
    """Hash every file the manifest lists and compare; also list files that are there but not listed."""
    root = Path(bundle).expanduser()
    data = read_manifest(root)
    res = VerifyResult()
    listed = {MANIFEST}
    total = len(data["files"])
    progress = progress and sys.stderr.isatty()
    for i, entry in enumerate(data["files"], 1):
        rel = entry["path"]
        listed.add(rel)
        p = root / rel
        if progress:
            print(f"\rverify [{i}/{total}] {rel[:60]:<60}", end="", file=sys.stderr, flush=True)
        if not p.is_file():
            res.missing.append(rel)
            continue
        size = p.stat().st_size
        if size != entry["size"]:
            res.altered.append(f"{rel}: size {size} bytes, the manifest says {entry['size']}")
            continue
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            res.altered.append(f"{rel}: sha256 {digest[:16]}..., the manifest says {entry['sha256'][:16]}...")
            continue
        res.checked += 1
        res.bytes += size
    if progress and total:
        print(file=sys.stderr)
    for p in _walk(root):
        rel = p.relative_to(root).as_posix()
        if rel not in listed and "__pycache__" not in rel:
            res.extra.append(rel)
    return res
