"""`medix doctor`: what this machine can do for medix-r1 and what is wrong, each problem with its fix.

Most checks are cheap: files are read (the ONNX embedder is opened in a session, a GGUF's header is parsed),
and torch is imported only when it is installed, for the GPU facts only it knows. Each configured GGUF (the
bundle's judge and policy, ``--judge-model``, ``--policy``) gets the llama.cpp self-test: opened in a child
process the way medix opens it, with one batched decode (medix_r1.llm.cpu.canary); a crash is reported with
its signal, cause and fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medix_r1.errors import MedixError

__all__ = ["Check", "estimate_train_memory", "render", "run_checks"]

# The packages whose versions matter, and the extra that brings each.
PACKAGES = {
    "torch": "train",
    "transformers": "train",
    "trl": "train",
    "unsloth": "gpu",
    "bitsandbytes": "gpu",
    "llama-cpp-python": "judge",
    "fastembed": "embed",
    "onnxruntime": "embed",
}
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False  # a failed required check makes `medix doctor` exit non-zero


def _requirement(text: str) -> Any:
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]
    return Requirement(text)


def supported_ranges() -> dict[str, tuple[str, str]]:
    """package -> (version specifier, extra) as medix-r1 declares them (installed metadata, else the source
    tree's pyproject.toml). The tightest declaration wins when several extras name a package."""
    try:
        reqs = metadata.requires("medix-r1") or []
    except metadata.PackageNotFoundError:
        reqs = _pyproject_requirements()
    out: dict[str, tuple[str, str]] = {}
    for line in reqs:
        try:
            req = _requirement(line)
        except Exception:  # an unparsable line in a hand-edited pyproject: skip it, do not fail the doctor
            continue
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)", str(req.marker or ""))
        extra = m.group(1) if m else ""
        name = req.name.lower()
        if name in PACKAGES and extra != "all" and len(str(req.specifier)) >= len(out.get(name, ("", ""))[0]):
            out[name] = (str(req.specifier), extra)
    return out


def _pyproject_requirements() -> list[str]:
    root = Path(__file__).resolve().parents[2]
    pp = root / "pyproject.toml"
    if not pp.is_file():
        return []
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return []
    data = tomllib.loads(pp.read_text(encoding="utf-8"))
    project = data.get("project", {})
    out = list(project.get("dependencies", []))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out += [f"{r}; extra == '{extra}'" for r in reqs]
    return out


def _python() -> Check:
    v = sys.version_info
    impl, ver = platform.python_implementation(), platform.python_version()
    detail = f"{impl} {ver} on {platform.system()} {platform.machine()}"
    if v < (3, 10):
        return Check("python", False, detail, "medix-r1 needs Python >= 3.10", required=True)
    return Check("python", True, detail)


def _cpu_flags() -> tuple[set[str], str]:
    from medix_r1.llm.cpu import read_cpu  # /proc/cpuinfo, or the file MEDIX_CPUINFO names

    info = read_cpu()
    return set(info.flags), info.model


def _cpu() -> Check:
    from medix_r1.llm.cpu import read_cpu

    info = read_cpu()
    flags, model, machine = info.flags, info.model, info.machine
    feats = info.features()
    detail = f"{model or machine}, {os.cpu_count()} threads; {', '.join(feats) or 'no AVX2/AVX-512/NEON'}"
    if info.x86 and flags and "avx2" not in flags:
        return Check(
            "cpu",
            False,
            detail,
            "no AVX2: llama.cpp runs, slowly; build llama-cpp-python with -DGGML_NATIVE=OFF",
        )
    return Check("cpu", True, detail)


def _llama_build(needed: bool) -> Check:
    try:
        from medix_r1.llm.cpu import prepare_runtime

        prepare_runtime()  # the OpenMP wait policy is read when llama_cpp loads
        import llama_cpp
    except ImportError:
        return Check(
            "llama.cpp",
            not needed,
            "llama-cpp-python is not installed",
            "pip install 'medix-r1[judge]' (or bash BUNDLE/install.sh)",
            required=needed,
        )
    except Exception as e:  # a wheel built for other CPU features can fail at load with an OS error
        return Check(
            "llama.cpp",
            False,
            f"llama_cpp does not load: {e}",
            "rebuild llama-cpp-python for this CPU: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install "
            "--force-reinstall --no-binary llama-cpp-python llama-cpp-python",
            required=True,
        )
    info = llama_cpp.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    on = sorted({m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1", text)})
    flags, _ = _cpu_flags()
    missing = []
    if "AVX512" in on and flags and "avx512f" not in flags:
        missing.append("AVX-512")
    if "AVX2" in on and flags and "avx2" not in flags:
        missing.append("AVX2")
    version = getattr(llama_cpp, "__version__", "?")
    detail = f"llama-cpp-python {version}; build uses: {', '.join(on) or text.strip()[:120]}"
    if missing:
        return Check(
            "llama.cpp",
            False,
            detail + f"; this CPU lacks {', '.join(missing)}",
            (
                'rebuild llama-cpp-python with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF '
                '-DGGML_F16C=OFF" (medix bundle create --llama-cmake-args ...)'
                if "AVX2" in missing
                else "rebuild llama-cpp-python with CMAKE_ARGS=-DGGML_NATIVE=OFF (medix bundle create does)"
            ),
            required=True,
        )
    return Check("llama.cpp", True, detail)


def llama_cpu_path() -> dict[str, Any] | None:
    """How medix runs llama.cpp on this CPU (extra buffers, threads, wait policy, and why), or None when
    llama_cpp does not import."""
    from medix_r1.llm.cpu import cpu_plan, prepare_runtime

    try:
        threads = prepare_runtime()
        plan = cpu_plan()
    except Exception:  # llama_cpp missing or broken: the llama.cpp check says so
        return None
    return {
        **plan.as_dict(),
        "path": plan.path,
        "threads": threads.n_threads,
        "omp_wait_policy": threads.wait_policy,
        "threads_reason": threads.reason,
    }


def _cpu_path_check(info: dict[str, Any]) -> Check:
    eb = "on" if info["extra_buffers"] else "off"
    return Check(
        "llama.cpp cpu path",
        True,
        f"extra CPU buffers {eb} (--llama-extra-buffers {info['requested']}: {info['reason']}); "
        f"{info['threads']} threads, OMP_WAIT_POLICY={info['omp_wait_policy']} ({info['threads_reason']})",
    )


def self_test(role: str, path: Path) -> tuple[Check, dict[str, Any]]:
    """The llama.cpp self-test of one GGUF in a child process (run afresh; an ok refreshes the cache)."""
    from medix_r1.llm.cpu import canary, cpu_plan

    try:
        plan = cpu_plan()
        res = canary(path, extra_buffers=plan.extra_buffers, use_cache=False)
    except MedixError as e:
        return Check(f"self-test {role}", False, str(e), "see the message", required=True), {
            "role": role,
            "model": str(path),
            "ok": False,
            "cause": str(e),
        }
    check = Check(f"self-test {role}", res.ok, f"{path.name}: {res.line()}", res.fix, required=True)
    return check, {"role": role, **res.as_dict()}


def _ram() -> Check:
    total = avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k == "MemTotal":
                total = int(v.split()[0]) * 1024
            elif k == "MemAvailable":
                avail = int(v.split()[0]) * 1024
    except OSError:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if total is None:
        return Check("ram", True, "unknown")
    detail = f"{total / 2**30:.1f} GiB" + (
        f", {avail / 2**30:.1f} GiB available" if avail is not None else ""
    )
    if avail is not None and avail < 2 * 2**30:
        return Check(
            "ram", False, detail, "under 2 GiB free: close other programs; a 7B GGUF judge needs ~5 GiB"
        )
    return Check("ram", True, detail)


def _nvidia_smi(query: str) -> str:
    """nvidia-smi's answer (CSV, no header) to ``--query-gpu=QUERY``; "" when it gives none."""
    import subprocess

    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _gpu() -> Check:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        import shutil

        if shutil.which("nvidia-smi"):
            q = _nvidia_smi("name,driver_version,memory.free")
            return Check("gpu", True, f"torch not installed; nvidia-smi: {q or 'no answer'}")
        return Check("gpu", True, "no NVIDIA GPU seen (torch not installed, no nvidia-smi); CPU only")
    import torch

    if not torch.cuda.is_available():
        import shutil

        if shutil.which("nvidia-smi"):
            return Check(
                "gpu",
                False,
                f"nvidia-smi is there but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU",
                "install a torch build for the CUDA version the driver supports (nvidia-smi shows it)",
            )
        return Check("gpu", True, f"torch {torch.__version__}: no CUDA GPU visible; CPU only")
    parts = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        name = torch.cuda.get_device_name(i)
        parts.append(f"{i}: {name}, {free / 2**30:.1f}/{total / 2**30:.1f} GiB free")
    bf16 = torch.cuda.is_bf16_supported()
    driver = _nvidia_smi("driver_version").split("\n")[0]
    detail = (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, driver {driver or '?'}; "
        f"bf16 {'yes' if bf16 else 'no'}; " + "; ".join(parts)
    )
    return Check("gpu", True, detail)


def _versions(needed_extras: set[str]) -> list[Check]:
    ranges = supported_ranges()
    out = []
    for name, extra in PACKAGES.items():
        spec, ext = ranges.get(name, ("", extra))
        needed = ext in needed_extras
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(
                Check(
                    f"package {name}",
                    not needed,
                    f"not installed (extra {ext}{'; this bundle needs it' if needed else ''})",
                    f"pip install 'medix-r1[{ext}]'" + (" (or bash BUNDLE/install.sh)" if needed else ""),
                    required=needed,
                )
            )
            continue
        if spec and have not in _requirement(f"{name}{spec}").specifier:
            out.append(
                Check(
                    f"package {name}",
                    False,
                    f"{have} installed, medix-r1 supports {spec}",
                    f"pip install '{name}{spec}'",
                    required=True,
                )
            )
        else:
            out.append(Check(f"package {name}", True, f"{have} (supported {spec or 'any'})"))
    return out


def _offline() -> Check:
    unset = [v for v in OFFLINE_VARS if os.environ.get(v) != "1"]
    detail = ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in OFFLINE_VARS)
    if unset:
        return Check(
            "offline",
            False,
            detail,
            "export " + " ".join(f"{v}=1" for v in OFFLINE_VARS) + " (never reach a hub)",
        )
    return Check("offline", True, detail)


def _bundle_checks(bundle: str) -> tuple[list[Check], dict[str, Path], set[str]]:
    from medix_r1.bundle import read_manifest

    root = Path(bundle).expanduser()
    try:
        data = read_manifest(root)
    except MedixError as e:
        return [Check("bundle", False, str(e), "see the message", required=True)], {}, set()
    checks = []
    wrong_size = []
    missing = []
    for f in data["files"]:
        p = root / f["path"]
        if not p.is_file():
            missing.append(f["path"])
        elif p.stat().st_size != f["size"]:
            wrong_size.append(f["path"])
    made = f"made {data.get('created')} for Python {data['target']['python']}"
    detail = f"{root}: {len(data['files'])} files, {made}"
    if missing or wrong_size:
        names = ", ".join((missing + wrong_size)[:3])
        checks.append(
            Check(
                "bundle",
                False,
                f"{detail}; {len(missing)} missing, {len(wrong_size)} of the wrong size: {names}",
                f"copy those files again, then `medix bundle verify {root}`",
                required=True,
            )
        )
    else:
        checks.append(
            Check("bundle", True, detail + " (sizes match; `medix bundle verify` checks the hashes)")
        )
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if data["target"]["python"] != here:
        checks.append(
            Check(
                "bundle python",
                False,
                f"the wheels are for Python {data['target']['python']}, this is {here}",
                f"use Python {data['target']['python']}, or make a bundle with --python {here}",
                required=False,
            )
        )
    from medix_r1.bundle import bundle_models

    models = bundle_models(root, must_exist=False)
    return checks, models, set(data.get("extras") or [])


def _model_check(role: str, path: Path) -> Check:
    from medix_r1.bundle.models import describe_model

    try:
        info = describe_model(path, role, load=True)
    except MedixError as e:
        return Check(f"model {role}", False, str(e), "give the right file, or copy it again", required=True)
    except OSError as e:
        return Check(f"model {role}", False, f"{path}: {e}", "check the file's permissions", required=True)
    lic = f"; license {info['license']}" if info.get("license") else ""
    return Check(f"model {role}", True, f"{path}: {info['detail']}{lic}")


def estimate_train_memory(config_path: str) -> Check:
    """Peak GPU memory of a training run, roughly: weights (bf16, or 4 bit with QLoRA) + LoRA's trainable
    parameters with fp32 AdamW states (16 bytes each) + activations (34·hidden bytes per token per layer,
    Korthikanti et al. 2022, or 2·hidden with gradient checkpointing) + fp32 logits of one micro-batch."""
    from medix_r1.train.config import load_config

    try:
        cfg = load_config(config_path)
    except MedixError as e:
        return Check("train memory", False, str(e), "fix the config", required=True)
    mpath = Path(cfg.model.path).expanduser()
    conf_file = mpath / "config.json"
    if not conf_file.is_file():
        return Check(
            "train memory", True, f"not estimated: {mpath} is not a checkpoint directory with config.json"
        )
    c = json.loads(conf_file.read_text())
    c = c.get("text_config", c)
    h, layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
    inter = c.get("intermediate_size") or 4 * (h or 0)
    if not (h and layers and vocab):
        return Check("train memory", True, "not estimated: config.json lacks hidden_size/num_hidden_layers")
    params = layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h
    qlora = bool(cfg.lora.load_in_4bit) and cfg.lora.enabled
    weights = params * (0.56 if qlora else 2)
    trainable = layers * 7 * cfg.lora.r * (h + inter) if cfg.lora.enabled else params
    optim = trainable * 16
    seqs = cfg.algo.num_generations * max(1, getattr(cfg.train, "prompts_per_step", 1) or 1)
    tokens = seqs * cfg.model.max_seq_length
    per_layer = 2 * h if cfg.train.gradient_checkpointing else 34 * h
    acts = tokens * layers * per_layer
    logits = tokens * vocab * 4 * 2
    total = weights + optim + acts + logits
    kind = "4-bit" if qlora else "bf16"
    detail = (
        f"~{total / 2**30:.1f} GiB for {params / 1e9:.2f}B parameters ({kind} weights "
        f"{weights / 2**30:.1f} GiB, optimizer {optim / 2**30:.1f}, activations {acts / 2**30:.1f}, "
        f"logits {logits / 2**30:.1f}; {seqs} sequences of {cfg.model.max_seq_length} tokens); "
        "a rough upper bound"
    )
    return Check("train memory", True, detail)


def run_checks(
    bundle: str | None = None,
    config: str | None = None,
    *,
    gpu: bool = True,
    ggufs: dict[str, str | Path] | None = None,
    report: dict[str, Any] | None = None,
) -> list[Check]:
    """Every check. ``ggufs`` (role -> .gguf, e.g. ``--judge-model``) get the llama.cpp self-test, as do the
    bundle's judge and policy GGUFs; ``report``, when given, receives ``llama_cpu`` (the CPU path chosen)
    and ``self_tests`` (each result) for ``--json``."""
    checks = [_python(), _cpu()]
    models: dict[str, Path] = {}
    extras: set[str] = set()
    bundle_checks: list[Check] = []
    if bundle:
        bundle_checks, models, extras = _bundle_checks(bundle)
    build = _llama_build("judge" in extras or bool(ggufs))
    checks.append(build)
    path = llama_cpu_path() if build.ok and "not installed" not in build.detail else None
    if path is not None:
        checks.append(_cpu_path_check(path))
    if report is not None:
        report["llama_cpu"] = path
        report["self_tests"] = []
    checks.append(_ram())
    if gpu:
        checks.append(_gpu())
    checks += _versions(extras)
    checks += bundle_checks
    for role, p in models.items():
        checks.append(_model_check(role, p))
    tests = {r: p for r, p in models.items() if p.suffix == ".gguf" and p.is_file()}
    tests.update({r: Path(p).expanduser() for r, p in (ggufs or {}).items() if p})
    for role, p in tests.items():
        if path is None:
            break  # no llama.cpp to test with: its check says why
        if not p.is_file():
            checks.append(
                Check(f"self-test {role}", False, f"{p}: no such file", "give the right file", True)
            )
            continue
        check, result = self_test(role, p)
        checks.append(check)
        if report is not None:
            report["self_tests"].append(result)
    checks.append(_offline())
    if config:
        checks.append(estimate_train_memory(config))
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        tag = (
            ("--  " if c.detail.startswith("not installed") else "ok  ")
            if c.ok
            else ("FAIL" if c.required else "warn")
        )
        lines.append(f"{tag} {c.name:<26} {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"     {'':<26} fix: {c.fix}")
    bad = [c for c in checks if not c.ok and c.required]
    lines.append(
        "medix doctor: "
        + ("everything needed is there" if not bad else f"{len(bad)} needed things are missing")
    )
    return "\n".join(lines)


def to_json(checks: list[Check], report: dict[str, Any] | None = None) -> str:
    ok = not any(not c.ok and c.required for c in checks)
    return json.dumps({"ok": ok, "checks": [asdict(c) for c in checks], **(report or {})}, indent=2)
