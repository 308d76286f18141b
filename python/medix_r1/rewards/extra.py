"""Custom reward components: a Python function in a file, named ``path/to/file.py:function``.

Contract (relied on from outside): the function is called once per batch as
``function(completions=[str, ...], ground_truths=[str, ...], **other_columns)`` and returns one float, or
None (not applicable), per item. It is configured as ``extra: [{function: "path/to/file.py:function",
weight: 0.2}]`` in a reward config file (``reward.extra`` in a training run file). Its score is a column
named after the function (``reward score`` output, ``reward/<name>`` in metrics.jsonl, the chart), and
``overall`` includes it as a share of the total, as the paper's format weight is one::

    overall = (1 - W) * paper_overall + sum(w_i * s_i)    W = sum(w_i) over the extras that apply to the item

An extra that returns None for an item is left out of that item's sum and of its ``W`` (with no extra
applying, ``overall`` is the paper's, bit for bit); an item whose paper ``overall`` is unscorable stays
unscorable. The weights are in [0, 1] and sum to at most 1; weight 0 logs a component without rewarding it.

Loading is explicit and offline: only the files named in the configuration are executed, by path (relative
to the working directory), without touching ``sys.path``. A file that is missing, does not define the
function, or fails to import, and a function that raises or returns the wrong length or type, is a
:class:`~medix_r1.errors.RewardComponentError` naming ``file:function``; nothing is ever scored 0.0 in its
place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import numbers
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medix_r1.errors import RewardComponentError
from medix_r1.rewards.components import COMPONENTS

__all__ = ["ExtraComponent", "check_specs", "load_extras"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = ("function", "weight")


def _split(spec: str) -> tuple[str, str]:
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not path.endswith(".py") or not _NAME.match(name):
        raise ValueError(
            f"extra function {spec!r}: expected 'path/to/file.py:function' (a Python file and the name of a "
            "function defined in it)"
        )
    return path, name


def check_specs(items: Any) -> list[dict[str, Any]]:
    """The ``extra`` list of a reward config, checked and normalised to ``[{function, weight}, ...]``
    (ValueError naming the entry otherwise). Cheap: files are only looked at when loaded."""
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ValueError(
            f"extra must be a list of {{function: 'path/to/file.py:function', weight: W}}, got {items!r}"
        )
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    total = 0.0
    for k, item in enumerate(items):
        where = f"extra[{k}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected {{function: 'path/to/file.py:function', weight: W}}, got {item!r}")
        unknown = sorted(set(item) - set(_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {list(_KEYS)}")
        if "function" not in item:
            raise ValueError(f"{where}: `function: path/to/file.py:function` is missing")
        spec = str(item["function"])
        _, name = _split(spec)
        if "weight" not in item:
            raise ValueError(f"{where} ({spec}): `weight` is missing (its share of overall, in [0, 1])")
        w = item["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= 1:
            raise ValueError(f"{where} ({spec}): weight must be a number in [0, 1], got {w!r}")
        if name in COMPONENTS:
            raise ValueError(
                f"{where} ({spec}): the function's name {name!r} is a built-in column; rename the function"
            )
        if name in names:
            raise ValueError(
                f"{where} ({spec}): a second extra named {name!r} (also {names[name]}); its column would be "
                "ambiguous: rename one of the functions"
            )
        names[name] = spec
        total += float(w)
        out.append({"function": spec, "weight": float(w)})
    if total > 1 + 1e-12:
        raise ValueError(f"the extra weights sum to {total:g}; at most 1 (each is a share of overall)")
    return out


class ExtraComponent:
    """One configured custom component: the function loaded from its file on first use (and again after
    unpickling: the loaded module is not pickled, the file is read again and must hash the same)."""

    def __init__(self, spec: str, weight: float) -> None:
        self.spec = spec
        self.path, self.name = _split(spec)
        self.weight = float(weight)
        self.resolved = Path(self.path).expanduser().resolve()
        self.sha256 = self._hash()
        self._fn: Any = None

    def __repr__(self) -> str:
        return f"ExtraComponent({self.spec!r}, weight={self.weight:g})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fn"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _hash(self) -> str:
        p = self.resolved
        if not p.is_file():
            raise RewardComponentError(
                f"{self.spec}: file {self.path} not found (relative paths are read from the working "
                f"directory, {Path.cwd()})"
            )
        return hashlib.sha256(p.read_bytes()).hexdigest()

    def identity(self) -> dict[str, Any]:
        """What the resume fingerprint records: the path, the function's name, the file's hash, the weight."""
        return {
            "function": self.spec,
            "path": str(self.resolved),
            "name": self.name,
            "sha256": self.sha256,
            "weight": self.weight,
        }

    @property
    def function(self) -> Any:
        if self._fn is None:
            self._fn = self._load()
        return self._fn

    def _load(self) -> Any:
        data = self.resolved.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise RewardComponentError(
                f"{self.spec}: {self.path} changed since this reward was configured; restart to use the new file"
            )
        module_name = f"medix_r1_extra_{self.sha256[:16]}_{self.resolved.stem}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, self.resolved)
            if loader_spec is None or loader_spec.loader is None:
                raise RewardComponentError(f"{self.spec}: {self.path} cannot be loaded as a Python file")
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except Exception as e:
                raise RewardComponentError(
                    f"{self.spec}: importing {self.path} failed: {type(e).__name__}: {e}"
                ) from e
            sys.modules[module_name] = module  # lets pickle and dataclasses in that file find their module
        fn = getattr(module, self.name, None)
        if fn is None:
            raise RewardComponentError(f"{self.spec}: {self.path} defines no {self.name!r}")
        if not callable(fn):
            raise RewardComponentError(f"{self.spec}: {self.name!r} is a {type(fn).__name__}, not a function")
        return fn

    def score(
        self, completions: list[str], ground_truths: list[str], columns: Mapping[str, Sequence[Any]]
    ) -> list[float | None]:
        """The function's scores for one batch, checked: one finite number or None per item."""
        n = len(completions)
        fn = self.function
        try:
            out = fn(completions=list(completions), ground_truths=list(ground_truths), **dict(columns))
        except Exception as e:
            raise RewardComponentError(f"{self.spec} raised {type(e).__name__}: {e}") from e
        if isinstance(out, (str, bytes, Mapping)) or not isinstance(out, Sequence):
            try:
                import numpy as np

                if isinstance(out, np.ndarray) and out.ndim == 1:
                    out = out.tolist()
            except ImportError:  # pragma: no cover
                pass
        if isinstance(out, (str, bytes, Mapping)) or not isinstance(out, Sequence):
            raise RewardComponentError(
                f"{self.spec} returned {type(out).__name__}; expected a list of {n} floats or None"
            )
        if len(out) != n:
            raise RewardComponentError(f"{self.spec} returned {len(out)} values for a batch of {n} items")
        vals: list[float | None] = []
        for i, v in enumerate(out):
            if v is None:
                vals.append(None)
                continue
            if not isinstance(v, numbers.Real):
                raise RewardComponentError(
                    f"{self.spec} returned {type(v).__name__} {v!r} for item {i}; expected a float or None"
                )
            f = float(v)
            if not math.isfinite(f):
                raise RewardComponentError(
                    f"{self.spec} returned {f} for item {i}; return None for 'not applicable'"
                )
            vals.append(f)
        return vals


def load_extras(items: Any) -> list[ExtraComponent]:
    """The configured extras (``[{function, weight}, ...]``), each file found and hashed now."""
    return [ExtraComponent(d["function"], d["weight"]) for d in check_specs(items)]
