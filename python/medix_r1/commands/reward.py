"""`medix reward`: score (response, ground truth) pairs from a JSONL file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reward", help="score completions with the MediX-R1 composite reward")
    p.set_defaults(group_parser=p)
    rsub = p.add_subparsers(dest="reward_command", metavar="SUBCOMMAND")
    s = rsub.add_parser("score", help="score a JSONL file of {response, ground_truth} rows")
    s.add_argument("--input", required=True, help="JSONL with at least `response` and `ground_truth` per line")
    s.add_argument("--output", required=True, help="JSONL to write (rows already there are kept and skipped)")
    s.add_argument("--mode", choices=["strict", "reference"], default="strict")
    s.set_defaults(handler=_score)


def _score(args: argparse.Namespace) -> int:
    from medix_r1.rewards.score_file import score_file

    return score_file(args)
