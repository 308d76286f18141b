"""`medix judge`: not implemented yet (see the issue that adds it)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="(not implemented yet)")
    p.set_defaults(group_parser=p)
