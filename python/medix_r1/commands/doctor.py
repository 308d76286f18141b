"""`medix doctor`: one screen saying what this machine can do for medix-r1 and what is missing, with fixes."""

from __future__ import annotations

import argparse
import os

from medix_r1.commands import command


def register(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "doctor",
        _doctor,
        help="check this machine: Python, CPU, llama.cpp build, RAM, GPU, package versions, models, offline",
        description="Checks what medix-r1 needs here and prints each problem with its fix; exit status 1 "
        "when something needed is missing. With --bundle, also the bundle's files (sizes) and its models.",
    )
    from medix_r1.bundle import add_bundle_option

    add_bundle_option(p)
    p.add_argument("--config", metavar="YAML", help="a training run file: estimate its peak GPU memory")
    p.add_argument(
        "--judge-model", "--judge", dest="judge_model", metavar="FILE.gguf",
        help="a GGUF judge to self-test (opened in a child process, one batched decode)",
    )  # fmt: skip
    p.add_argument("--policy", metavar="FILE.gguf", help="a GGUF policy to self-test the same way")
    from medix_r1.llm.cpu import add_llama_cpu_option

    add_llama_cpu_option(p)
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU check (it imports torch: seconds)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": ..., "checks": [{name, ok, detail, fix}], "llama_cpu": {the CPU path chosen}, '
        '"self_tests": [{role, ok, signal, cause, fix}]}',
    )


def _doctor(args: argparse.Namespace) -> int:
    from medix_r1.bundle import ENV
    from medix_r1.doctor import render, run_checks, to_json

    report: dict = {}
    ggufs = {"judge": args.judge_model, "policy": args.policy}
    checks = run_checks(
        bundle=args.bundle or os.environ.get(ENV) or None,
        config=args.config,
        gpu=not args.no_gpu,
        ggufs={k: v for k, v in ggufs.items() if v},
        report=report,
    )
    print(to_json(checks, report) if args.json else render(checks))
    return 1 if any(not c.ok and c.required for c in checks) else 0
