"""`medix train`: RL-train a medical (vision-)language model from one YAML file plus dotted overrides."""

from __future__ import annotations

import argparse

from medix_r1.commands import command


def register(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "train",
        _train,
        help="train with GRPO / DAPO / GSPO / Dr. GRPO and the MediX-R1 reward",
        description="Train from a YAML run file. Any option can be overridden as --section.key=value "
        "(e.g. --train.max_steps=10 --reward.judge.model=judge.gguf); --print-config lists them all.",
    )
    p.add_argument("--config", help="YAML run file (sections model, data, algo, lora, reward, train)")
    p.add_argument("--print-config", action="store_true", help="print every option with its default and help")
    p.add_argument(
        "--plan", action="store_true", help="print the commands to run this config on the GPUs seen"
    )
    p.add_argument("--gpus", type=int, default=None, help="with --plan: plan for this many GPUs instead")
    p.add_argument(
        "--strategy", choices=["zero3", "fsdp"], default="zero3", help="with --plan: sharding for 3+ GPUs"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in train.output_dir"
    )
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """What a command that runs training takes beside its own options (``train``, ``demo``): the
    ``--section.key=value`` overrides, ``--bundle`` and the in-process judge's llama.cpp CPU buffers (YAML:
    reward.judge.llama_extra_buffers)."""
    from medix_r1.bundle import add_bundle_option
    from medix_r1.llm.cpu import add_llama_cpu_option
    from medix_r1.train.config import add_override_options

    add_override_options(p)
    add_bundle_option(p)
    add_llama_cpu_option(p)


def _train(args: argparse.Namespace) -> int:
    from medix_r1.bundle import resolve_bundle
    from medix_r1.errors import UserError
    from medix_r1.train.config import collect_overrides, load_config, render_config

    resolve_bundle(
        args,
        policy="ov__model.path",
        judge="ov__reward.judge.model",
        judge_skip="ov__reward.judge.url",
        embed="ov__reward.embed.model",
    )
    # Every value is converted and checked here, before any model loads; a bad one is a ConfigError (a
    # MedixError: the CLI prints it as one line and exits 2), as are bad data, a missing model, a missing
    # GPU and a judge outage.
    cfg = load_config(args.config, collect_overrides(args))
    if args.print_config:
        print(render_config(cfg), end="")
        return 0
    if args.plan:
        from medix_r1.train.plan import count_gpus, make_plan

        n = args.gpus if args.gpus is not None else count_gpus()
        print(make_plan(cfg, args.config, n, args.strategy), end="")
        return 0
    from medix_r1.train.trainer import refuse_accelerate_cpu_launch, run_training

    refuse_accelerate_cpu_launch()  # before anything else: it started one process where N were meant
    if not args.config:
        raise UserError("--config FILE is required (see --print-config for the options)")

    try:
        result = run_training(cfg, resume=args.resume)
    except FileExistsError as e:  # the output directory holds another run's checkpoints
        raise UserError(str(e)) from None
    from medix_r1.train.trainer import is_reporting_process

    if not is_reporting_process():
        return 0
    print(
        f"medix: {result['steps']} steps done; adapter in {result['adapter']}, metrics in {result['metrics']}"
        + (f", chart {result['chart']}" if result["chart"] else "")
    )
    return 0
