"""Group-relative advantages for GRPO-family training, computed by the Rust core in one call per batch.

``scale="group"`` divides by the group's sample standard deviation (ddof=1, as TRL and EasyR1 do), ``"batch"``
by the whole batch's, ``"none"`` only subtracts the group mean (Dr. GRPO). NaN rewards (unscorable) are left
out of the statistics and get advantage 0; degenerate groups (fewer than two valid rewards, or all equal) get
0 and are flagged so DAPO-style dynamic sampling can drop them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medix_r1 import _native

__all__ = ["GroupStats", "degenerate_groups", "group_advantages", "group_stats"]

_SCALES = ("group", "batch", "none")


def _rewards_bytes(rewards: Any) -> bytes:
    arr = rewards
    if not (isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.flags.c_contiguous):
        if hasattr(arr, "detach"):  # a torch tensor, without importing torch
            arr = arr.detach().cpu().double().numpy()
        try:
            arr = np.ascontiguousarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"rewards must be a 1-D sequence of numbers: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {arr.shape}")
    return arr.tobytes()


def _ids_bytes(group_ids: Any, n: int) -> bytes:
    ids = np.asarray(group_ids.detach().cpu().numpy() if hasattr(group_ids, "detach") else group_ids)
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D, got shape {ids.shape}")
    if ids.shape[0] != n:
        raise ValueError(f"group_ids has {ids.shape[0]} entries but rewards has {n}")
    if ids.dtype.kind in "iu":
        return np.ascontiguousarray(ids, dtype=np.int64).tobytes()
    # Any hashable ids (prompt strings, uuids): number them in order of first appearance.
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(x, len(index)) for x in ids.tolist()), dtype=np.int64, count=n)
    return codes.tobytes()


def _check(group_size: int | None, scale: str, eps: float) -> None:
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer))
    ):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size is not None and group_size <= 0:
        raise ValueError(f"group_size must be a positive integer, got {group_size}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")


def _native_args(
    rewards: Sequence[float] | np.ndarray,
    group_size: int | None,
    group_ids: Sequence[Any] | np.ndarray | None,
    scale: str,
    eps: float,
) -> tuple[bytes, bytes | None]:
    """Checks the arguments and converts rewards and ids to the native call's buffers."""
    _check(group_size, scale, eps)
    raw = _rewards_bytes(rewards)
    return raw, None if group_ids is None else _ids_bytes(group_ids, len(raw) // 8)


def group_advantages(
    rewards: Sequence[float] | np.ndarray,
    group_size: int | None = None,
    group_ids: Sequence[Any] | np.ndarray | None = None,
    scale: str = "group",
    eps: float = 1e-6,
) -> np.ndarray:
    """Group-relative advantages, one float64 per reward, order preserved.

    Give ``group_size`` for consecutive groups of equal size, or ``group_ids`` (one per reward, any hashable
    or integer ids, groups need not be contiguous) for variable sizes.
    """
    raw, ids = _native_args(rewards, group_size, group_ids, scale, eps)
    out = _native.group_advantages_raw(raw, group_size, ids, scale, float(eps), False)
    return np.frombuffer(out, dtype=np.float64)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupStats:
    """Advantages plus the per-group statistics behind them (groups in order of first appearance)."""

    advantages: np.ndarray
    group_index: np.ndarray
    """Group of each sample (int64)."""
    mean: np.ndarray
    std: np.ndarray
    """Sample standard deviation (ddof=1) of the valid rewards; NaN with fewer than two."""
    count: np.ndarray
    """Valid (non-NaN) rewards per group (int64)."""
    degenerate: np.ndarray
    """True where the group carries no learning signal (fewer than two valid rewards, or all equal)."""

    @property
    def degenerate_fraction(self) -> float:
        return float(self.degenerate.mean()) if self.degenerate.size else 0.0


def group_stats(
    rewards: Sequence[float] | np.ndarray,
    group_size: int | None = None,
    group_ids: Sequence[Any] | np.ndarray | None = None,
    scale: str = "group",
    eps: float = 1e-6,
) -> GroupStats:
    """Like :func:`group_advantages`, also returning per-group mean, std, count and degenerate flags."""
    raw, ids = _native_args(rewards, group_size, group_ids, scale, eps)
    adv, gidx, mean, std, count, degen = _native.group_advantages_raw(
        raw, group_size, ids, scale, float(eps), True
    )
    return GroupStats(
        advantages=np.frombuffer(adv, dtype=np.float64),
        group_index=np.frombuffer(gidx, dtype=np.float64).astype(np.int64),
        mean=np.frombuffer(mean, dtype=np.float64),
        std=np.frombuffer(std, dtype=np.float64),
        count=np.frombuffer(count, dtype=np.float64).astype(np.int64),
        degenerate=np.frombuffer(degen, dtype=np.bool_),
    )


def degenerate_groups(
    rewards: Sequence[float] | np.ndarray,
    group_size: int | None = None,
    group_ids: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """Per group (in order of first appearance), True where it is degenerate (zero variance or < 2 valid)."""
    return group_stats(rewards, group_size, group_ids).degenerate
