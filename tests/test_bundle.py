"""`medix bundle`: bad input is named and explained; and, end to end with the real test models, a bundle made
without network installs into a fresh venv with the network unavailable and runs doctor, verify, reward
score and eval there.

The slow test takes its wheelhouse from this environment: medix-r1's wheel is built with maturin from the
source tree once per source state, and the dependencies of the judge and embed extras are re-packed from the
installed distributions once per environment; both are cached under ~/.cache/medix-r1/bundle-test. The bundle
itself (models, ONNX export, `pip download --no-index`, manifest) is made fresh every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from medix_r1.bundle import ENV, BundleError, resolve_bundle
from medix_r1.bundle.create import render_install_sh
from medix_r1.bundle.manifest import FORMAT, MANIFEST, file_entry, verify_bundle, write_json_atomic
from medix_r1.bundle.models import GgufError, describe_model, gguf_metadata
from medix_r1.bundle.wheels import (
    check_wheelhouse,
    expand_platforms,
    extras_requirements,
    host_target,
    missing_requirements,
    repack_environment,
)
from medix_r1.cli import main
from medix_r1.errors import MissingModelError

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MEDIX_CACHE", Path.home() / ".cache" / "medix-r1")) / "bundle-test"


# --- bad input, fast ---------------------------------------------------------------------------------------


def test_gguf_metadata_of_the_real_model(gguf_path: Path) -> None:
    meta = gguf_metadata(gguf_path)
    assert meta["general.architecture"] == "llama"
    assert "{%" in meta["tokenizer.chat_template"]
    assert describe_model(gguf_path, "judge")["license"] == "apache-2.0"


def test_a_text_file_named_gguf_is_refused_naming_it(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "judge.gguf"
    fake.write_text("not a model\n")
    with pytest.raises(GgufError, match="not a GGUF model"):
        describe_model(fake, "judge")
    assert main(["bundle", "create", "--out", str(tmp_path / "b"), "--judge", str(fake)]) == 2
    err = capsys.readouterr().err
    assert str(fake) in err and "not a GGUF model" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()  # checked before anything is written


def test_truncated_gguf_is_refused(gguf_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_path.read_bytes()[:4096])
    with pytest.raises(GgufError, match="truncated"):
        gguf_metadata(cut)


def test_out_with_other_files_is_refused(gguf_path: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["bundle", "create", "--out", str(tmp_path), "--judge", str(gguf_path)]) == 2
    assert "already holds other files (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_hf_folder_without_weights_and_missing_path(minilm_hf_dir: Path, tmp_path: Path, capsys) -> None:
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    shutil.copy(minilm_hf_dir / "config.json", hollow / "config.json")
    with pytest.raises(MissingModelError, match="no weights"):
        describe_model(hollow, "policy")
    assert main(["bundle", "create", "--out", str(tmp_path / "b"), "--policy", str(hollow)]) == 2
    assert "no weights" in capsys.readouterr().err
    assert main(["bundle", "create", "--out", str(tmp_path / "b"), "--embed", str(tmp_path / "nope")]) == 2
    assert f"no such file or directory: {tmp_path / 'nope'}" in capsys.readouterr().err


def _tiny_wheel(folder: Path, name: str, version: str, *, requires: list[str] = (), body: str = "") -> Path:
    """A real, installable pure-Python wheel of one module ``name`` whose ``WHO`` is ``body``."""
    import base64

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"WHO = {body or f'{name} {version}'!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    w = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return w


def _fake_bundle(root: Path, python: str | None = None, wheel: str | None = None) -> Path:
    """A small finished bundle (a model file, medix_r1 and demo_pkg as tiny real wheels) with a real
    manifest and the real install.sh."""
    (root / "models" / "judge").mkdir(parents=True)
    (root / "wheels").mkdir()
    (root / "models" / "judge" / "j.gguf").write_bytes(b"GGUF" + bytes(100))
    if wheel:
        with zipfile.ZipFile(root / "wheels" / wheel, "w") as z:
            z.writestr("demo_pkg/__init__.py", "")
    else:
        _tiny_wheel(root / "wheels", "demo_pkg", "1.0")
    _tiny_wheel(root / "wheels", "medix_r1", "0.1.0", requires=["demo_pkg; extra == 'judge'"], body="listed")
    (root / "install.sh").write_text(render_install_sh({"VERSION": "0.1.0"}))
    files = [file_entry(root, p) for p in sorted(root.rglob("*")) if p.is_file()]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest = {
        "format": FORMAT,
        "created": "2026-01-01T00:00:00Z",
        "target": {"python": python or here, "platforms": []},
        "extras": ["judge"],
        "models": {"judge": {"path": "models/judge/j.gguf", "kind": "gguf"}},
        "files": files,
    }
    write_json_atomic(root / MANIFEST, manifest)
    return root


def test_verify_names_missing_and_altered_files(tmp_path: Path, capsys) -> None:
    b = _fake_bundle(tmp_path / "b")
    assert main(["bundle", "verify", str(b)]) == 0
    with open(b / "models" / "judge" / "j.gguf", "r+b") as f:
        f.seek(50)
        f.write(b"\x01")
    (b / "install.sh").unlink()
    assert main(["bundle", "verify", str(b), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "ALTERED  models/judge/j.gguf: sha256" in err and "MISSING  install.sh" in err


def _rewrite_manifest(b: Path, edit) -> None:
    m = json.loads((b / MANIFEST).read_text())
    edit(m)
    write_json_atomic(b / MANIFEST, m)


def _install(b: Path, *args: str, venv: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_FIND_LINKS")}
    cmd = ["bash", str(b / "install.sh"), *args] + (["--venv", str(venv)] if venv else [])
    return subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHON": sys.executable})


@pytest.mark.parametrize("where", ["../../etc/outside", "/etc/passwd", "models/../../outside"])
def test_attack_manifest_path_outside_the_bundle_fails_verify_naming_it(
    tmp_path: Path, where, capsys
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("not the bundle's")
    b = _fake_bundle(tmp_path / "a" / "b")
    if where == "/etc/passwd":
        entry = file_entry(Path("/"), Path("/etc/passwd"))
    else:
        entry = {**file_entry(tmp_path, outside), "path": where}
    entry["path"] = where
    _rewrite_manifest(b, lambda m: m["files"].append(entry))
    assert main(["bundle", "verify", str(b), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"UNSAFE   '{where}'" in err, err
    r = _install(b)
    assert r.returncode == 1 and f"UNSAFE   '{where}'" in r.stderr and "refusing" in r.stderr, r.stderr


def test_attack_symlink_leaving_the_bundle_fails_verify(tmp_path: Path, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    b = _fake_bundle(tmp_path / "b")
    judge = b / "models" / "judge" / "j.gguf"
    shutil.copy(judge, elsewhere / "j.gguf")
    shutil.rmtree(b / "models" / "judge")
    (b / "models" / "judge").symlink_to(elsewhere)  # same bytes, but outside the bundle
    assert main(["bundle", "verify", str(b), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "UNSAFE   'models/judge/j.gguf': leads outside the bundle" in err, err
    with pytest.raises(BundleError, match="leads outside the bundle"):
        resolve_bundle(argparse.Namespace(bundle=str(b), judge=None), judge="judge")


def test_attack_unlisted_and_altered_wheels_are_refused_and_only_listed_ones_installed(
    tmp_path: Path, capsys
):
    """An unlisted tqdm-99 wheel, an unlisted medix_r1 0.1.0+evil wheel (satisfies ==0.1.0), an altered
    listed wheel: verify fails naming each, install.sh refuses before creating anything; with --allow-extra
    the unlisted files are named but exactly the listed wheels are installed (a real pip, a fresh venv)."""
    b = _fake_bundle(tmp_path / "b")
    _tiny_wheel(b / "wheels", "tqdm", "99.0.0", body="evil")
    _tiny_wheel(b / "wheels", "medix_r1", "0.1.0+evil", body="evil")
    assert main(["bundle", "verify", str(b), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert (
        "EXTRA    wheels/tqdm-99.0.0-py3-none-any.whl" in err and "EXTRA    wheels/medix_r1-0.1.0+evil" in err
    )
    assert "--allow-extra" in err
    assert main(["bundle", "verify", str(b), "--no-progress", "--allow-extra"]) == 0
    assert "allowed by --allow-extra" in capsys.readouterr().err
    venv = tmp_path / "venv"
    r = _install(b, venv=venv)
    assert r.returncode == 1 and "EXTRA    wheels/tqdm-99.0.0" in r.stderr and "refusing" in r.stderr, (
        r.stderr
    )
    assert not venv.exists()

    r = _install(b, "--allow-extra", venv=venv)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    py = str(venv / "bin" / "python")
    code = "import importlib.util as u, medix_r1, demo_pkg; "
    code += "print(medix_r1.WHO, demo_pkg.WHO, u.find_spec('tqdm'))"
    out = subprocess.run([py, "-I", "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["listed", "demo_pkg", "1.0", "None"], out

    listed = b / "wheels" / "demo_pkg-1.0-py3-none-any.whl"
    data = bytearray(listed.read_bytes())
    data[40] ^= 1  # same size, one bit: ALTERED
    listed.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(b), "--no-progress", "--allow-extra"]) == 1
    assert "ALTERED  wheels/demo_pkg-1.0-py3-none-any.whl: sha256" in capsys.readouterr().err
    r = _install(b, "--allow-extra", venv=tmp_path / "venv2")
    assert r.returncode == 1 and "ALTERED  wheels/demo_pkg" in r.stderr and not (tmp_path / "venv2").exists()


def test_half_written_bundle_says_to_rerun_create(tmp_path: Path, capsys) -> None:
    b = _fake_bundle(tmp_path / "b")
    (b / MANIFEST).unlink()  # what a kill before the last step leaves
    assert main(["bundle", "verify", str(b)]) == 2
    err = capsys.readouterr().err
    assert MANIFEST in err and "interrupted" in err and "rerun" in err
    args = argparse.Namespace(bundle=str(b), judge_model=None)
    with pytest.raises(BundleError, match="not a finished bundle"):
        resolve_bundle(args, judge="judge_model")


def test_unreadable_json_names_the_file_and_the_remedy(tmp_path: Path, capsys) -> None:
    b = _fake_bundle(tmp_path / "b")
    (b / MANIFEST).write_text("{not json", encoding="utf-8")
    assert main(["bundle", "verify", str(b)]) == 2
    err = capsys.readouterr().err
    assert MANIFEST in err and "not readable JSON" in err and "copy the bundle again" in err
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(
        MissingModelError, match=r"config\.json: not readable JSON .*copy the checkpoint again"
    ):
        describe_model(ck, "policy")


def test_truncated_wheels_are_removed_for_a_resume(tmp_path: Path) -> None:
    good = tmp_path / "a-1-py3-none-any.whl"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("a/__init__.py", "x" * 1000)
    cut = tmp_path / "b-1-py3-none-any.whl"
    cut.write_bytes(good.read_bytes()[:200])
    (tmp_path / "c.whl.part").write_bytes(b"x")
    assert check_wheelhouse(tmp_path) == [cut.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]


def test_resolve_bundle_fills_only_what_is_not_given(tmp_path: Path, monkeypatch) -> None:
    b = _fake_bundle(tmp_path / "b")
    args = argparse.Namespace(bundle=None, judge_model=None, judge_url=None, embed_model="mine")
    monkeypatch.setenv(ENV, str(b))
    models = resolve_bundle(args, judge="judge_model", judge_skip="judge_url", embed="embed_model")
    assert models is not None and args.judge_model == str((b / "models/judge/j.gguf").resolve())
    assert args.embed_model == "mine"
    args = argparse.Namespace(bundle=str(b), judge_model=None, judge_url="http://x/v1")
    resolve_bundle(args, judge="judge_model", judge_skip="judge_url")
    assert args.judge_model is None  # a judge server given: the bundle's GGUF is not forced on top
    (b / "models/judge/j.gguf").unlink()
    with pytest.raises(BundleError, match="judge model is missing"):
        resolve_bundle(argparse.Namespace(bundle=str(b), judge=None), judge="judge")


def test_train_takes_the_bundle_judge(tmp_path: Path, capsys) -> None:
    b = _fake_bundle(tmp_path / "b")
    assert main(["train", "--bundle", str(b), "--print-config"]) == 0
    judge = str((b / "models/judge/j.gguf").resolve())
    assert any(line.strip().startswith(f"model: {judge}") for line in capsys.readouterr().out.splitlines())
    given = "--reward.judge.model=/elsewhere/mine.gguf"
    assert main(["train", "--bundle", str(b), given, "--print-config"]) == 0
    assert judge not in capsys.readouterr().out


def test_install_sh_refuses_another_python_and_platform(tmp_path: Path) -> None:
    b = _fake_bundle(tmp_path / "b", python="3.9")
    r = subprocess.run(
        ["bash", str(b / "install.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode != 0 and "for Python 3.9" in r.stderr and "--python" in r.stderr
    b = _fake_bundle(tmp_path / "c", wheel="demo_pkg-1.0-cp311-cp311-win_amd64.whl")
    r = subprocess.run(
        ["bash", str(b / "install.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode != 0 and "win_amd64" in r.stderr and "--platform" in r.stderr


def test_target_platforms_include_the_older_tags_they_run() -> None:
    tags = expand_platforms(["manylinux_2_28_x86_64"])
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags
    assert expand_platforms(["musllinux_1_2_aarch64"])[:2] == [
        "musllinux_1_2_aarch64",
        "musllinux_1_1_aarch64",
    ]
    assert expand_platforms(["win_amd64"]) == ["win_amd64"]


def test_dependencies_are_walked_with_the_target_markers(tmp_path: Path) -> None:
    """pip evaluates markers for the interpreter running it; the wheelhouse check uses the target's."""
    with zipfile.ZipFile(tmp_path / "a-1.0-py3-none-any.whl", "w") as z:
        z.writestr(
            "a-1.0.dist-info/METADATA",
            "Name: a\nVersion: 1.0\nRequires-Dist: old>=1; python_version < '3.11'\n"
            "Requires-Dist: new; python_version >= '3.11'\nRequires-Dist: win; sys_platform == 'win32'\n",
        )
    assert missing_requirements(tmp_path, ["a"], host_target("3.10", ["manylinux2014_x86_64"])) == ["old>=1"]
    assert missing_requirements(tmp_path, ["a"], host_target("3.12", ["manylinux2014_x86_64"])) == ["new"]
    assert sorted(missing_requirements(tmp_path, ["a"], host_target("3.12", ["win_amd64"]))) == ["new", "win"]


# --- end to end, slow ---------------------------------------------------------------------------------------


def _source_key() -> str:
    h = hashlib.sha256()
    paths = [ROOT / n for n in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md")]
    for sub in ("python/medix_r1", "rust"):
        paths += sorted(
            p
            for p in (ROOT / sub).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and "target" not in p.parts and p.suffix != ".so"
        )
    for p in paths:
        if p.is_file():
            h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _medix_wheel() -> Path:
    """medix-r1's wheel for this source state, built with maturin once (the Rust build is cached too)."""
    out = CACHE / f"medix-wheel-{_source_key()}"
    have = sorted(out.glob("medix_r1-*.whl"))
    if have:
        return have[-1]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**os.environ, "CARGO_TARGET_DIR": str(CACHE / "cargo-target")}
    cmd = [sys.executable, "-m", "maturin", "build", "--release", "--locked", "--quiet", "-o", str(tmp)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    for old in CACHE.glob("medix-wheel-*"):  # earlier source states
        if old != tmp:
            shutil.rmtree(old, ignore_errors=True)
    tmp.rename(out)
    return sorted(out.glob("medix_r1-*.whl"))[-1]


def _wheelhouse(medix_wheel: Path, extras: list[str]) -> Path:
    """The judge+embed dependencies re-packed from this environment, once per environment."""
    reqs = extras_requirements(medix_wheel, extras)
    key = hashlib.sha256(f"{sys.prefix}|{sorted(reqs)}".encode()).hexdigest()[:16]
    out = CACHE / f"wheelhouse-{key}"
    if (out / ".complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    repack_environment(reqs, out, log=lambda m: None)
    (out / ".complete").touch()
    return out


def _no_network() -> tuple[list[str], dict[str, str], str]:
    """A command prefix and environment that really block the network, and how."""
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    ):
        return ["unshare", "-rn"], {}, "unshare -rn (a network namespace with only loopback)"
    dead = "http://127.0.0.1:9"
    env = {
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "PIP_NO_INDEX": "1",
    }
    return [], env, "proxies to a dead port and PIP_NO_INDEX=1 (unshare -rn is not permitted here)"


@pytest.mark.slow
def test_offline_bundle_end_to_end(gguf_path: Path, minilm_hf_dir: Path, tmp_path: Path) -> None:
    extras = ["judge", "embed"]
    t = [time.perf_counter()]

    def lap(what: str) -> None:  # phase times, shown with -s (not asserted)
        t.append(time.perf_counter())
        print(f"  {what}: {t[-1] - t[-2]:.1f}s")

    wheel = _medix_wheel()
    house = _wheelhouse(wheel, extras)
    lap("medix wheel + wheelhouse (cached)")
    prefix, block_env, how = _no_network()
    print(f"network blocked with {how}")
    env = {
        **os.environ,
        **block_env,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.pop(ENV, None)
    b = tmp_path / "medix-bundle"
    create = [
        *prefix,
        sys.executable,
        "-m",
        "medix_r1.cli",
        "bundle",
        "create",
        "--out",
        str(b),
        "--judge",
        str(gguf_path),
        "--policy",
        str(gguf_path),
        "--embed",
        str(minilm_hf_dir),
        "--extras",
        ",".join(extras),
        "--medix-wheel",
        str(wheel),
        "--no-index",
        "--find-links",
        str(house),
    ]
    r = subprocess.run(create, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    lap("bundle create")
    manifest = json.loads((b / MANIFEST).read_text())
    assert (
        manifest["models"]["embed"]["kind"] == "onnx" and (b / manifest["models"]["embed"]["path"]).is_dir()
    )
    assert manifest["models"]["judge"]["license"] == "apache-2.0"
    assert {"medix-r1", "llama-cpp-python", "fastembed", "onnxruntime", "numpy"} <= set(manifest["versions"])
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])

    # A kill late in a run: no manifest, a truncated wheel, a stray partial copy. A rerun finishes it.
    (b / MANIFEST).unlink()
    numpy_whl = next((b / "wheels").glob("numpy-*.whl"))
    numpy_whl.write_bytes(numpy_whl.read_bytes()[:1000])
    (b / "models" / "judge" / "stray.gguf.part").write_bytes(b"half")
    r = subprocess.run(create, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "truncated wheels" in r.stderr and "already there" in r.stderr
    assert not list(b.rglob("*.part")) and verify_bundle(b).ok
    lap("resume after a kill + verify")

    # The offline machine: a fresh venv, install.sh and every command with the network unavailable.
    venv = tmp_path / "venv"
    clean = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS", "VIRTUAL_ENV")}
    r = subprocess.run(
        [*prefix, "bash", str(b / "install.sh"), "--venv", str(venv)],
        env=clean,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    medix = [*prefix, str(venv / "bin" / "medix")]
    lap("install.sh into a fresh venv")

    r = subprocess.run(
        [*medix, "doctor", "--bundle", str(b), "--json"], env=clean, capture_output=True, text=True
    )
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"], r.stdout
    names = {c["name"]: c for c in report["checks"]}
    assert all(set(c) >= {"name", "ok", "detail", "fix"} for c in report["checks"])
    assert names["model judge"]["ok"] and "chat template" in names["model judge"]["detail"]
    assert names["model embed"]["ok"] and "ONNX Runtime" in names["model embed"]["detail"]
    assert names["llama.cpp"]["ok"] and names["package fastembed"]["ok"]
    lap("doctor")

    r = subprocess.run([*medix, "bundle", "verify", str(b)], env=clean, capture_output=True, text=True)
    assert r.returncode == 0 and "all" in r.stdout, r.stderr

    rows = tmp_path / "rows.jsonl"
    row = {"response": "<think>fever, cough</think><answer>pneumonia</answer>", "ground_truth": "pneumonia"}
    rows.write_text(json.dumps(row) + "\n")
    out = tmp_path / "scored.jsonl"
    score = [*medix, "reward", "score", "--bundle", str(b), "--input", str(rows), "--output", str(out)]
    r = subprocess.run([*score, "--no-progress"], env=clean, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    scored = json.loads(out.read_text())
    assert scored["accuracy_llm"] is not None and scored["accuracy_embed"] == 1.0, scored
    lap("verify + reward score")

    # The eval extra (datasets, matplotlib, ...) is not in this bundle: eval runs in the test environment,
    # finding its policy and judge through MEDIX_BUNDLE, with the network blocked the same way.
    ev = tmp_path / "eval"
    run = [*prefix, sys.executable, "-m", "medix_r1.cli", "eval", "run", "--tasks", "demo", "--limit", "1"]
    run += ["--max-new-tokens", "24", "--out", str(ev), "--no-progress"]
    r = subprocess.run(run, env={**env, ENV: str(b)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (ev / "demo" / "judgements.jsonl").is_file() and (ev / "scores.csv").is_file()
    lap("eval run")

    # A model file altered after the transfer: verify fails and names it.
    judge = b / manifest["models"]["judge"]["path"]
    with open(judge, "r+b") as f:
        f.seek(judge.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = subprocess.run([*medix, "bundle", "verify", str(b)], env=clean, capture_output=True, text=True)
    assert r.returncode == 1 and f"ALTERED  {manifest['models']['judge']['path']}" in r.stderr
