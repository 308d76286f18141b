"""How llama.cpp runs on the CPU it meets: the one place that decides, and the one function that opens a GGUF.

Three decisions, each logged once per process (one line on stderr and in the ``medix_r1.llm.cpu`` logger):

* **Extra CPU buffer types** (llama.cpp's ``llama_model_params.use_extra_bufts``: repacked weights for the
  AVX2/AVX-512 kernels, and the AMX buffer type). They are the fast path on ordinary x86-64 CPUs and stay on
  there; on a CPU with Intel AMX (``amx_int8``/``amx_tile`` in /proc/cpuinfo, or ``AMX_INT8 = 1`` in
  llama.cpp's build) the AMX buffer type segfaults in the first batched decode (llama.cpp's open issue
  "segfault in ggml_backend_amx_mul_mat"), so ``auto`` turns them off there. ``--llama-extra-buffers
  auto|on|off`` on every command that opens a GGUF, ``MEDIX_LLAMA_EXTRA_BUFFERS`` and ``llama_extra_buffers:``
  in a YAML judge/backend section force it (command line / environment first, then the file).
* **Threads and the OpenMP wait policy** (:func:`choose_threads`), from the cores this process may use
  (``os.sched_getaffinity``) and how many of them other processes keep busy (the load average): on a loaded
  machine fewer threads and ``OMP_WAIT_POLICY=PASSIVE`` (spinning threads then steal the cores the others
  need; 6-42 s per judge request became 0.1 s with 4 runnable processes on 2 cores), else all free cores and
  the default active wait. The wait policy is read once, when llama.cpp's OpenMP runtime loads (at
  ``import llama_cpp``): :func:`prepare_runtime` sets it before that import; an ``OMP_WAIT_POLICY`` the user
  set is kept.
* **A canary** (:func:`canary`): before a process opens a GGUF in-process for the first time with given
  settings, a child process opens it the same way and runs one batched decode. A crash there (SIGSEGV,
  SIGILL, SIGABRT) becomes a one-line :class:`LlamaCrashError` naming the cause and the fix instead of killing
  the caller (a trainer, ``medix judge serve``). An ``ok`` is cached per llama.cpp build, model file and
  settings under ``$MEDIX_CACHE/canary`` (default ``~/.cache/medix-r1``), so it costs one child per machine.

Every GGUF the project opens goes through :func:`open_llama`. The CPU description is read from
/proc/cpuinfo, or from the file ``MEDIX_CPUINFO`` names (tests fake CPUs with it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medix_r1.errors import BackendError, ConfigError

__all__ = [
    "ENV_CPUINFO",
    "ENV_EXTRA_BUFFERS",
    "EXTRA_BUFFERS",
    "CanaryResult",
    "CpuInfo",
    "CpuPlan",
    "LlamaCrashError",
    "ThreadPlan",
    "add_llama_cpu_option",
    "build_features",
    "build_identity",
    "canary",
    "choose_threads",
    "decide_extra_buffers",
    "ensure_canary",
    "open_llama",
    "prepare_runtime",
    "read_cpu",
    "runtime_env",
]

log = logging.getLogger(__name__)

EXTRA_BUFFERS = ("auto", "on", "off")
ExtraBuffers = Literal["auto", "on", "off"]
ENV_CPUINFO = "MEDIX_CPUINFO"
ENV_EXTRA_BUFFERS = "MEDIX_LLAMA_EXTRA_BUFFERS"
ENV_NO_CANARY = "MEDIX_LLAMA_CANARY"  # "0": skip the canary (the canary's own child sets it)
AMX_FLAGS = ("amx_int8", "amx_tile", "amx_bf16")
REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir --no-binary '
    "llama-cpp-python llama-cpp-python"
)


class LlamaCrashError(BackendError):
    """llama.cpp crashed (a signal) opening or decoding a model in the canary child; the message names the
    signal, the cause as far as known and the fix."""


# -- the CPU and the build -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo (or ``MEDIX_CPUINFO``) says: the model name, the machine and the feature flags."""

    model: str
    machine: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def amx(self) -> bool:
        return any(f in self.flags for f in AMX_FLAGS)

    def features(self) -> list[str]:
        """The features that matter to llama.cpp, in words (AVX2, AVX-512, AMX, NEON)."""
        f, out = self.flags, []
        if "avx2" in f:
            out.append("AVX2")
        if "avx512f" in f:
            out.append("AVX-512")
        if self.amx:
            out.append("AMX")
        if "asimd" in f or "neon" in f or self.machine in ("arm64", "aarch64"):
            out.append("NEON")
        return out

    @property
    def x86(self) -> bool:
        return self.machine in ("x86_64", "amd64", "i686", "i386")


def read_cpu(cpuinfo: str | Path | None = None, *, machine: str | None = None) -> CpuInfo:
    """The CPU this process runs on: ``cpuinfo`` (a file in /proc/cpuinfo's format), else the file
    ``$MEDIX_CPUINFO`` names, else /proc/cpuinfo. ``machine`` defaults to ``platform.machine()``, or to
    aarch64 for a cpuinfo with ARM ``Features``."""
    src = cpuinfo or os.environ.get(ENV_CPUINFO) or "/proc/cpuinfo"
    try:
        text = Path(src).read_text(errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    model = ""
    arm = False
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(val.split())
            arm = key == "Features"
        if key in ("model name", "CPU part") and not model:
            model = val.strip()
    if machine is None:
        machine = "aarch64" if (cpuinfo or os.environ.get(ENV_CPUINFO)) and arm else platform.machine()
    return CpuInfo(model or platform.processor() or machine, machine.lower(), frozenset(flags))


def _system_info() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode(errors="replace") if isinstance(info, bytes) else str(info)


def build_features(system_info: str | None = None) -> frozenset[str]:
    """The features llama.cpp was built with (``AVX2``, ``AMX_INT8``, ``OPENMP``, ``REPACK``...), from
    ``llama_print_system_info()`` (imports llama_cpp: call :func:`prepare_runtime` first)."""
    text = _system_info() if system_info is None else system_info
    return frozenset(m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1", text))


def build_identity() -> str:
    """A short id of the installed llama.cpp build (llama-cpp-python's version plus the size and mtime of its
    shared libraries), without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return "none"
    root = Path(spec.origin).parent
    parts = []
    try:
        from importlib import metadata

        parts.append(metadata.version("llama-cpp-python"))
    except Exception:  # a source checkout without metadata: the libraries alone identify the build
        parts.append("?")
    for lib in sorted(root.glob("lib/*")):
        if lib.is_file():
            st = lib.stat()
            parts.append(f"{lib.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# -- extra buffer types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuPlan:
    """Whether llama.cpp's extra CPU buffer types are used, as asked and as decided, and why."""

    extra_buffers: bool
    requested: str
    reason: str
    cpu: CpuInfo
    build: frozenset[str]

    @property
    def path(self) -> str:
        """The CPU path in a few words, e.g. ``AVX2, repacked weights``."""
        feats = ", ".join(self.cpu.features()) or "no AVX2/NEON"
        return f"{feats}; llama.cpp extra buffers {'on' if self.extra_buffers else 'off'}"

    def line(self) -> str:
        build = ",".join(sorted(f for f in self.build if f.startswith(("AVX", "AMX", "NEON", "SVE")))) or "?"
        return (
            f"llama.cpp on {self.cpu.model} ({', '.join(self.cpu.features()) or 'no AVX2/NEON'}; build "
            f"{build}): extra CPU buffers {'on' if self.extra_buffers else 'off'} "
            f"(--llama-extra-buffers {self.requested}: {self.reason})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "extra_buffers": self.extra_buffers,
            "requested": self.requested,
            "reason": self.reason,
            "cpu": self.cpu.model,
            "cpu_features": self.cpu.features(),
            "build": sorted(self.build),
        }


def _check_choice(value: str, where: str) -> str:
    v = str(value).strip().lower()
    if v not in EXTRA_BUFFERS:
        raise ConfigError(
            f"{where} must be one of {', '.join(EXTRA_BUFFERS)}, got {value!r}",
            key=where,
            value=value,
            allowed="|".join(EXTRA_BUFFERS),
        )
    return v


def requested_extra_buffers(configured: str | None = None) -> str:
    """The setting in force: ``$MEDIX_LLAMA_EXTRA_BUFFERS`` (what ``--llama-extra-buffers`` sets) when not
    ``auto``, else ``configured`` (a YAML ``llama_extra_buffers``), else ``auto``."""
    env = os.environ.get(ENV_EXTRA_BUFFERS, "").strip()
    if env:
        v = _check_choice(env, ENV_EXTRA_BUFFERS)
        if v != "auto":
            return v
    return _check_choice(configured or "auto", "llama_extra_buffers")


def decide_extra_buffers(
    requested: str = "auto", *, cpu: CpuInfo | None = None, build: frozenset[str] | set[str] | None = None
) -> CpuPlan:
    """Whether to open GGUFs with llama.cpp's extra CPU buffer types: ``on``/``off`` as asked; ``auto``: off
    on a CPU with AMX (flags ``amx_int8``/``amx_tile``) or an AMX build (its AMX buffer type crashes batched
    decodes), on elsewhere (the repacked AVX2/AVX-512/NEON kernels are the fast path)."""
    req = _check_choice(requested, "llama_extra_buffers")
    cpu = cpu if cpu is not None else read_cpu()
    build = frozenset(build if build is not None else build_features())
    if req == "on":
        return CpuPlan(True, req, "forced on", cpu, build)
    if req == "off":
        return CpuPlan(False, req, "forced off", cpu, build)
    amx_build = any(f.startswith("AMX") for f in build)
    if cpu.amx or amx_build:
        seen = "the CPU has AMX" if cpu.amx else "llama.cpp was built with AMX"
        return CpuPlan(
            False,
            req,
            f"{seen}, and llama.cpp's AMX buffer type segfaults in batched decodes",
            cpu,
            build,
        )
    if cpu.x86 and cpu.flags and "avx2" not in cpu.flags:
        return CpuPlan(True, req, "no AVX2: llama.cpp runs on its slow generic kernels", cpu, build)
    return CpuPlan(True, req, "no AMX: the repacked kernels are the fast path", cpu, build)


# -- threads and the OpenMP wait policy ------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadPlan:
    """Threads for llama.cpp and the OpenMP wait policy, from the cores free now."""

    n_threads: int
    wait_policy: Literal["ACTIVE", "PASSIVE"]
    cores: int  # CPUs this process may run on
    busy: float  # of those, kept busy by other processes (load average minus this process)
    loaded: bool
    reason: str

    def line(self) -> str:
        return (
            f"llama.cpp threads {self.n_threads}, OMP_WAIT_POLICY={self.wait_policy} "
            f"({self.cores} cores, ~{self.busy:.1f} busy with other work: {self.reason})"
        )


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _busy(cores: int) -> float:
    """How many of ``cores`` other processes keep busy: the smaller of the 1-minute load average and the
    runnable count now (/proc/loadavg), minus this process."""
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        load1 = min(load1, float(running))
    except (OSError, ValueError, IndexError):
        pass
    return max(0.0, min(float(cores) * 4, load1 - 1.0))


def choose_threads(
    requested: int | None = None, *, cores: int | None = None, busy: float | None = None
) -> ThreadPlan:
    """Threads and wait policy for llama.cpp now. Loaded = other processes keep at least half the cores busy
    (a trainer, a tokenizer pool and a judge on one machine): then the free cores (at least 1) and PASSIVE
    (threads sleep at barriers instead of spinning on cores the others need). Otherwise every core and
    ACTIVE. ``requested`` (``--judge-n-threads``) fixes the thread count; ``OMP_WAIT_POLICY`` in the
    environment fixes the policy. ``cores``/``busy`` default to what this machine says now."""
    cores = cores if cores is not None else _cores()
    busy = busy if busy is not None else _busy(cores)
    loaded = busy >= max(1.0, cores / 2)
    free = max(1, int(cores - busy + 0.5))
    n = requested if requested else (free if loaded else cores)
    env = os.environ.get("OMP_WAIT_POLICY", "").strip().upper()
    if env in ("ACTIVE", "PASSIVE"):
        policy: Literal["ACTIVE", "PASSIVE"] = "PASSIVE" if env == "PASSIVE" else "ACTIVE"
        reason = "OMP_WAIT_POLICY set in the environment"
    elif loaded:
        policy, reason = "PASSIVE", "loaded: spinning threads would take the cores other work needs"
    else:
        policy, reason = "ACTIVE", "idle"
    if requested:
        reason += f"; {requested} threads as asked"
    return ThreadPlan(n, policy, cores, busy, loaded, reason)


def runtime_env(plan: ThreadPlan | None = None, extra_buffers: str | None = None) -> dict[str, str]:
    """Environment variables a child process that runs llama.cpp should start with (the supervised judge
    worker, the canary): the wait policy and, when given, the extra-buffers setting."""
    plan = plan or choose_threads()
    env = {"OMP_WAIT_POLICY": plan.wait_policy}
    if extra_buffers is not None:
        env[ENV_EXTRA_BUFFERS] = _check_choice(extra_buffers, ENV_EXTRA_BUFFERS)
    return env


_lock = threading.RLock()
_runtime: ThreadPlan | None = None
_logged: set[str] = set()


def _log_once(line: str) -> None:
    with _lock:
        if line in _logged:
            return
        _logged.add(line)
    log.info(line)
    if not logging.getLogger().handlers:  # no logging configured (the CLI): one line on stderr
        print(f"medix: {line}", file=sys.stderr, flush=True)


def prepare_runtime(requested_threads: int | None = None) -> ThreadPlan:
    """Decide threads and the OpenMP wait policy, and set ``OMP_WAIT_POLICY`` before llama.cpp's OpenMP
    runtime loads (the first ``import llama_cpp`` of this process). Idempotent: the policy is decided once
    per process (the runtime reads it once); the thread count is chosen again for each call."""
    global _runtime
    with _lock:
        if _runtime is None:
            plan = choose_threads(requested_threads)
            if "llama_cpp" in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
                # Imported before we could set it: the runtime keeps its default (active) wait.
                plan = ThreadPlan(
                    plan.n_threads, "ACTIVE", plan.cores, plan.busy, plan.loaded, "llama_cpp imported first"
                )
            elif "OMP_WAIT_POLICY" not in os.environ:
                os.environ["OMP_WAIT_POLICY"] = plan.wait_policy
            _runtime = plan
            _log_once(plan.line())
            return plan
        if requested_threads is None:
            return _runtime
        p = choose_threads(requested_threads)
        return ThreadPlan(p.n_threads, _runtime.wait_policy, p.cores, p.busy, p.loaded, p.reason)


# -- opening a model --------------------------------------------------------------------------------------

_plans: dict[tuple[str, str], CpuPlan] = {}


def cpu_plan(configured: str | None = None) -> CpuPlan:
    """The extra-buffers decision for ``configured`` (a YAML/CLI value; the environment overrides), logged
    once per process."""
    req = requested_extra_buffers(configured)
    key = (req, os.environ.get(ENV_CPUINFO, ""))
    with _lock:
        plan = _plans.get(key)
        if plan is None:
            prepare_runtime()
            plan = _plans[key] = decide_extra_buffers(req)
    _log_once(plan.line())
    return plan


def open_llama(
    model_path: str | Path,
    *,
    extra_buffers: str | None = None,
    n_threads: int | None = None,
    check: bool = True,
    **kwargs: Any,
) -> Any:
    """A ``llama_cpp.Llama`` for ``model_path``, opened as this CPU needs: extra CPU buffer types as
    :func:`cpu_plan` decides, threads as :func:`prepare_runtime` chooses (``n_threads`` fixes them), and,
    with ``check``, after the (cached) :func:`canary` passed for these settings. ``kwargs`` go to
    ``Llama`` (``n_ctx``, ``n_gpu_layers``, ``seed``, ``chat_format``...).

    llama-cpp-python (0.3.x) has no keyword for ``use_extra_bufts``: ``Llama.__init__`` takes its model
    parameters from ``llama_cpp.llama_model_default_params()``, so that function is wrapped, under a lock,
    for the duration of the constructor; the result is checked on ``llm.model_params`` afterwards."""
    threads = prepare_runtime(n_threads)
    plan = cpu_plan(extra_buffers)
    use_extra = plan.extra_buffers
    if check and os.environ.get(ENV_NO_CANARY, "1") != "0":
        result = ensure_canary(
            model_path, extra_buffers=plan.requested, n_gpu_layers=int(kwargs.get("n_gpu_layers") or 0)
        )
        use_extra = result.extra_buffers
    import llama_cpp
    import llama_cpp.llama as llama_mod

    low = llama_mod.llama_cpp  # the low-level module Llama.__init__ calls
    original = low.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = use_extra
        return p

    kwargs.setdefault("n_threads", threads.n_threads)
    kwargs.setdefault("n_threads_batch", kwargs["n_threads"])
    kwargs.setdefault("verbose", False)
    with _lock:
        low.llama_model_default_params = params
        try:
            llm = llama_cpp.Llama(model_path=str(model_path), **kwargs)
        finally:
            low.llama_model_default_params = original
    if bool(llm.model_params.use_extra_bufts) != use_extra:  # a llama-cpp-python that builds them otherwise
        llm.close()
        raise BackendError(
            f"this llama-cpp-python ({llama_cpp.__version__}) did not take use_extra_bufts={use_extra}; "
            "medix_r1.llm.cpu.open_llama needs updating for it"
        )
    return llm


# -- the canary -------------------------------------------------------------------------------------------

CANARY_PROMPT = (
    "A 54-year-old man presents with crushing chest pain radiating to the left arm, sweating and nausea "
    "for two hours. The ECG shows ST elevation in leads II, III and aVF. What is the most likely diagnosis?"
)


@dataclass
class CanaryResult:
    """What the canary child reported: ``ok``, or the ``signal`` it died of, the ``cause`` as far as known
    and the ``fix``. ``extra_buffers``: the setting it ran (and the one to use)."""

    ok: bool
    model: str
    extra_buffers: bool
    signal: str | None = None
    cause: str = ""
    fix: str = ""
    detail: str = ""
    tokens: int = 0
    seconds: float = 0.0
    cached: bool = False

    def line(self) -> str:
        eb = "on" if self.extra_buffers else "off"
        if self.ok:
            how = "cached" if self.cached else f"{self.seconds:.1f}s"
            return f"ok: batched decode of {self.tokens} tokens with extra buffers {eb} ({how})"
        what = f"died of {self.signal}" if self.signal else "failed"
        return f"{what} with extra buffers {eb}: {self.cause}; fix: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cache_dir() -> Path:
    return Path(os.environ.get("MEDIX_CACHE", str(Path.home() / ".cache" / "medix-r1"))) / "canary"


def _cache_key(path: Path, extra_buffers: bool, n_gpu_layers: int) -> str:
    st = path.stat()
    parts = [build_identity(), str(path), str(st.st_size), str(int(st.st_mtime)), str(extra_buffers)]
    parts.append(str(n_gpu_layers))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _diagnose(
    sig: int | None, extra: bool, cpu: CpuInfo, rc: int, stderr: str
) -> tuple[str | None, str, str]:
    if sig is None:
        tail = " ".join(stderr.strip().splitlines()[-2:])[:300]
        return None, f"the child exited with status {rc}: {tail or 'no message'}", "see the message"
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    if sig == signal.SIGILL:
        cause = "an illegal instruction: this llama.cpp was built for another CPU (GGML_NATIVE on another machine)"
        fix = f"rebuild llama-cpp-python here: {REBUILD}"
    elif extra and (cpu.amx or sig == signal.SIGSEGV):
        cause = (
            "llama.cpp's AMX buffer type (a known llama.cpp crash)"
            if cpu.amx
            else "llama.cpp's extra CPU buffer types (repacked weights) on this CPU"
        )
        fix = "--llama-extra-buffers off (YAML llama_extra_buffers: off, or MEDIX_LLAMA_EXTRA_BUFFERS=off)"
    elif sig == signal.SIGKILL:
        cause = "killed (the kernel's OOM killer, most likely: not enough free memory for the model)"
        fix = "free memory, or use a smaller GGUF"
    else:
        cause = "a crash inside llama.cpp with its extra buffers already off"
        fix = f"rebuild llama-cpp-python for this CPU ({REBUILD}), or report it with `medix doctor --json`"
    return name, cause, fix


def canary(
    model_path: str | Path,
    *,
    extra_buffers: bool,
    n_gpu_layers: int = 0,
    use_cache: bool = True,
    timeout: float = 300.0,
) -> CanaryResult:
    """Open ``model_path`` in a child process with these settings and run one batched decode of a real
    prompt (a few dozen tokens, one ``llama_decode`` call). ``ok`` results are cached (see the module doc);
    a failure is reported, never cached."""
    path = Path(model_path).expanduser().resolve()
    key = _cache_key(path, extra_buffers, n_gpu_layers)
    cache = _cache_dir() / f"{key}.json"
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            return CanaryResult(**{**data, "cached": True})
        except (OSError, ValueError, TypeError):
            pass
    env = dict(os.environ)
    env[ENV_NO_CANARY] = "0"
    env[ENV_EXTRA_BUFFERS] = "on" if extra_buffers else "off"
    env.setdefault("OMP_WAIT_POLICY", prepare_runtime().wait_policy)
    cmd = [sys.executable, "-X", "faulthandler", "-m", "medix_r1.llm.cpu", "--canary", str(path)]
    cmd += ["--n-gpu-layers", str(n_gpu_layers)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return CanaryResult(
            False, str(path), extra_buffers, None, f"no answer in {timeout:.0f}s", "free CPU or memory"
        )
    dt = time.perf_counter() - t0
    out = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and out:
        data = json.loads(out[-1])
        res = CanaryResult(True, str(path), extra_buffers, tokens=int(data["tokens"]), seconds=dt)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: v for k, v in res.as_dict().items() if k != "cached"}))
            os.replace(tmp, cache)
        except OSError:
            pass  # an unwritable cache costs a child per process, nothing else
        return res
    sig = -proc.returncode if proc.returncode < 0 else None
    if sig is None and proc.returncode in (132, 134, 135, 136, 137, 139):  # a shell-style 128+N status
        sig = proc.returncode - 128
    name, cause, fix = _diagnose(sig, extra_buffers, read_cpu(), proc.returncode, proc.stderr)
    detail = " ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
    return CanaryResult(False, str(path), extra_buffers, name, cause, fix, detail, seconds=dt)


_checked: dict[tuple[str, bool, int, str], CanaryResult] = {}


def ensure_canary(
    model_path: str | Path, *, extra_buffers: str = "auto", n_gpu_layers: int = 0
) -> CanaryResult:
    """The canary for opening ``model_path`` in this process, once per process and settings (and once per
    machine while it passes, through the cache). With ``auto`` and extra buffers on, a crash is retried with
    them off; if that passes, they stay off for this model (logged). A crash that remains raises
    :class:`LlamaCrashError` (one line: signal, cause, fix)."""
    plan = cpu_plan(extra_buffers)
    key = (str(Path(model_path).expanduser().resolve()), plan.extra_buffers, n_gpu_layers, str(_cache_dir()))
    with _lock:
        got = _checked.get(key)
    if got is not None:
        return got
    res = canary(model_path, extra_buffers=plan.extra_buffers, n_gpu_layers=n_gpu_layers)
    if not res.ok and res.signal and plan.extra_buffers and plan.requested == "auto":
        retry = canary(model_path, extra_buffers=False, n_gpu_layers=n_gpu_layers)
        if retry.ok:
            _log_once(
                f"llama.cpp: {Path(model_path).name} crashed ({res.signal}) with extra CPU buffers on and "
                "works with them off: using off (--llama-extra-buffers off says so explicitly)"
            )
            res = retry
    if not res.ok:
        raise LlamaCrashError(f"llama.cpp self-test of {model_path} {res.line()}")
    with _lock:
        _checked[key] = res
    return res


# -- the command-line option ------------------------------------------------------------------------------


class _SetEnv(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        os.environ[ENV_EXTRA_BUFFERS] = str(values)


def add_llama_cpu_option(parser: argparse.ArgumentParser | Any) -> None:
    """Register ``--llama-extra-buffers auto|on|off`` on a command that opens a GGUF (it sets
    ``MEDIX_LLAMA_EXTRA_BUFFERS`` for this process and its children)."""
    parser.add_argument(
        "--llama-extra-buffers",
        choices=EXTRA_BUFFERS,
        default=None,
        action=_SetEnv,
        help="llama.cpp's extra CPU buffer types (repacked weights, AMX): auto (default: off on AMX CPUs, "
        "where they crash, on elsewhere), on or off",
    )


# -- the canary's child -----------------------------------------------------------------------------------


def _child(model: str, n_gpu_layers: int) -> int:
    llm = open_llama(model, check=False, n_ctx=512, n_batch=512, n_gpu_layers=n_gpu_layers, seed=0)
    tokens = llm.tokenize(CANARY_PROMPT.encode(), add_bos=True, special=False)
    llm.eval(tokens)  # one batch of len(tokens) > 1: the path that crashes with AMX buffers
    import numpy as np

    ok = bool(np.isfinite(llm.scores[len(tokens) - 1]).all())  # the last token's logits
    print(json.dumps({"ok": ok, "tokens": len(tokens)}), flush=True)
    llm.close()
    return 0 if ok else 3


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m medix_r1.llm.cpu")
    ap.add_argument("--canary", metavar="FILE.gguf", required=True)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_child(a.canary, a.n_gpu_layers))
