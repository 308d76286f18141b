"""CLI subcommand modules; each defines register(subparsers)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """`medix NAME SUBCOMMAND ...`: the group's parser (its help is shown when no subcommand is given) and
    the subparsers its subcommands register on."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """`medix NAME ...` (or `medix GROUP NAME ...` on a group's subparsers): a command's parser, run by
    ``handler(args)`` (its exit status)."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(handler=handler, group_parser=p)
    return p
