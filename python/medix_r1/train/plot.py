"""A PNG chart of the reward components (and the monitors) over training steps, from ``metrics.jsonl``: the
built-in components of the registry, then every custom component (``reward/<name>``) the rows hold."""

from __future__ import annotations

import json
from pathlib import Path

from medix_r1.rewards.components import reward_columns_of_row

__all__ = ["plot_metrics", "read_metrics", "reward_columns"]

_MONITORS = ("degenerate_groups", "judge_embed_disagreement", "repeated_answers")


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def reward_columns(rows: list[dict]) -> list[str]:
    """The reward columns to draw: the built-ins, then each custom component in first-seen order."""
    out: list[str] = []
    for r in rows:
        out += [k for k in reward_columns_of_row(r) if k not in out]
    return out


def plot_metrics(metrics: str | Path, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    lo, hi = 0.0, 1.0
    for name in reward_columns(rows):
        pts = [(r["step"], r[f"reward/{name}"]) for r in rows if r.get(f"reward/{name}") is not None]
        if pts:
            xs, ys = zip(*pts)
            lo, hi = min(lo, *ys), max(hi, *ys)  # a custom component may leave [0, 1]
            ax1.plot(xs, ys, marker="o", ms=3, label=name, lw=2.5 if name == "overall" else 1.5)
    ax1.set_ylabel("mean reward")
    ax1.set_ylim(lo - 0.05, hi + 0.05)
    ax1.set_title("MediX-R1 reward components per step")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    for name in _MONITORS:
        pts = [(r["step"], r[f"monitor/{name}"]) for r in rows if r.get(f"monitor/{name}") is not None]
        if pts:
            xs, ys = zip(*pts)
            ax2.plot(xs, ys, marker=".", label=name)
    ax2.set_ylabel("share")
    ax2.set_xlabel("step")
    ax2.set_ylim(-0.05, 1.05)
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
