"""The bundle check and install plan that must run before medix-r1 is installed: standard library only.

`medix bundle verify` imports this module; `medix bundle create` pastes its source into ``install.sh``, whose
Python runs ``main()`` on the offline machine. One implementation, so what `verify` vouches for is what
``install.sh`` installs: every listed file with its size and SHA-256, no path leaving the bundle, no unlisted
file (unless allowed), and then exactly the listed wheels, by path, with their hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "medix-bundle.json"
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def entry_problem(root: Path, entry: Any) -> str | None:
    """Why a manifest entry cannot be trusted as a file of this bundle, or None.

    A path is relative POSIX, has no ``..``/empty/``.`` parts and no backslash or drive, and once every
    symlink on the way is followed it is still inside ``root``.
    """
    if not isinstance(entry, dict):
        return "not an object with path, size and sha256"
    rel = entry.get("path")
    if not isinstance(rel, str) or not rel:
        return "no path"
    size, digest = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "size is not a whole number of bytes"
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        return "sha256 is not 64 lowercase hex digits"
    return path_problem(root, rel)


def path_problem(root: Path, rel: str) -> str | None:
    """Why ``rel`` is not a path inside ``root`` (see :func:`entry_problem`), or None."""
    if "\\" in rel or "\0" in rel or re.match(r"^[A-Za-z]:", rel):
        return "not a relative POSIX path"
    if rel.startswith("/"):
        return "an absolute path (manifest paths are relative to the bundle)"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a path with '..', '.' or an empty part (manifest paths stay inside the bundle)"
    base = root.resolve()
    try:
        real = (base / PurePosixPath(rel)).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        return f"cannot be resolved ({e})"
    if real != base and base not in real.parents:
        return f"leads outside the bundle (to {real}) through a symlink"
    return None


def verify_files(root: Path, manifest: dict[str, Any], *, progress: bool = False) -> dict[str, list[str]]:
    """Check every listed file; return {"unsafe", "missing", "altered", "extra"}, each a list of
    "path" or "path: why"."""
    out: dict[str, list[str]] = {"unsafe": [], "missing": [], "altered": [], "extra": [], "ok": []}
    listed = {MANIFEST}
    files = manifest.get("files") or []
    total = len(files)
    for i, entry in enumerate(files, 1):
        why = entry_problem(root, entry)
        if why:
            name = entry.get("path") if isinstance(entry, dict) else None
            out["unsafe"].append(f"{name if isinstance(name, str) else f'entry {i}'!r}: {why}")
            continue
        rel = entry["path"]
        listed.add(rel)
        p = root / rel
        if progress:
            print(f"\rverify [{i}/{total}] {rel[:60]:<60}", end="", file=sys.stderr, flush=True)
        if p.is_symlink() or not p.is_file():
            # A listed file is a regular file: a symlink (even one inside) is not what was hashed at create.
            if p.is_symlink():
                out["unsafe"].append(f"{rel}: a symlink, not the file the manifest lists")
            else:
                out["missing"].append(rel)
            continue
        size = p.stat().st_size
        if size != entry["size"]:
            out["altered"].append(f"{rel}: size {size} bytes, the manifest says {entry['size']}")
            continue
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            out["altered"].append(
                f"{rel}: sha256 {digest[:16]}..., the manifest says {entry['sha256'][:16]}..."
            )
            continue
        out["ok"].append(rel)
    if progress and total:
        print(file=sys.stderr)
    for dirpath, dirs, names in os.walk(root):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(dirpath, d)))]:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel not in listed and "__pycache__" not in rel:
                out["extra"].append(rel)
    out["extra"].sort()
    return out


def report(res: dict[str, list[str]], *, allow_extra: bool, prog: str) -> bool:
    """Print what differs to stderr (one line each); True when nothing forbids trusting the bundle."""
    for line in res["unsafe"]:
        print(f"UNSAFE   {line}", file=sys.stderr)
    for rel in res["missing"]:
        print(f"MISSING  {rel}", file=sys.stderr)
    for line in res["altered"]:
        print(f"ALTERED  {line}", file=sys.stderr)
    for rel in res["extra"]:
        if allow_extra:
            print(
                f"extra    {rel} (not in the manifest; allowed by --allow-extra, never installed)",
                file=sys.stderr,
            )
        else:
            print(f"EXTRA    {rel}: not in the manifest", file=sys.stderr)
    bad = len(res["unsafe"]) + len(res["missing"]) + len(res["altered"])
    if bad or (res["extra"] and not allow_extra):
        n = bad + len(res["ok"])
        print(
            f"{prog}: {len(res['unsafe'])} unsafe, {len(res['missing'])} missing, "
            f"{len(res['altered'])} altered "
            f"of {n} listed files, {len(res['extra'])} unlisted: copy the bundle again from the source"
            + (
                ""
                if allow_extra or not res["extra"]
                else " (or pass --allow-extra if the unlisted files are yours)"
            ),
            file=sys.stderr,
        )
        return False
    return True


def _wheel_project(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("-")[0]).lower()


def install_requirements(root: Path, manifest: dict[str, Any]) -> list[str]:
    """pip requirement lines naming every listed wheel by its absolute path with its SHA-256 (medix-r1 with
    the bundle's extras). Raises SystemExit when two listed wheels are the same project."""
    extras = ",".join(e for e in manifest.get("extras") or [] if re.fullmatch(r"[A-Za-z0-9_-]+", e))
    seen: dict[str, str] = {}
    lines = []
    for entry in manifest.get("files") or []:
        rel = entry["path"]
        if not (rel.startswith("wheels/") and rel.endswith(".whl") and rel.count("/") == 1):
            continue
        name = rel[len("wheels/") :]
        project = _wheel_project(name)
        if project in seen:
            raise SystemExit(
                f"install.sh: the manifest lists two wheels of {project} ({seen[project]}, {name}): make the "
                "bundle again into a new folder"
            )
        seen[project] = name
        req = f"{project}[{extras}]" if project == "medix-r1" and extras else project
        lines.append(f"{req} @ {(root / rel).resolve().as_uri()} --hash=sha256:{entry['sha256']}")
    if "medix-r1" not in seen:
        raise SystemExit("install.sh: the manifest lists no medix-r1 wheel; make the bundle again")
    return lines


def _check_target(root: Path, manifest: dict[str, Any]) -> None:
    """Refuse a wheelhouse made for another Python or platform before pip says something less clear."""
    want = manifest["target"]["python"]
    have = "{}.{}".format(*sys.version_info[:2])
    if have != want:
        raise SystemExit(
            f"install.sh: this bundle's wheels are for Python {want}, but {sys.executable} is Python {have}: "
            f"run with PYTHON=/path/to/python{want}, or make a bundle with "
            f"`medix bundle create --python {have}`"
        )
    try:
        from pip._vendor.packaging.tags import sys_tags
    except ImportError:
        return  # an unusual pip: let pip itself judge the wheels
    ours = {str(t) for t in sys_tags()}
    bad = []
    for entry in manifest.get("files") or []:
        name = PurePosixPath(entry["path"]).name
        if not (entry["path"].startswith("wheels/") and name.endswith(".whl")):
            continue
        py_, abi, plat = name[:-4].split("-")[-3:]
        if not any(
            f"{a}-{b}-{c}" in ours for a in py_.split(".") for b in abi.split(".") for c in plat.split(".")
        ):
            bad.append(name)
    if bad:
        raise SystemExit(
            f"install.sh: {len(bad)} wheels are for another platform than this machine "
            f"({next(iter(sys_tags()))}), e.g. {bad[0]}: make the bundle with --platform for this machine"
        )


def main(argv: list[str]) -> int:
    """``check ROOT [--allow-extra]``: verify before anything is created; ``install ROOT``: pip-install the
    listed wheels by path and hash into this interpreter (run after ``check``; pip checks each hash again)."""
    mode, root = argv[0], Path(argv[1])
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(
            f"install.sh: {root / MANIFEST} is missing or unreadable ({e}): copy the bundle again"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise SystemExit(f"install.sh: {root / MANIFEST} is not a medix-r1 bundle manifest")
    if mode == "check":
        res = verify_files(root, manifest, progress=sys.stderr.isatty())
        if not report(res, allow_extra="--allow-extra" in argv[2:], prog="install.sh"):
            print("install.sh: refusing to install from a bundle that does not verify", file=sys.stderr)
            return 1
        _check_target(root, manifest)
        return 0
    lines = install_requirements(root, manifest)
    with tempfile.TemporaryDirectory(prefix="medix-install-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--require-hashes",
            "--only-binary=:all:",
        ]
        return subprocess.call([*cmd, "--no-cache-dir", "-r", str(req)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
