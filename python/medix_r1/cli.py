"""The ``medix`` console script: one entry point, one module per subcommand group.

Each module in ``medix_r1.commands`` registers its parser; heavy libraries (torch, llama.cpp, fastembed) are
imported only inside the handler that runs, so ``medix --help`` and the reward tools start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from medix_r1 import __version__
from medix_r1.errors import MedixError, MedixInputError, UserError

__all__ = ["UserError", "build_parser", "main"]  # UserError: kept importable from here

# (module in medix_r1.commands, the subcommand it registers): kept in the order --help lists them.
COMMANDS = (
    "demo", "train", "data", "reward", "judge", "embed", "eval", "export", "serve", "bundle", "doctor",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """No prefix matching: `--train.max_step=7` is an error, not `--train.max_steps`. Subcommand parsers
    are made with the class of their parent, so every parser of the CLI is one of these."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medix",
        description="Offline MediX-R1: train medical (vision-)language models with RL and evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"medix-r1 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"medix_r1.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # A group without a subcommand (e.g. `medix eval`): show that group's help.
        (getattr(args, "group_parser", None) or parser).print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except (MedixError, MedixInputError) as e:
        from medix_r1.llm.remote import redact_urls

        print(f"medix: error: {redact_urls(str(e))}", file=sys.stderr)  # never a URL's credentials
        return 2
    except KeyboardInterrupt:
        print("medix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
