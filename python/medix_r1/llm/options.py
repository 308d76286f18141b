"""The one declaration of the judge/LLM options on the command line.

Each option's default and help live once, on :class:`~medix_r1.llm.BackendConfig`'s fields (which are also the
YAML keys of a ``judge:`` / backend section); its flag spelling lives once, in :data:`FLAGS`. Every command
that takes a model builds its flags with :func:`add_llm_options` (``--judge-n-ctx`` in ``reward score``,
``eval``, ``judge serve/validate/inspect``; ``--n-ctx`` for the evaluated policy) and reads them back with
:func:`llm_overrides`; the model is opened by :func:`~medix_r1.llm.open_backend`. Flags default to None, so
a value from a YAML file is kept unless the flag is given; the help shows the declared default.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any

from medix_r1.llm.config import BackendConfig

__all__ = ["FLAGS", "LOCAL", "REMOTE", "add_llm_options", "declared_defaults", "llm_overrides"]

# BackendConfig field -> (flag suffix, other suffixes kept as aliases, type, metavar)
FLAGS: dict[str, tuple[str, tuple[str, ...], Any, str]] = {
    "model": ("model", (), str, "FILE.gguf"),
    "url": ("url", (), str, "URL"),
    "name": ("name", (), str, "NAME"),
    "n_ctx": ("n-ctx", ("ctx",), int, "N"),
    "n_threads": ("n-threads", ("threads",), int, "N"),
    "n_gpu_layers": ("n-gpu-layers", (), int, "N"),
    "api_key_env": ("api-key-env", (), str, "NAME"),
    "concurrency": ("concurrency", (), int, "N"),
    "timeout": ("timeout", (), float, "S"),
    "max_retries": ("max-retries", (), int, "N"),
}
LOCAL = ("model", "n_ctx", "n_threads", "n_gpu_layers")  # llama.cpp in-process
REMOTE = ("url", "name", "api_key_env", "concurrency", "timeout", "max_retries")  # a server


def declared_defaults() -> dict[str, Any]:
    """BackendConfig field -> its one default."""
    return {f.name: f.default for f in fields(BackendConfig) if f.default is not MISSING}


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def add_llm_options(
    parser: argparse.ArgumentParser | Any,
    *,
    prefix: str = "judge",
    names: Iterable[str] = LOCAL + REMOTE,
    old: Mapping[str, Iterable[str]] | None = None,
    help: Mapping[str, str] | None = None,  # a more specific help for one command
    cpu_option: bool = True,
) -> None:
    """Add the flags of ``names`` (BackendConfig fields) with ``prefix`` (``--judge-n-ctx``; "" for
    ``--n-ctx``), destination ``<prefix>_<name>``. ``old``: further spellings a command kept (e.g.
    ``{"model": ["--judge"]}``). ``cpu_option``: also ``--llama-extra-buffers`` (once per parser)."""
    helps = {f.name: f.metadata.get("help", "") for f in fields(BackendConfig)}
    defaults = declared_defaults()
    for name in names:
        suffix, aliases, typ, metavar = FLAGS[name]
        head = f"--{prefix}-" if prefix else "--"
        flags = [head + suffix] + [head + a for a in aliases] + list((old or {}).get(name, ()))
        text = (help or {}).get(name) or helps[name]
        d = defaults.get(name)
        if d is not None and "default" not in text:
            text += f" (default {d})"
        parser.add_argument(
            *dict.fromkeys(flags),
            dest=_dest(prefix, name),
            type=typ,
            metavar=metavar,
            default=None,
            help=text,
        )
    if cpu_option:
        from medix_r1.llm.cpu import add_llama_cpu_option

        target = parser
        while hasattr(target, "_container") and target is not getattr(target, "_container", target):
            target = target._container  # an argument group: check the parser's own options
        if "--llama-extra-buffers" not in getattr(target, "_option_string_actions", {}):
            add_llama_cpu_option(parser)


def llm_overrides(
    args: argparse.Namespace, *, prefix: str = "judge", names: Iterable[str] = LOCAL + REMOTE
) -> dict[str, Any]:
    """The options given on the command line (not None), as BackendConfig field -> value."""
    out = {}
    for name in names:
        v = getattr(args, _dest(prefix, name), None)
        if v is not None:
            out[name] = v
    return out
