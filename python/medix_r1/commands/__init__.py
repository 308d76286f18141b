"""CLI subcommand modules; each defines register(subparsers)."""

from __future__ import annotations

import argparse


def command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """`medix NAME SUBCOMMAND ...`: the group's parser (its help is shown when no subcommand is given) and
    the subparsers its subcommands register on."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
