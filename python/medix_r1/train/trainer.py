"""Run one training job from a RunConfig: check the data, load the policy on the chosen backend, build the
composite reward, train with MedixGRPOTrainer, and leave the adapter, ``metrics.jsonl`` (one row per step with
every reward component and monitor) and a chart in ``train.output_dir``.

Several processes: on the CPU ``torchrun --nproc-per-node N -m medix_r1.cli train ...`` (gloo), on GPUs the
``accelerate launch`` that ``medix train --plan`` prints. Every process runs this function; only the main
process touches the output directory (metrics, run config, adapter, chart), so the outputs are those of one
process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medix_r1 import errors
from medix_r1.config import redacted
from medix_r1.rewards.components import step_line
from medix_r1.rewards.composite import CompositeReward
from medix_r1.train.config import RunConfig, TrainerKnobs, _to_dict
from medix_r1.train.data import DataError, check_rows, load_rows, rows_for_run
from medix_r1.train.monitors import COMPLETIONS_FILE

__all__ = [
    "METRICS_FILE",
    "build_reward",
    "last_checkpoint",
    "prepare_rows",
    "process_info",
    "refuse_accelerate_cpu_launch",
    "run_training",
    "torchrun_command",
]

METRICS_FILE = "metrics.jsonl"
CHART_FILE = "reward_components.png"
ADAPTER_DIR = "adapter"


def build_reward(cfg: RunConfig) -> CompositeReward:
    reward = CompositeReward(cfg.reward)
    _ = reward.judge  # start the judge (a supervised worker process) now: one that cannot load fails here
    return reward


def prepare_rows(cfg: RunConfig, *, report: Callable[[str], None] = print) -> tuple[list[dict], Path]:
    """Load and check the dataset; refuse bad rows unless ``data.skip_bad`` (then skip and report them)."""
    if not cfg.data.path:
        raise DataError(
            "data.path is not set (a local JSONL, Parquet, image folder or save_to_disk directory)"
        )
    rows, base = load_rows(cfg.data.path)
    if cfg.data.max_samples:
        rows = rows[: cfg.data.max_samples]
    problems = check_rows(rows, base)
    if problems:
        listing = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        if not cfg.data.skip_bad:
            raise DataError(
                f"{cfg.data.path}: {len(problems)} problem(s) in {len({p.row for p in problems})} row(s):\n"
                f"{listing}{more}\nFix them, or pass --data.skip_bad=true to skip those rows."
            )
        bad = {p.row for p in problems}
        rows = [r for i, r in enumerate(rows, 1) if i not in bad]
        report(f"medix: skipping {len(bad)} bad row(s) of {len(rows) + len(bad)}:\n{listing}{more}")
    if not rows:
        raise DataError(f"{cfg.data.path}: no usable rows")
    return rows, base


def last_checkpoint(output_dir: str | Path) -> Path | None:
    d = Path(output_dir)
    if not d.is_dir():
        return None
    ckpts = [p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    # A checkpoint counts once its trainer state is written (the last file the Trainer saves).
    ckpts = [p for p in ckpts if (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def is_reporting_process() -> bool:
    """True in the one process that prints the final summary: a plain run, or rank 0 under torchrun."""
    return process_info()[0] == 0


def process_info() -> tuple[int, int]:
    """(rank, number of processes) under torchrun (or ``accelerate launch`` on GPUs), readable before any
    process group exists; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def torchrun_command(argv: list[str] | None = None, n: str = "N") -> str:
    """The CPU multi-process form of this ``medix`` command: ``torchrun --nproc-per-node N -m medix_r1.cli
    ...``."""
    import shlex
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    return f"torchrun --nproc-per-node {n} -m medix_r1.cli {shlex.join(args)}".rstrip()


def refuse_accelerate_cpu_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` (N > 1, no MPI) starts ONE process and tells it nothing
    of N: it sets ``ACCELERATE_USE_CPU`` and ``MASTER_ADDR`` but no rank. Training on would silently use one
    process, so this says how to start N with torch's own launcher instead."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes") or "MASTER_ADDR" not in env:
        return
    ranked = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
    if any(k in env for k in ranked):
        return
    raise errors.UserError(
        "accelerate launch --cpu starts one process, not N; on the CPU run "
        f"`{torchrun_command()}` (torch's launcher: N ranked processes, gloo)"
    )


def _die_with_parent() -> None:
    """A ranked process ends when its launcher is killed (Linux), instead of training on as an orphan: a kill
    of the launcher's process group then stops the whole run (torchrun starts its workers in new sessions)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)


@contextlib.contextmanager
def _main_process_first(n_processes: int) -> Iterator[None]:
    """The main process runs the block first (it may convert and cache the policy), then the others."""
    if n_processes == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def _truncate_metrics(path: Path, max_step: int) -> None:
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue  # a torn last line from a kill
    path.write_text("".join(k + "\n" for k in keep))


def _fmt(v: Any) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _make_callbacks(out: Path, max_steps: int, echo: Callable[[str], None] | None) -> list[Any]:
    from transformers import TrainerCallback

    metrics_path = out / METRICS_FILE

    class MetricsCallback(TrainerCallback):
        """One JSONL row per optimizer step, flushed at once so a killed run keeps what it logged."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
            if not logs or not state.is_world_process_zero or "train_runtime" in logs:
                return
            row = {"step": state.global_step, **{k: _clean(v) for k, v in logs.items()}}
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
            if echo is not None:
                echo(
                    f"step {state.global_step:>4}/{max_steps}  {step_line(row, _fmt)}  "
                    f"| len {_fmt(row.get('monitor/completion_length'))}  "
                    f"degenerate {_fmt(row.get('monitor/degenerate_groups'))}  "
                    f"disagree {_fmt(row.get('monitor/judge_embed_disagreement'))}  "
                    f"repeated {_fmt(row.get('monitor/repeated_answers'))}"
                )

    return [MetricsCallback()]


def run_training(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = print,
    on_batch: Callable[[dict], None] | None = None,
    trainer_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train; returns paths of the outputs and the number of steps done.

    ``trainer_args`` overrides keyword arguments of ``trl.GRPOConfig`` (tests use it for batch shapes the
    run file does not express, e.g. a per-process batch that a group does not divide).
    """
    import yaml

    from medix_r1.train.backends import grpo_args, load_policy, select_backend

    refuse_accelerate_cpu_launch()
    rank, n_processes = process_info()
    if n_processes > 1:
        _die_with_parent()
    main = rank == 0
    if not main:
        echo = None  # one console report, from the main process
    out = Path(cfg.train.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = last_checkpoint(out)
    if overwrite:
        if main:
            for p in out.glob("checkpoint-*"):
                shutil.rmtree(p, ignore_errors=True)
            (out / METRICS_FILE).unlink(missing_ok=True)
            (out / COMPLETIONS_FILE).unlink(missing_ok=True)
        ckpt = None
    elif ckpt is not None and not resume:
        raise FileExistsError(
            f"{out} already holds checkpoints (last: {ckpt.name}); pass --resume to continue that run, "
            "or choose "
            "another train.output_dir"
        )
    if resume and ckpt is None and echo:
        echo(f"medix: no checkpoint in {out} yet; starting from step 0")
    metrics_path = out / METRICS_FILE
    if main:
        for path in (metrics_path, out / COMPLETIONS_FILE):  # rows past the checkpoint are done again
            if ckpt is not None:
                _truncate_metrics(path, int(ckpt.name.split("-")[-1]))
            elif not resume:
                path.unlink(missing_ok=True)
        # No URL credentials in the run folder (a judge URL's user:password@ or ?key=): redacted.
        (out / "run_config.yaml").write_text(yaml.safe_dump(redacted(_to_dict(cfg)), sort_keys=False))

    if echo:
        from medix_r1.judge.validate import validation_warning
        from medix_r1.llm.remote import redact_urls

        warning = validation_warning(cfg.reward.judge, cfg.reward.judge_report)
        if warning:
            echo(redact_urls(warning))  # it names the judge's URL
    backend = select_backend(cfg)
    if backend.notice and echo:
        echo(backend.notice)
    import torch

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rows, base = prepare_rows(cfg, report=echo or (lambda s: None))
    with _main_process_first(n_processes):
        model, proc, peft_cfg, vision = load_policy(cfg, backend)
    if not vision and any(r.get("image") for r in rows) and echo:
        echo("medix: warning: the policy is a text model; the rows' images are ignored")
    train_rows = rows_for_run(cfg.data, rows, base, vision=vision)

    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig

    from medix_r1.train.compose import trainer_class

    MedixGRPOTrainer = trainer_class()  # on Unsloth's patched trl.GRPOTrainer when Unsloth is loaded

    dataset = Dataset.from_list(train_rows)
    args = GRPOConfig(**{**grpo_args(cfg, backend), **(trainer_args or {})})
    reward = build_reward(cfg)
    trainer = MedixGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=proc,
        peft_config=peft_cfg,
        callbacks=_make_callbacks(out, cfg.train.max_steps, echo),
        medix=TrainerKnobs.from_config(cfg),
        on_batch=on_batch,
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)

    adapter_dir = out / ADAPTER_DIR
    chart = None
    if trainer.accelerator.is_main_process:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(adapter_dir))
        proc.save_pretrained(str(adapter_dir))
        if cfg.train.chart and metrics_path.is_file():
            from medix_r1.train.plot import plot_metrics

            chart = plot_metrics(metrics_path, out / CHART_FILE)
    trainer.accelerator.wait_for_everyone()  # no process exits while the adapter is being written
    return {
        "output_dir": out,
        "adapter": adapter_dir,
        "metrics": metrics_path,
        "chart": chart,
        "steps": trainer.state.global_step,
        "backend": backend,
        "num_processes": trainer.accelerator.num_processes,
    }
