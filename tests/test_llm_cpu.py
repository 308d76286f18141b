"""How llama.cpp runs on the CPU it meets (medix_r1.llm.cpu): the extra-buffers decision on faked CPU
descriptions, threads and the OpenMP wait policy, and the canary: a real llama.cpp model opened exactly as the
product opens it, with one batched decode, in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medix_r1.errors import ConfigError
from medix_r1.llm import cpu

# /proc/cpuinfo excerpts of the CPUs the README's "Supported CPUs" table names.
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2 avx512f avx512bw avx512vl avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
"""
XEON_AVX512 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse sse2 ssse3 avx f16c fma bmi2 avx2 avx512f avx512bw avx512vl avx512_vnni
"""
EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 avx f16c fma bmi2 avx2
"""
OLD_X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx
"""
ARM64 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU part\t: 0xd0c
"""
AVX2_BUILD = frozenset({"SSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "OPENMP", "REPACK"})
AMX_BUILD = AVX2_BUILD | {"AVX512", "AVX512_VNNI", "AMX_INT8"}


def fake(tmp_path: Path, text: str, name: str = "cpuinfo") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, machine, build, want, features",
    [
        (XEON_AMX, "x86_64", AMX_BUILD, False, ["AVX2", "AVX-512", "AMX"]),
        (XEON_AMX, "x86_64", AVX2_BUILD, False, ["AVX2", "AVX-512", "AMX"]),  # the CPU alone decides
        (XEON_AVX512, "x86_64", AVX2_BUILD | {"AVX512"}, True, ["AVX2", "AVX-512"]),
        (EPYC_AVX2, "x86_64", AVX2_BUILD, True, ["AVX2"]),
        (EPYC_AVX2, "x86_64", AMX_BUILD, False, ["AVX2"]),  # an AMX build: off too
        (OLD_X86, "x86_64", frozenset({"AVX", "OPENMP"}), True, []),
        (ARM64, None, frozenset({"NEON", "ARM_FMA", "OPENMP", "REPACK"}), True, ["NEON"]),
    ],
    ids=["amx-xeon", "amx-cpu-avx2-build", "avx512", "avx2", "avx2-cpu-amx-build", "no-avx2", "arm64"],
)
def test_auto_turns_extra_buffers_off_only_for_amx(tmp_path, text, machine, build, want, features):
    info = cpu.read_cpu(fake(tmp_path, text), machine=machine)
    assert info.features() == features
    plan = cpu.decide_extra_buffers("auto", cpu=info, build=build)
    assert plan.extra_buffers is want
    assert ("segfaults" in plan.reason) is (not want)
    # on/off are obeyed whatever the CPU
    assert cpu.decide_extra_buffers("on", cpu=info, build=build).extra_buffers is True
    assert cpu.decide_extra_buffers("OFF", cpu=info, build=build).extra_buffers is False
    assert "extra CPU buffers" in plan.line() and info.model in plan.line()


def test_arm64_cpuinfo_is_recognised_and_no_avx2_is_named(tmp_path):
    arm = cpu.read_cpu(fake(tmp_path, ARM64))
    assert arm.machine == "aarch64" and not arm.x86 and arm.model == "0xd0c"
    old = cpu.read_cpu(fake(tmp_path, OLD_X86, "old"), machine="x86_64")
    assert "no AVX2" in cpu.decide_extra_buffers("auto", cpu=old, build=AVX2_BUILD).reason


def test_cpuinfo_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu.ENV_CPUINFO, str(fake(tmp_path, XEON_AMX)))
    assert cpu.read_cpu().amx
    assert cpu.decide_extra_buffers(build=AVX2_BUILD).extra_buffers is False


def test_the_setting_in_force_and_a_bad_value(monkeypatch):
    monkeypatch.delenv(cpu.ENV_EXTRA_BUFFERS, raising=False)
    assert cpu.requested_extra_buffers(None) == "auto"
    assert cpu.requested_extra_buffers("off") == "off"
    monkeypatch.setenv(cpu.ENV_EXTRA_BUFFERS, "on")  # what --llama-extra-buffers on sets: it wins
    assert cpu.requested_extra_buffers("off") == "on"
    monkeypatch.setenv(cpu.ENV_EXTRA_BUFFERS, "auto")
    assert cpu.requested_extra_buffers("off") == "off"
    with pytest.raises(ConfigError, match="llama_extra_buffers must be one of auto, on, off"):
        cpu.requested_extra_buffers("maybe")


def test_build_features_parse_llama_system_info():
    info = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | OPENMP = 1 | "
    assert cpu.build_features(info) == {"SSE3", "AVX2", "AMX_INT8", "OPENMP"}
    assert len(cpu.build_identity()) == 16


@pytest.mark.parametrize(
    "cores, busy, loaded, threads, policy",
    [(2, 0.0, False, 2, "ACTIVE"), (2, 3.0, True, 1, "PASSIVE"), (16, 4.0, False, 16, "ACTIVE"),
     (16, 10.0, True, 6, "PASSIVE"), (1, 0.0, False, 1, "ACTIVE")],
)  # fmt: skip
def test_threads_and_wait_policy_follow_the_free_cores(monkeypatch, cores, busy, loaded, threads, policy):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    plan = cpu.choose_threads(cores=cores, busy=busy)
    assert (plan.loaded, plan.n_threads, plan.wait_policy) == (loaded, threads, policy)
    assert cpu.choose_threads(3, cores=cores, busy=busy).n_threads == 3  # --judge-n-threads fixes them
    assert cpu.runtime_env(plan, "off") == {"OMP_WAIT_POLICY": policy, cpu.ENV_EXTRA_BUFFERS: "off"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")  # the user's choice wins
    assert cpu.choose_threads(cores=cores, busy=busy).wait_policy == "ACTIVE"


def test_choose_threads_reads_this_machine():
    plan = cpu.choose_threads()
    assert plan.cores == len(os.sched_getaffinity(0)) and 1 <= plan.n_threads <= plan.cores
    assert "OMP_WAIT_POLICY=" in plan.line()


def test_diagnosis_names_cause_and_fix(tmp_path):
    amx = cpu.read_cpu(fake(tmp_path, XEON_AMX), machine="x86_64")
    avx2 = cpu.read_cpu(fake(tmp_path, EPYC_AVX2, "e"), machine="x86_64")
    name, cause, fix = cpu._diagnose(signal.SIGSEGV, True, amx, -11, "")
    assert name == "SIGSEGV" and "AMX" in cause and "--llama-extra-buffers off" in fix
    name, cause, fix = cpu._diagnose(signal.SIGILL, False, avx2, -4, "")
    assert name == "SIGILL" and "another CPU" in cause and "CMAKE_ARGS" in fix
    name, cause, fix = cpu._diagnose(signal.SIGABRT, False, avx2, -6, "")
    assert name == "SIGABRT" and "extra buffers already off" in cause and "CMAKE_ARGS" in fix
    assert "OOM" in cpu._diagnose(signal.SIGKILL, False, avx2, -9, "")[1]


# -- real llama.cpp, in child processes ------------------------------------------------------------------


@pytest.mark.parametrize("extra", [True, False], ids=["extra-buffers-on", "extra-buffers-off"])
def test_canary_batched_decode_in_a_child_and_its_cache(gguf_path, tmp_path, monkeypatch, extra):
    monkeypatch.setenv("MEDIX_CACHE", str(tmp_path))
    res = cpu.canary(gguf_path, extra_buffers=extra)
    assert res.ok, res.line()
    assert res.tokens > 24 and res.extra_buffers is extra and not res.cached
    again = cpu.canary(gguf_path, extra_buffers=extra)
    assert again.ok and again.cached
    assert len(list((tmp_path / "canary").glob("*.json"))) == 1
    fresh = cpu.canary(gguf_path, extra_buffers=extra, use_cache=False)
    assert fresh.ok and not fresh.cached


def test_canary_reports_a_file_llama_cpp_cannot_load(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIX_CACHE", str(tmp_path))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    res = cpu.canary(bad, extra_buffers=True)
    assert not res.ok and res.signal is None and "status" in res.cause
    assert not list((tmp_path / "canary").glob("*.json"))  # failures are not cached
    with pytest.raises(cpu.LlamaCrashError, match="self-test of .*bad.gguf"):
        cpu.ensure_canary(bad)


# Opens the GGUF exactly as the product does (LlamaCppChat -> open_llama, canary included) and judges one
# pair (batched decodes), in a fresh process whose CPU description says AMX: before the fix, this is the
# process that died of SIGSEGV on an AMX machine.
PRODUCT = """
import json, sys
from medix_r1.judge import LocalJudge
j = LocalJudge(sys.argv[1], n_ctx=1024)
p = j.p_yes("Paris is the capital of France.", "Paris")
print(json.dumps({"p_yes": p, "extra": bool(j.chat.llm.model_params.use_extra_bufts),
                  "threads": j.chat.llm.n_threads_batch}))
"""


@pytest.mark.parametrize(
    "cpuinfo, flag, want",
    [(XEON_AMX, None, False), (EPYC_AVX2, None, True), (XEON_AMX, "on", True), (EPYC_AVX2, "off", False)],
    ids=["amx-auto", "avx2-auto", "amx-forced-on", "avx2-forced-off"],
)
def test_product_path_batched_decode_in_a_child(gguf_path, tmp_path, cpuinfo, flag, want):
    env = {**os.environ, "MEDIX_CACHE": str(tmp_path), cpu.ENV_CPUINFO: str(fake(tmp_path, cpuinfo))}
    env.pop(cpu.ENV_EXTRA_BUFFERS, None)
    if flag:
        env[cpu.ENV_EXTRA_BUFFERS] = flag
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", PRODUCT, str(gguf_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["p_yes"] <= 1.0 and out["extra"] is want and out["threads"] >= 1
    # the decision is logged once, naming what it saw and why
    lines = [ln for ln in proc.stderr.splitlines() if "extra CPU buffers" in ln]
    assert len(lines) == 1 and ("segfaults" in lines[0]) is (cpuinfo is XEON_AMX and flag is None)
    assert list((tmp_path / "canary").glob("*.json"))  # the canary ran first, and its ok is cached
