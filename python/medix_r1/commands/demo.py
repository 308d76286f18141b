"""`medix demo`: a few minutes of offline MediX-R1 training on a CPU with tiny real models."""

from __future__ import annotations

import argparse
from pathlib import Path

from medix_r1.commands import command


def register(sub: argparse._SubParsersAction) -> None:
    from medix_r1.train.demo import DEMO_COMPARE, DEMO_STEPS

    p = command(
        sub,
        "demo",
        _demo,
        help="train a tiny policy for a few minutes on CPU, offline (adapter, metrics.jsonl, chart)",
        description="Trains SmolLM2-135M-Instruct with GRPO and the full MediX-R1 reward (llama.cpp "
        "judge, ONNX embedder) on the bundled medical QA set, printing the reward components per step.",
    )
    p.add_argument("--out", default="medix-demo", help="output directory (default: ./medix-demo)")
    p.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"optimizer steps (default {DEMO_STEPS})")
    p.add_argument(
        "--compare",
        type=int,
        default=DEMO_COMPARE,
        metavar="N",
        help=f"at the end, answer N demo questions with the base and the trained policy and compare their "
        f"rewards (table, before_after.json, before_after.png; 0: skip; default {DEMO_COMPARE})",
    )
    p.add_argument("--policy", help="policy GGUF or checkpoint dir (default: the test model)")
    p.add_argument("--judge", help="judge GGUF (default: the test model)")
    p.add_argument("--embedder", help="ONNX embedder directory (default: the test MiniLM, exported once)")
    from medix_r1.commands.train import add_run_options

    add_run_options(p)


def _demo(args: argparse.Namespace) -> int:
    import time

    from medix_r1.errors import UserError
    from medix_r1.train.config import collect_overrides

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.compare < 0:
        raise UserError("--compare must be >= 0")
    from medix_r1.bundle import resolve_bundle

    resolve_bundle(args, policy="policy", judge="judge", embed="embedder")
    from medix_r1.train.demo import demo_config, find_test_models, run_demo

    # A bad override fails here, before any model is touched; checked on top of the demo's own settings, so
    # e.g. --reward.judge.n_threads=1 alone is fine (the demo names the judge).
    placeholder = {k: Path(k) for k in ("policy", "judge", "embedder")}
    demo_config(args.out, args.steps, placeholder, collect_overrides(args))

    # MissingModelError / ConfigError / DataError are MedixErrors: the CLI prints them and exits 2.
    models = find_test_models(args.policy, args.judge, args.embedder)
    t0 = time.perf_counter()
    result = run_demo(args.out, args.steps, models, collect_overrides(args), compare=args.compare)
    dt = time.perf_counter() - t0
    compared = f", before/after {result['compare_chart']}" if result.get("compare_chart") else ""
    print(
        f"medix demo: {result['steps']} steps in {dt:.0f}s; adapter {result['adapter']}/adapter_config.json, "
        f"metrics {result['metrics']}, chart {result['chart']}{compared}"
    )
    return 0
