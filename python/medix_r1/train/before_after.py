"""Before/after: the same questions answered by the base policy and by the trained one (greedy), both scored
with the run's own composite reward, as a terminal table, a JSON file and a bar chart. ``medix demo`` ends
with it so a newcomer sees what the training changed, component by component, and what it did not.

One copy of the policy is loaded: the trained LoRA adapter on top of the base, and the base answers are
generated with the adapter disabled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medix_r1.rewards.composite import COMPONENTS, CompositeReward
from medix_r1.train.config import RunConfig

__all__ = [
    "FLAT",
    "BeforeAfter",
    "compare_policies",
    "pick_questions",
    "plot_before_after",
    "render_table",
    "summarize",
]

# A component whose mean moved by less than this is reported as unchanged: with a few dozen greedy answers,
# a smaller difference is one or two answers flipping, not a trend.
FLAT = 0.02


@dataclass
class BeforeAfter:
    """Per component: mean before, mean after, and how many questions scored higher / lower after."""

    questions: int
    before: dict[str, float | None]
    after: dict[str, float | None]
    better: dict[str, int]
    worse: dict[str, int]
    items: list[dict[str, Any]] = field(default_factory=list)

    def change(self, k: str) -> float | None:
        b, a = self.before.get(k), self.after.get(k)
        return None if a is None or b is None else a - b

    def verdict(self, k: str) -> str:
        d = self.change(k)
        if d is None:
            return "n/a"
        return "up" if d >= FLAT else "down" if d <= -FLAT else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "decoding": "greedy",
            "components": {
                k: {
                    "before": self.before.get(k),
                    "after": self.after.get(k),
                    "change": self.change(k),
                    "better": self.better.get(k, 0),
                    "worse": self.worse.get(k, 0),
                    "verdict": self.verdict(k),
                }
                for k in COMPONENTS
            },
            "items": self.items,
        }


def pick_questions(n_rows: int, n: int) -> list[int]:
    """``n`` row indices spread evenly over the data set (all of them when ``n >= n_rows``), so the
    comparison covers every part of it rather than its first rows."""
    if n >= n_rows:
        return list(range(n_rows))
    return sorted({round(i * (n_rows - 1) / max(n - 1, 1)) for i in range(n)})


def _mean(vals: Sequence[float | None]) -> float | None:
    xs = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
    return sum(xs) / len(xs) if xs else None


def summarize(
    before: Sequence[dict[str, Any]],
    after: Sequence[dict[str, Any]],
    items: list[dict[str, Any]] | None = None,
) -> BeforeAfter:
    """Component means and per-question better/worse counts from two lists of composite scores (one dict per
    question, the same questions in the same order)."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} scores before but {len(after)} after")
    better: dict[str, int] = {}
    worse: dict[str, int] = {}
    for k in COMPONENTS:
        better[k] = worse[k] = 0
        for b, a in zip(before, after):
            if b.get(k) is None or a.get(k) is None:
                continue
            if a[k] > b[k] + 1e-9:
                better[k] += 1
            elif a[k] < b[k] - 1e-9:
                worse[k] += 1
    return BeforeAfter(
        questions=len(before),
        before={k: _mean([s.get(k) for s in before]) for k in COMPONENTS},
        after={k: _mean([s.get(k) for s in after]) for k in COMPONENTS},
        better=better,
        worse=worse,
        items=list(items or []),
    )


def render_table(ba: BeforeAfter) -> str:
    """The comparison as a fixed-width table, then one line naming what moved and what did not."""

    def f(v: float | None, sign: bool = False) -> str:
        return "   -  " if v is None else (f"{v:+.3f}" if sign else f"{v:.3f}")

    lines = [
        f"before/after on {ba.questions} demo questions (greedy answers, the same composite reward):",
        f"  {'component':<16}{'base':>7}{'trained':>9}{'change':>9}   better/worse   verdict",
    ]
    for k in COMPONENTS:
        bw = f"{ba.better[k]:>3} / {ba.worse[k]:<3}"
        lines.append(
            f"  {k:<16}{f(ba.before[k]):>7}{f(ba.after[k]):>9}{f(ba.change(k), True):>9}   "
            f"{bw:<14} {ba.verdict(k)}"
        )
    groups: dict[str, list[str]] = {"up": [], "down": [], "unchanged": [], "n/a": []}
    for k in COMPONENTS:
        groups[ba.verdict(k)].append(k)
    parts = [f"{name}: {', '.join(ks)}" for name, ks in groups.items() if ks]
    lines.append(f"  moved (|change| >= {FLAT}) {'; '.join(parts)}")
    return "\n".join(lines)


def plot_before_after(ba: BeforeAfter, out_png: str | Path, title: str = "") -> Path:
    """Grouped bars, base vs trained, one pair per component, with the values written on them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in COMPONENTS if ba.before[k] is not None or ba.after[k] is not None]
    xs = list(range(len(names)))
    w = 0.38
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for off, label, vals, color in (
        (-w / 2, "base policy", ba.before, "#9e9e9e"),
        (w / 2, "trained (LoRA)", ba.after, "#1f77b4"),
    ):
        ys = [vals[k] or 0.0 for k in names]
        bars = ax.bar([x + off for x in xs], ys, w, label=label, color=color)
        for b, k in zip(bars, names):
            v = vals[k]
            ax.annotate(
                "-" if v is None else f"{v:.2f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(xs, [f"{k}\n({ba.verdict(k)})" for k in names], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("mean reward")
    ax.set_title(title or f"base vs trained policy, {ba.questions} questions, greedy, same reward")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _generate(
    model: Any, tok: Any, prompts: list[list[dict[str, Any]]], max_new: int, batch: int
) -> list[str]:
    import torch

    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    out: list[str] = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new,
                pad_token_id=tok.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def compare_policies(
    cfg: RunConfig,
    adapter_dir: str | Path,
    *,
    questions: int = 16,
    batch_size: int = 16,
    reward: CompositeReward | None = None,
) -> BeforeAfter:
    """Answer ``questions`` rows of ``cfg.data`` (spread over the set) greedily with the base policy and with
    the adapter in ``adapter_dir``, and score both with ``reward`` (default: ``cfg.reward``'s composite).
    Text policies only."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medix_r1.errors import UserError
    from medix_r1.train.backends import is_vision_checkpoint, resolve_policy_path
    from medix_r1.train.data import load_rows, rows_for_run

    path = resolve_policy_path(cfg)
    if is_vision_checkpoint(path, cfg.model.kind):
        raise UserError("the before/after comparison answers text questions only; this policy is a VLM")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rows, base = load_rows(cfg.data.path)
    if cfg.data.max_samples:
        rows = rows[: cfg.data.max_samples]
    rows = [rows[i] for i in pick_questions(len(rows), questions)]
    train_rows = rows_for_run(cfg.data, rows, base, vision=False)
    prompts = [r["prompt"] for r in train_rows]
    truths = [str(r["solution"]) for r in train_rows]

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    base_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    model: Any = PeftModel.from_pretrained(base_model, str(adapter_dir))
    model.eval()
    n_new = cfg.algo.max_completion_length
    after_texts = _generate(model, tok, prompts, n_new, batch_size)
    with model.disable_adapter():
        before_texts = _generate(model, tok, prompts, n_new, batch_size)
    del model, base_model

    own = reward is None
    rw = reward if reward is not None else CompositeReward(cfg.reward)
    try:
        before = rw.score(before_texts, truths)
        after = rw.score(after_texts, truths)
    finally:
        if own:
            rw.close()
    keep = ("problem", "solution")
    items = [
        {
            **{k: r.get(k) for k in keep},
            "base": {"text": bt, **{k: b[k] for k in COMPONENTS}},
            "trained": {"text": at, **{k: a[k] for k in COMPONENTS}},
        }
        for r, bt, at, b, a in zip(rows, before_texts, after_texts, before, after)
    ]
    return summarize(before, after, items)


def write_before_after(ba: BeforeAfter, out_dir: str | Path) -> tuple[Path, Path]:
    """``before_after.json`` (means, counts, every answer) and ``before_after.png`` in ``out_dir``."""
    out = Path(out_dir)
    js = out / "before_after.json"
    js.write_text(json.dumps(ba.to_dict(), indent=1) + "\n", encoding="utf-8")
    png = plot_before_after(ba, out / "before_after.png")
    return js, png
