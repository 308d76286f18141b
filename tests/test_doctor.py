"""`medix doctor`: every check reported with name/ok/detail/fix, a non-zero exit when something needed is
missing, and each problem (bad model, altered bundle, unsupported version) named with its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from medix_r1 import doctor
from medix_r1.bundle.manifest import FORMAT, MANIFEST, file_entry, write_json_atomic
from medix_r1.cli import main


def _bundle(root: Path, judge: Path, embed: Path | None = None) -> Path:
    (root / "models" / "judge").mkdir(parents=True)
    shutil.copy(judge, root / "models" / "judge" / judge.name)
    models = {"judge": {"path": f"models/judge/{judge.name}", "kind": "gguf"}}
    if embed is not None:
        shutil.copytree(embed, root / "models" / "embed")
        models["embed"] = {"path": "models/embed", "kind": "onnx"}
    files = [file_entry(root, p) for p in sorted(root.rglob("*")) if p.is_file()]
    here = "{}.{}".format(*__import__("sys").version_info[:2])
    data = {
        "format": FORMAT,
        "created": "2026-01-01T00:00:00Z",
        "target": {"python": here, "platforms": []},
        "extras": ["judge", "embed"],
        "models": models,
        "files": files,
    }
    write_json_atomic(root / MANIFEST, data)
    return root


@pytest.mark.slow  # opens the ONNX model and imports torch for the GPU facts: several seconds on 2 cores
def test_doctor_json_with_a_good_bundle(
    gguf_path: Path, minilm_onnx_dir: Path, tmp_path: Path, capsys
) -> None:
    b = _bundle(tmp_path / "b", gguf_path, minilm_onnx_dir)
    rc = main(["doctor", "--bundle", str(b), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert all(set(c) >= {"name", "ok", "detail", "fix"} for c in report["checks"])
    for name in ("python", "cpu", "llama.cpp", "ram", "gpu", "package torch", "package unsloth", "offline"):
        assert name in checks
    assert "chat template" in checks["model judge"]["detail"]
    assert "loads in ONNX Runtime" in checks["model embed"]["detail"]
    assert "llama-cpp-python" in checks["llama.cpp"]["detail"]


def test_doctor_fails_on_a_fake_gguf_and_an_altered_bundle(gguf_path: Path, tmp_path: Path, capsys) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello\n")
    b = _bundle(tmp_path / "b", fake)
    checks = {c.name: c for c in doctor.run_checks(bundle=str(b), gpu=False)}
    assert not checks["model judge"].ok and "not a GGUF model" in checks["model judge"].detail
    assert checks["model judge"].required and checks["model judge"].fix
    b2 = _bundle(tmp_path / "b2", gguf_path)
    with open(b2 / "models" / "judge" / gguf_path.name, "ab") as f:
        f.write(b"extra")
    assert main(["doctor", "--bundle", str(b2), "--no-gpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL bundle" in out and f"models/judge/{gguf_path.name}" in out and "fix: copy those files" in out


def test_doctor_half_written_bundle(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    checks = {c.name: c for c in doctor.run_checks(bundle=str(tmp_path / "b"), gpu=False)}
    assert not checks["bundle"].ok and MANIFEST in checks["bundle"].detail


def test_versions_against_supported_ranges(monkeypatch) -> None:
    ranges = doctor.supported_ranges()
    assert ranges["torch"][0] and ranges["llama-cpp-python"] == (">=0.3.16", "judge")
    real = doctor.metadata.version

    def fake_version(name: str) -> str:
        return "0.1" if name == "fastembed" else real(name)

    monkeypatch.setattr(doctor.metadata, "version", fake_version)
    fe = next(c for c in doctor._versions({"embed"}) if c.name == "package fastembed")
    assert not fe.ok and fe.required and "0.1 installed" in fe.detail and "fastembed>=0.5" in fe.fix


def test_offline_variables_warn_without_failing(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    c = doctor._offline()
    assert not c.ok and not c.required and "HF_HUB_OFFLINE=1" in c.fix


def test_train_memory_estimate(minilm_hf_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model:\n  path: {minilm_hf_dir}\nlora:\n  load_in_4bit: false\n")
    c = doctor.estimate_train_memory(str(cfg))
    assert c.ok and "GiB" in c.detail and "parameters" in c.detail


def test_doctor_self_tests_the_judge_and_names_the_cpu_path(gguf_path: Path, tmp_path: Path, capsys, monkeypatch):
    # A faked AMX CPU: the path chosen is extra buffers off, and the real self-test (a child process, one
    # batched decode of the test GGUF) runs with them off and passes.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx avx2 avx512f amx_tile amx_int8\n")
    monkeypatch.setenv("MEDIX_CPUINFO", str(cpuinfo))
    monkeypatch.setenv("MEDIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDIX_LLAMA_EXTRA_BUFFERS", raising=False)
    rc = main(["doctor", "--no-gpu", "--json", "--judge-model", str(gguf_path)])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0, data
    assert data["llama_cpu"]["extra_buffers"] is False and "AMX" in data["llama_cpu"]["reason"]
    assert "AMX" in data["llama_cpu"]["cpu_features"]
    (t,) = data["self_tests"]
    assert t["role"] == "judge" and t["ok"] and t["extra_buffers"] is False and t["tokens"] > 24
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["self-test judge"]["ok"] and "extra CPU buffers off" in checks["llama.cpp cpu path"]["detail"]
