"""The bundle's wheelhouse: medix-r1's wheel and every dependency of the chosen extras, for the target Python
and platform, so the offline machine installs with ``pip --no-index`` and never compiles anything.

Three sources: ``pip download --only-binary=:all:`` (from an index, or offline from ``--find-links`` folders
such as a pip wheel cache); a llama-cpp-python wheel built once here with portable CPU flags (PyPI ships only
its source); or the distributions installed in the running environment, re-packed as wheels (for a machine
whose working install is the reference, and for building a bundle with no network at all).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import platform
import re
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from medix_r1.bundle.manifest import BundleError

__all__ = [
    "Target",
    "build_llama_wheel",
    "check_wheelhouse",
    "ensure_medix_wheel",
    "expand_platforms",
    "extras_requirements",
    "host_target",
    "missing_requirements",
    "pip_download",
    "repack_environment",
    "requirement_name",
    "target_environment",
    "wheel_info",
]

# The CMake arguments `medix bundle create` builds llama-cpp-python with, unless --llama-cmake-args says
# otherwise. A bundle is installed on ANOTHER machine, so the build must not depend on this one's CPU
# (GGML_NATIVE=ON, pip's default and what scripts/env.sh builds for the tests, compiles for the build CPU).
# Spelled out, this is exactly what `-DGGML_NATIVE=OFF` alone gives on x86-64 (llama.cpp enables AVX, AVX2,
# FMA, F16C and BMI2 when native is off): any x86-64 CPU from 2013 on (Haswell / Zen), no AVX-512, no AMX
# (whose CPU buffer type crashes; see medix_r1.llm.cpu). OpenMP is llama.cpp's default thread pool, named
# so that medix_r1.llm.cpu's OMP_WAIT_POLICY choice applies. For a CPU without AVX2, add
# -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF; on arm64 the x86 options are ignored.
DEFAULT_LLAMA_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=ON"
)


def _requirement(text: str) -> Any:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors packaging; a bundle is made where pip is
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]
    return Requirement(text)


def requirement_name(text: str) -> str:
    return str(_requirement(text).name)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Target:
    """The Python and platform the wheelhouse is for; ``host`` when that is the machine running this."""

    python: str  # "3.11"
    platforms: list[str] = field(default_factory=list)  # pip --platform values; empty: this machine's
    host: bool = True

    def pip_args(self) -> list[str]:
        if self.host:
            return []
        args = ["--python-version", self.python, "--implementation", "cp"]
        for p in self.platforms:
            args += ["--platform", p]
        return args

    def describe(self) -> str:
        return f"CPython {self.python} on {self.platforms[0] if self.platforms else _host_platform_tags()[0]}"


def _host_platform_tags() -> list[str]:
    """This machine's most specific wheel platform tags (manylinux_X_Y plus linux for a local build)."""
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if sys.platform.startswith("linux"):
        arch = platform.machine()
        libc, ver = platform.libc_ver()
        tags = []
        if libc == "glibc" and ver:
            major, minor = ver.split(".")[:2]
            tags.append(f"manylinux_{major}_{minor}_{arch}")
        tags.append(f"linux_{arch}")
        return tags
    return [plat]


_LEGACY = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}


def expand_platforms(platforms: list[str]) -> list[str]:
    """Each platform tag plus the older ones it can run (pip's --platform takes them literally): a glibc
    2.34 machine runs manylinux_2_34 ... manylinux_2_17/manylinux2014 wheels; musllinux_1_2 runs 1_1."""
    out: list[str] = []
    for tag in platforms:
        m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag)
        legacy = re.fullmatch(r"(manylinux2014|manylinux2010|manylinux1)_(\w+)", tag)
        musl = re.fullmatch(r"musllinux_(\d+)_(\d+)_(\w+)", tag)
        if m or legacy:
            major, minor = (int(m[1]), int(m[2])) if m else _LEGACY[legacy[1]]  # type: ignore[index]
            arch = m[3] if m else legacy[2]  # type: ignore[index]
            tags = [f"manylinux_{major}_{v}_{arch}" for v in range(minor, 4, -1)]
            tags += [f"{name}_{arch}" for name, (_, v) in _LEGACY.items() if major == 2 and v <= minor]
        elif musl:
            tags = [f"musllinux_{musl[1]}_{v}_{musl[3]}" for v in range(int(musl[2]), -1, -1)]
        else:
            tags = [tag]
        out += [t for t in tags if t not in out]
    return out


def host_target(python: str | None = None, platforms: list[str] | None = None) -> Target:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    py = python or here
    if not re.fullmatch(r"3\.\d{1,2}", py):
        raise BundleError(f"--python {py!r}: give a CPython version such as 3.10 or 3.12")
    given = list(platforms or [])
    host = py == here and (not given or set(given) <= set(_host_platform_tags()))
    plats = expand_platforms(given or _host_platform_tags())
    return Target(python=py, platforms=plats, host=host)


def wheel_info(path: Path) -> dict[str, str]:
    """name, version and tags from a wheel's file name (PEP 427)."""
    parts = path.name[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise BundleError(f"{path}: not a wheel file name (name-version-python-abi-platform.whl)")
    return {"name": canonical(parts[0]), "version": parts[1], "tags": "-".join(parts[-3:])}


def _zip_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_wheelhouse(wheels: Path) -> list[str]:
    """Remove wheels a kill left truncated (their zip directory is missing); return their names."""
    bad = []
    for w in sorted(wheels.glob("*.whl")):
        if not _zip_ok(w):
            w.unlink()
            bad.append(w.name)
    for part in wheels.glob("*.part"):
        part.unlink()
    return bad


def extras_requirements(medix_wheel: Path, extras: list[str]) -> list[str]:
    """The requirements medix-r1's wheel declares for ``extras`` (plus the base ones)."""
    with zipfile.ZipFile(medix_wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta_name).decode("utf-8")
    out: list[str] = []
    env_extras = [*extras, ""]
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = _requirement(line.split(":", 1)[1].strip())
        if canonical(req.name) == "medix-r1":
            continue
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in env_extras):
            spec = f"{req.name}{req.specifier}"
            if spec not in out:
                out.append(spec)
    return out


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "rust").is_dir() else None


def ensure_medix_wheel(wheels: Path, given: str | None, *, log: Any) -> Path:
    """medix-r1's own wheel in ``wheels``: the one given, one already there (a resumed run), or built now with
    maturin from the source tree, or re-packed from the installed distribution."""
    if given:
        src = Path(given).expanduser()
        if not src.is_file() or src.suffix != ".whl":
            raise BundleError(f"--medix-wheel {src}: no such wheel file")
        dst = wheels / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _copy_atomic(src, dst)
        return dst
    have = sorted(wheels.glob("medix_r1-*.whl"))
    if have:
        return have[-1]
    root = _source_root()
    if root is not None:
        log(f"building medix-r1's wheel with maturin from {root} (once)")
        cmd = [
            sys.executable,
            "-m",
            "maturin",
            "build",
            "--release",
            "--locked",
            "--quiet",
            "-o",
            str(wheels),
        ]
        try:
            subprocess.run(cmd, cwd=root, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise BundleError(
                f"building medix-r1's wheel failed ({e}); build it yourself (`maturin build --release`) and "
                "pass it with --medix-wheel FILE"
            ) from None
        have = sorted(wheels.glob("medix_r1-*.whl"))
        if have:
            return have[-1]
    try:
        dist = metadata.distribution("medix-r1")
    except metadata.PackageNotFoundError:
        raise BundleError(
            "no medix-r1 wheel: pass one with --medix-wheel FILE (from dist/ or a release)"
        ) from None
    return repack_distribution(dist, wheels)


def _copy_atomic(src: Path, dst: Path) -> None:
    import shutil

    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _pip(args: list[str], *, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    try:
        subprocess.run(cmd, check=True, env=env)
    except FileNotFoundError:
        raise BundleError(f"cannot run pip ({sys.executable} -m pip)") from None
    except subprocess.CalledProcessError as e:
        raise BundleError(
            f"`pip {' '.join(args[:2])} ...` failed (exit {e.returncode}; pip's message is above). Offline? "
            "give --find-links DIR with the wheels (e.g. a wheel cache) and --no-index; for another "
            "Python/platform every dependency must exist as a wheel for it; rerun to resume"
        ) from None


def build_llama_wheel(
    wheels: Path, requirement: str, target: Target, cmake_args: str, *, given: str | None, log: Any
) -> Path | None:
    """A llama-cpp-python wheel in ``wheels``: the one given, one already there, or built here once."""
    if given:
        src = Path(given).expanduser()
        if not src.is_file() or src.suffix != ".whl":
            raise BundleError(f"--llama-wheel {src}: no such wheel file")
        dst = wheels / src.name
        if not dst.is_file():
            _copy_atomic(src, dst)
        return dst
    have = sorted(wheels.glob("llama_cpp_python-*.whl"))
    if have:
        return have[-1]
    if not target.host:
        raise BundleError(
            f"llama-cpp-python has no wheels on PyPI and cannot be built here for {target.describe()}: "
            "build it on a machine like the target "
            "(`CMAKE_ARGS=-DGGML_NATIVE=OFF pip wheel --no-deps llama-cpp-python`) "
            "and pass it with --llama-wheel FILE"
        )
    log(f"building the llama-cpp-python wheel with CMAKE_ARGS={cmake_args!r} (several minutes, once)")
    build = wheels / ".llama-build"
    build.mkdir(exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": cmake_args, "FORCE_CMAKE": "1"}
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back a build for another CPU/GPU.
    args = ["wheel", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", str(build)]
    _pip([*args, requirement], env=env)
    built = sorted(build.glob("llama_cpp_python-*.whl"))
    if not built:
        raise BundleError("pip wheel produced no llama-cpp-python wheel; see pip's output above")
    dst = wheels / built[-1].name
    os.replace(built[-1], dst)
    import shutil

    shutil.rmtree(build, ignore_errors=True)
    return dst


def pip_download(
    wheels: Path,
    medix_wheel: Path,
    extras: list[str],
    target: Target,
    *,
    find_links: list[str],
    no_index: bool,
) -> None:
    """``pip download`` medix-r1[extras] and every dependency as wheels for ``target`` into ``wheels``
    (files already there are reused: that is what makes a rerun resume)."""
    spec = f"{medix_wheel}[{','.join(extras)}]" if extras else str(medix_wheel)
    args = ["download", "--dest", str(wheels), "--only-binary=:all:", "--find-links", str(wheels)]
    for fl in find_links:
        args += ["--find-links", fl]
    if no_index:
        args.append("--no-index")
    _pip([*args, *target.pip_args(), spec])
    top = extras_requirements(medix_wheel, extras)
    for _ in range(5):
        missing = missing_requirements(wheels, top, target)
        if not missing:
            return
        _pip([*args, *target.pip_args(), *missing])
    raise BundleError(f"the wheelhouse still lacks {', '.join(missing)} for {target.describe()}; rerun")


def target_environment(target: Target) -> dict[str, str]:
    """PEP 508 marker variables of the target (pip evaluates markers for the interpreter running it, even
    with --python-version, so the target's own conditional dependencies are found here)."""
    plat = target.platforms[0] if target.platforms else _host_platform_tags()[0]
    if plat.startswith("macosx"):
        sys_platform, system = "darwin", "Darwin"
    elif plat.startswith("win"):
        sys_platform, system = "win32", "Windows"
    else:
        sys_platform, system = "linux", "Linux"
    machine = re.sub(r"^(manylinux_\d+_\d+|musllinux_\d+_\d+|manylinux\d+|linux|macosx_\d+_\d+)_", "", plat)
    machine = {"amd64": "AMD64", "win_amd64": "AMD64"}.get(machine, machine)
    return {
        "python_version": target.python,
        "python_full_version": f"{target.python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": sys_platform,
        "platform_system": system,
        "platform_machine": machine,
        "os_name": "nt" if system == "Windows" else "posix",
    }


def _wheel_requires(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = z.read(meta).decode("utf-8", errors="replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def missing_requirements(wheels: Path, top: list[str], target: Target) -> list[str]:
    """Requirements of the wheelhouse, walked from ``top`` with the markers evaluated for ``target``, that no
    wheel in ``wheels`` provides."""
    env = target_environment(target)
    have = {wheel_info(w)["name"]: w for w in wheels.glob("*.whl")}
    missing: list[str] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(r, ()) for r in top]
    while todo:
        text, ctx = todo.pop()
        req = _requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in (*ctx, "")):
            continue
        name, extras = canonical(req.name), tuple(sorted(req.extras))
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in have:
            missing.append(f"{req.name}{req.specifier}")
            continue
        todo += [(r, extras) for r in _wheel_requires(have[name])]
    return missing


# --- re-packing installed distributions ---------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_tag(dist: metadata.Distribution) -> str:
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise BundleError(
            f"{dist.metadata['Name']}: its install has no WHEEL record (not installed from a wheel); the "
            "bundle cannot re-pack it: use pip download instead (drop --from-env)"
        )
    py, abi, plat = (sorted({t.split("-")[i] for t in tags}) for i in range(3))
    if len(py) * len(abi) * len(plat) == len(tags):
        return f"{'.'.join(py)}-{'.'.join(abi)}-{'.'.join(plat)}"
    return tags[0]


def repack_distribution(dist: metadata.Distribution, out: Path) -> Path:
    """Write an installed distribution back as a wheel (its files as RECORD lists them; console scripts are
    regenerated by pip from entry_points.txt, byte code is left out)."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    dst = out / f"{name}-{version}-{_wheel_tag(dist)}.whl"
    if dst.is_file() and _zip_ok(dst):
        return dst
    files = dist.files
    if files is None:
        raise BundleError(f"{dist.metadata['Name']}: no RECORD in its install; cannot re-pack it")
    info_dir = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info_dir is None:
        raise BundleError(f"{dist.metadata['Name']}: no .dist-info in its RECORD; cannot re-pack it")
    tmp = dst.with_name(dst.name + ".part")
    record_rows: list[tuple[str, str, str]] = []
    skip_info = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for f in files:
            rel = f.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            if f.parts[0] == info_dir and f.name in skip_info:
                continue
            src = Path(str(dist.locate_file(f)))
            if not src.is_file():
                continue
            data = src.read_bytes()
            zi = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = (src.stat().st_mode & 0xFFFF) << 16
            z.writestr(zi, data)
            record_rows.append((rel, _record_hash(data), str(len(data))))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows(record_rows)
        w.writerow((f"{info_dir}/RECORD", "", ""))
        z.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    os.replace(tmp, dst)
    return dst


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``requirements`` need, transitively (markers evaluated for this Python)."""
    seen: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(r, ()) for r in requirements]
    while todo:
        text, extras = todo.pop()
        req = _requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
            continue
        key = canonical(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise BundleError(
                f"{req.name} (needed by the chosen extras) is not installed here; install it or drop "
                "--from-env"
            ) from None
        if dist.version not in req.specifier:
            raise BundleError(f"installed {req.name} {dist.version} does not satisfy {text}; drop --from-env")
        new_extras = tuple(sorted(req.extras))
        if (key, new_extras) in done:
            continue
        done.add((key, new_extras))
        seen[key] = dist
        for sub in dist.requires or []:
            todo.append((sub, new_extras))
    return list(seen.values())


def repack_environment(requirements: list[str], out: Path, *, log: Any) -> list[Path]:
    """Re-pack the installed distributions ``requirements`` need into ``out``; return the wheels."""
    dists = _closure(requirements)
    paths = []
    for i, dist in enumerate(sorted(dists, key=lambda d: canonical(d.metadata["Name"])), 1):
        log(
            f"wheels [{i}/{len(dists)}] {dist.metadata['Name']} {dist.version} "
            "(re-packed from this environment)"
        )
        paths.append(repack_distribution(dist, out))
    return paths
