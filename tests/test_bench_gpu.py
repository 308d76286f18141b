"""The GPU proof's CPU side: bench_gpu.py's dry run and report, and how our GRPOTrainer subclass composes with
the trainer Unsloth generates from TRL's (medix_r1.train.compose)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
KEYS = {
    "arch",
    "backend",
    "device",
    "status",
    "step_s",
    "peak_alloc_gib",
    "peak_reserved_gib",
    "versions",
    "error",
}


def _bench(tmp_path: Path, *args: str, timeout: int = 240) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--out", str(out), "--cache", str(tmp_path / "cache"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.is_file(), p.stderr[-2000:]
    return p.returncode, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_text_dry_run_on_cpu_reports_every_step(tmp_path: Path, gguf_path: Path) -> None:
    rc, d = _bench(
        tmp_path,
        *("--arch", "tiny-text", "--backend", "transformers", "--device", "cpu"),
        *("--steps", "2", "--max-completion-length", "8", "--group", "2", "--set", "algo.beta=0"),
    )
    assert rc == 0, d.get("traceback")
    assert set(d) >= KEYS
    assert (d["arch"], d["backend"], d["device"], d["status"], d["error"]) == (
        "tiny-text",
        "transformers",
        "cpu",
        "ok",
        None,
    )
    assert len(d["step_s"]) == 2 and all(s > 0 for s in d["step_s"])
    assert d["peak_alloc_gib"] is None and d["peak_reserved_gib"] is None  # no GPU: no GPU memory to report
    assert d["gen_tokens_per_s"] > 0 and len(d["gen_s"]) == 2
    assert d["versions"]["torch"] and d["versions"]["trl"] == "1.15.0"
    assert d["steps_done"] == 2


def test_unsloth_without_unsloth_is_a_reported_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("unsloth") is not None:
        pytest.skip("unsloth is installed here")
    rc, d = _bench(tmp_path, "--arch", "tiny-text", "--backend", "unsloth", "--device", "cpu", timeout=60)
    assert rc == 1
    assert d["status"] == "error" and "unsloth is not installed" in d["error"]
    assert set(d) >= KEYS and d["step_s"] == []


def test_gpu_scripts_are_valid_bash_and_the_device_command_is_short() -> None:
    for name in ("gpu-check.sh", "gpu-carry.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], check=True)
    notes = (ROOT / "docs-notes" / "gpu.md").read_text()
    cmd = re.search(r"command: `([^`]+)`", notes)
    assert cmd is not None and "scripts/gpu-check.sh" in cmd.group(1) and len(cmd.group(1)) < 2000


# -- composing with Unsloth's trainer ---------------------------------------------------------------------
def test_trl_methods_we_override_have_the_signatures_we_call() -> None:
    from trl import GRPOTrainer

    rewards = inspect.signature(GRPOTrainer._calculate_rewards)
    assert list(rewards.parameters) == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == [
        "self",
        "inputs",
    ]
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    # Reached through self (so through our override, in TRL's class and in Unsloth's copy of its source) ...
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in src
    # ... and returning per-row advantages, the tensor our override replaces.
    assert re.search(r"[\"']advantages[\"']\s*:\s*advantages", src)


@pytest.fixture
def restore_trl(monkeypatch: pytest.MonkeyPatch):
    yield monkeypatch
    monkeypatch.undo()
    from medix_r1.train.compose import trainer_class

    trainer_class()  # rebuilt on TRL's own class again for the other tests


def test_subclass_is_rebuilt_on_the_patched_trl_grpo_trainer(restore_trl: pytest.MonkeyPatch) -> None:
    import trl
    import trl.trainer
    import trl.trainer.grpo_trainer
    from medix_r1.train.compose import is_unsloth_trainer, trainer_class
    from transformers import Trainer

    before = trainer_class()
    assert trl.GRPOTrainer in before.__mro__ and not is_unsloth_trainer(before)

    calls: list[str] = []

    # What Unsloth installs: a class generated from TRL's source, NOT a subclass of TRL's GRPOTrainer.
    class _UnslothGRPOTrainer(Trainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
            calls.append("unsloth._calculate_rewards")

        def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
            calls.append("unsloth._generate_and_score_completions")

    class UnslothGRPOTrainer(_UnslothGRPOTrainer):
        pass

    for mod in (trl, trl.trainer, trl.trainer.grpo_trainer):
        restore_trl.setattr(mod, "GRPOTrainer", UnslothGRPOTrainer)

    cls = trainer_class()
    assert cls is not before and is_unsloth_trainer(cls)
    mro = cls.__mro__
    assert mro[1] is UnslothGRPOTrainer and before.__mro__[1] not in mro  # TRL's pristine loop is gone
    for name in ("_calculate_rewards", "_generate_and_score_completions"):
        assert name in cls.__dict__  # our override sits first ...
        getattr(super(cls, object.__new__(cls)), name)(*([None] * (4 if "rewards" in name else 1)))
    assert calls == [
        "unsloth._calculate_rewards",
        "unsloth._generate_and_score_completions",
    ]  # ... over theirs
    assert trainer_class() is cls  # built once per base


def test_unsloth_source_still_calls_our_overrides() -> None:
    """Unsloth's rewrite of TRL's loop, read from its wheel when scripts/gpu-carry.sh downloaded it."""
    wheels = sorted((Path.home() / ".cache/medix-r1/gpu-dl").glob("unsloth-2026.10.9-*.whl"))
    if not wheels:
        pytest.skip("no unsloth wheel here (scripts/gpu-carry.sh downloads it)")
    with zipfile.ZipFile(wheels[0]) as z:
        rl = z.read("unsloth/models/rl.py").decode()
        repl = z.read("unsloth/models/rl_replacements.py").decode()
    # The three names rebound to the generated trainer, so trainer_class() finds it through trl.GRPOTrainer.
    for target in (
        "trl.{RLTrainer_name}",
        "trl.trainer.{RLTrainer_name}",
        "trl.trainer.{trainer_file}.{RLTrainer_name}",
    ):
        assert f'f"{target} = created_module.Unsloth{{RLTrainer_name}}"' in rl
    assert "self._calculate_rewards(inputs, prompts_text, completions_text, completion_ids_list)" in repl
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in repl
    assert 'advantages = inputs["advantages"]' in repl


@pytest.mark.slow
def test_real_unsloth_patch_composes(tmp_path: Path) -> None:
    """The real Unsloth 2026.10.9 patch, forced on the CPU in a child process: trl.GRPOTrainer becomes the
    generated class, and trainer_class() puts our overrides on top of it."""
    dl = Path.home() / ".cache/medix-r1/gpu-dl"
    wheels = [sorted(dl.glob(f"{n}-2026.10.9-*.whl")) for n in ("unsloth", "unsloth_zoo")]
    wheels.append(sorted(dl.glob("bitsandbytes-*.whl")))
    if not all(wheels) or importlib.util.find_spec("triton") is None:
        pytest.skip("the unsloth wheels (scripts/gpu-carry.sh) or triton are not here")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site)]
        + [str(w[-1]) for w in wheels],
        check=True,
        capture_output=True,
    )
    code = (
        "import unsloth, trl\n"
        "from unsloth.models.rl import patch_trl_rl_trainers\n"
        "from medix_r1.train.compose import trainer_class\n"
        "before = trainer_class()\n"
        "patch_trl_rl_trainers()\n"  # what PatchFastRL does on a GPU (UNSLOTH_ALLOW_CPU skips it)
        "cls = trainer_class()\n"
        "print([c.__name__ for c in cls.__mro__[:3]], trl.GRPOTrainer.__name__, before in cls.__mro__,\n"
        "      [n in cls.__dict__ for n in ('_calculate_rewards', '_generate_and_score_completions')])\n"
    )
    # medix_r1 as the tests import it (the installed wheel in CI, or PYTHONPATH of a dev checkout).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    env.update(UNSLOTH_ALLOW_CPU="1", UNSLOTH_DISABLE_STATISTICS="1", HF_HUB_OFFLINE="1")
    p = subprocess.run(  # in tmp_path: Unsloth writes its compiled cache into the working directory
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    mro = "['MedixGRPOTrainer', 'UnslothGRPOTrainer', '_UnslothGRPOTrainer']"
    expect = f"{mro} UnslothGRPOTrainer False [True, True]"  # TRL's pristine class is out of the MRO
    assert last == expect
