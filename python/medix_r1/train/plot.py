"""A PNG chart of the reward components (and the monitors) over training steps, from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_metrics", "read_metrics"]

_REWARDS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")
_MONITORS = ("degenerate_groups", "judge_embed_disagreement", "repeated_answers")


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def plot_metrics(metrics: str | Path, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for name in _REWARDS:
        pts = [(r["step"], r[f"reward/{name}"]) for r in rows if r.get(f"reward/{name}") is not None]
        if pts:
            xs, ys = zip(*pts)
            ax1.plot(xs, ys, marker="o", ms=3, label=name, lw=2.5 if name == "overall" else 1.5)
    ax1.set_ylabel("mean reward")
    ax1.set_ylim(-0.05, 1.05)
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
