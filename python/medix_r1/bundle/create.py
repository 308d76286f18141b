"""`medix bundle create`: write one folder that carries models, wheels, an installer and a manifest across an
air gap.

Resumable: models are copied under a temporary name and renamed, the ONNX export goes through a temporary
directory, truncated wheels are detected by their zip directory and fetched again, and the manifest (the
mark of a finished bundle) is written last; a rerun with the same options skips what is already done.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from medix_r1.bundle.manifest import FORMAT, MANIFEST, BundleError, file_entry, write_json_atomic
from medix_r1.bundle.models import describe_model
from medix_r1.bundle.wheels import (
    DEFAULT_LLAMA_CMAKE_ARGS,
    build_llama_wheel,
    canonical,
    check_wheelhouse,
    ensure_medix_wheel,
    extras_requirements,
    host_target,
    pip_download,
    repack_environment,
    requirement_name,
    wheel_info,
)

__all__ = ["KNOWN_EXTRAS", "create_bundle", "render_install_sh"]

KNOWN_EXTRAS = ("judge", "embed", "export", "train", "eval", "gpu")


def _log(msg: str) -> None:
    print(f"medix bundle: {msg}", file=sys.stderr, flush=True)


def _copy_file(src: Path, dst: Path) -> bool:
    """Copy unless an equal-sized copy is already there (a resumed run); False when skipped."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def _copy_tree(src: Path, dst: Path) -> bool:
    if dst.is_dir():
        return False
    tmp = dst.with_name(dst.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".git", "__pycache__", ".cache"))
    os.replace(tmp, dst)
    return True


def _add_model(out: Path, role: str, src_arg: str, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    src = Path(src_arg).expanduser().resolve()
    info = describe_model(src, role)
    for other in done.values():  # the same file as judge and policy: carried once
        if other["source"] == str(src):
            return {**other}
    entry: dict[str, Any] = {"kind": info["kind"], "source": str(src), "license": info["license"]}
    if src.is_dir() and (src / "export.json").is_file() and info["kind"] == "gguf":
        # A `medix export` folder: carried whole (GGUF, mmproj, export.json); the role points at the model.
        from medix_r1.export.policy import policy_files

        dst_dir = out / "models" / role / src.name
        copied = _copy_tree(src, dst_dir)
        _log(f"{role}: {'copying' if copied else 'already there:'} {src.name}/ (medix export)")
        dst = Path(policy_files(dst_dir)[0])
        entry["export"] = info.get("export")
    elif info["kind"] == "gguf":
        dst = out / "models" / role / src.name
        _log(f"{role}: {'copying' if _copy_file(src, dst) else 'already there:'} {src.name}")
    elif role == "embed" and info["kind"] == "checkpoint":
        dst = out / "models" / role / f"{src.name}-onnx"
        if (dst / "model.onnx").is_file() and (dst / "medix_embed.json").is_file():
            _log(f"embed: already exported: {dst.name}")
        else:
            _log(f"embed: exporting the checkpoint {src} to ONNX (checked against torch)")
            try:
                from medix_r1.embed.export import export_onnx
            except ImportError as e:
                raise BundleError(
                    f"exporting {src} to ONNX needs the export extra ({e}): pip install 'medix-r1[export]', "
                    "or give an ONNX directory made by `medix embed export`"
                ) from None
            export_onnx(src, dst)
        entry["kind"] = "onnx"
        entry["exported_from"] = str(src)
    else:
        dst = out / "models" / role / src.name
        _log(f"{role}: {'copying' if _copy_tree(src, dst) else 'already there:'} {src.name}/")
    entry["path"] = dst.relative_to(out).as_posix()
    return entry


def _add_llama_sdist(
    tools: Path, wheels: Path, given: str | None, find_links: list[str] | None = None
) -> Path:
    """The llama-cpp-python sdist in ``tools``: the one given, one already there, or fetched from a
    --find-links folder or the package index and checked against its SHA-256 (the version of the carried
    llama-cpp-python wheel, else the installed one, so converter and runtime match)."""
    tools.mkdir(exist_ok=True)
    if given:
        src = Path(given).expanduser()
        if not (src.is_file() and src.name.startswith("llama_cpp_python-") and src.name.endswith(".tar.gz")):
            raise BundleError(f"--llama-sdist {src}: not a llama_cpp_python-X.tar.gz file")
        dst = tools / src.name
        _log(f"tools: {'copying' if _copy_file(src, dst) else 'already there:'} {src.name}")
        return dst
    have = sorted(tools.glob("llama_cpp_python-*.tar.gz"))
    if have:
        return have[-1]
    from importlib.metadata import PackageNotFoundError, version

    from medix_r1.export.llama import ConverterError, fetch_sdist

    whl = sorted(wheels.glob("llama_cpp_python-*.whl"))
    try:
        ver = wheel_info(whl[-1])["version"] if whl else version("llama-cpp-python")
    except PackageNotFoundError:
        raise BundleError(
            "which llama-cpp-python source distribution to carry is not known (no llama-cpp-python wheel "
            "in the bundle, none installed); give one with --llama-sdist FILE"
        ) from None
    try:
        return fetch_sdist(tools, ver, find_links=list(find_links or []), log=lambda m: _log(f"tools: {m}"))
    except ConverterError as e:
        raise BundleError(str(e)) from None


def _template(name: str, values: dict[str, str]) -> str:
    text = resources.files("medix_r1.bundle").joinpath(name).read_text(encoding="utf-8")
    # One pass: a value that contains "@X@" (the checker's source) is not substituted again.
    return re.sub(r"@([A-Z_]+)@", lambda m: values.get(m[1], m[0]), text)


def render_install_sh(values: dict[str, str]) -> str:
    """install.sh with the bundle checker (`medix_r1.bundle.standalone`, stdlib only) pasted in."""
    src = resources.files("medix_r1.bundle").joinpath("standalone.py").read_text(encoding="utf-8")
    return _template("install.sh.in", {**values, "STANDALONE": src})


def _write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def create_bundle(
    out: str | Path,
    *,
    judge: str | None = None,
    embed: str | None = None,
    policy: str | None = None,
    extras: list[str] | None = None,
    python: str | None = None,
    platforms: list[str] | None = None,
    llama_cmake_args: str | None = None,
    medix_wheel: str | None = None,
    llama_wheel: str | None = None,
    find_links: list[str] | None = None,
    no_index: bool = False,
    from_env: bool = False,
    llama_sdist: str | None = None,
) -> dict[str, Any]:
    """Write (or finish) the bundle in ``out``; return its manifest. With the ``export`` extra (or
    ``llama_sdist``) ``tools/`` carries the llama-cpp-python source distribution, whose llama.cpp converters
    ``medix export --bundle`` uses offline."""
    t0 = time.perf_counter()
    extras = list(extras if extras is not None else ["judge", "embed"])
    unknown = [e for e in extras if e not in KNOWN_EXTRAS]
    if unknown:
        raise BundleError(f"--extras: unknown {', '.join(unknown)}; choose from {', '.join(KNOWN_EXTRAS)}")
    target = host_target(python, platforms)
    if from_env and not target.host:
        raise BundleError(
            "--from-env re-packs this machine's install: it cannot target another Python/platform"
        )
    root = Path(out).expanduser().resolve()
    if root.is_file():
        raise BundleError(f"--out {root} is a file; give a directory")
    # Check every model before any copying, so a wrong path fails in a second, not after the wheels.
    given = [(role, src) for role, src in (("judge", judge), ("embed", embed), ("policy", policy)) if src]
    for role, src in given:
        describe_model(src, role)
    ours = {"models", "wheels", "tools", "install.sh", "README.md", MANIFEST}
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise BundleError(
                f"--out {root} already holds other files ({', '.join(foreign[:3])}); give a new or empty "
                "directory (or an unfinished bundle to resume)"
            )
    root.mkdir(parents=True, exist_ok=True)
    # The manifest marks a finished bundle: a rerun that changes it must not leave the old one claiming so.
    (root / MANIFEST).unlink(missing_ok=True)
    models: dict[str, dict[str, Any]] = {}
    for role, src in given:
        models[role] = _add_model(root, role, src, models)

    wheels = root / "wheels"
    wheels.mkdir(exist_ok=True)
    bad = check_wheelhouse(wheels)
    if bad:
        _log(f"removed {len(bad)} truncated wheels left by an interrupted run: {', '.join(bad)}")
    medix_whl = ensure_medix_wheel(wheels, medix_wheel, log=_log)
    reqs = extras_requirements(medix_whl, extras)
    cmake = llama_cmake_args or DEFAULT_LLAMA_CMAKE_ARGS
    if from_env:
        repack_environment(reqs, wheels, log=_log)
        if "judge" in extras:
            _log(
                "note: llama-cpp-python is carried as built here; a build with GGML_NATIVE (pip's default) "
                "may need this CPU's features on the target too (`medix doctor` there says so)"
            )
    else:
        llama_req = next((r for r in reqs if canonical(requirement_name(r)) == "llama-cpp-python"), None)
        in_links = any(Path(d).expanduser().glob("llama_cpp_python-*.whl") for d in find_links or [])
        if llama_req and not in_links:
            build_llama_wheel(wheels, llama_req, target, cmake, given=llama_wheel, log=_log)
        _log(f"wheels: pip download for {target.describe()}, extras {','.join(extras) or '(none)'}")
        pip_download(wheels, medix_whl, extras, target, find_links=list(find_links or []), no_index=no_index)
    if bad := check_wheelhouse(wheels):
        raise BundleError(f"pip left truncated wheels ({', '.join(bad)}); rerun to fetch them again")
    if llama_sdist or "export" in extras:
        _add_llama_sdist(root / "tools", wheels, llama_sdist, find_links)

    versions = {}
    for w in sorted(wheels.glob("*.whl")):
        info = wheel_info(w)
        versions[info["name"]] = info["version"]
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    values = {
        "VERSION": versions.get("medix-r1", "?"),
        "CREATED": created,
        "TARGET": target.describe(),
        "EXTRAS": ",".join(extras),
        "NWHEELS": str(len(versions)),
        "MODELS": "\n".join(
            f"- `{m['path']}`: the {role} ({m['kind']}; license {m['license'] or 'not declared'})"
            for role, m in models.items()
        )
        or "- (no models)",
    }
    _write_text_atomic(root / "install.sh", render_install_sh(values), 0o755)
    _write_text_atomic(root / "README.md", _template("README.md.in", values))

    for p in sorted(root.rglob("*"), reverse=True):  # leftovers of a kill in an earlier run
        if p.name.endswith(".part") or ".tmp-" in p.name or p.name == ".llama-build":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = []
    total = sum(p.stat().st_size for p in files)
    done_bytes = 0
    tty = sys.stderr.isatty()
    for i, p in enumerate(files, 1):
        if tty:
            print(
                f"\rmedix bundle: hashing [{i}/{len(files)}] "
                f"{done_bytes / 2**20:.0f}/{total / 2**20:.0f} MiB",
                end="",
                file=sys.stderr,
                flush=True,
            )
        entries.append(file_entry(root, p))
        done_bytes += p.stat().st_size
    if tty:
        print(file=sys.stderr)
    manifest = {
        "format": FORMAT,
        "created": created,
        "medix_r1": versions.get("medix-r1"),
        "target": {"python": target.python, "platforms": target.platforms, "implementation": "cp"},
        "extras": extras,
        "llama_cmake_args": None if from_env else cmake,
        "wheel_source": "installed environment (re-packed)" if from_env else "pip download",
        "models": models,
        "versions": versions,
        "files": entries,
        "total_bytes": total,
    }
    write_json_atomic(root / MANIFEST, manifest)
    _log(
        f"done: {root} ({len(entries)} files, {total / 2**20:.0f} MiB, {len(versions)} wheels) in "
        f"{time.perf_counter() - t0:.0f}s; on the offline machine: bash {root.name}/install.sh --venv DIR"
    )
    return manifest
