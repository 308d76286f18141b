"""Stage 3: per-task accuracy from the judgements, the average over tasks, and the report files.

Binary tasks: correct / judged; MIMIC (0-5) tasks: sum / (5 x judged). Samples the judge could not score are
errors: counted and shown, left out of the denominator, never counted as wrong. Writes ``scores.md``,
``scores.csv`` and ``scores.png`` under the output directory; ``compare`` puts a second run beside it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from medix_r1.eval.io import read_rows

__all__ = ["TaskScore", "render_table", "score_dir", "write_reports"]


@dataclass
class TaskScore:
    task: str
    template: str  # base | mimic
    generated: int
    judged: int  # judgements recorded (including errors)
    errors: int
    points: float  # sum of scores over the scored samples

    @property
    def scored(self) -> int:
        return self.judged - self.errors

    @property
    def accuracy(self) -> float:
        """In [0, 1]; NaN when nothing could be scored."""
        if self.scored == 0:
            return math.nan
        return self.points / (self.scored * (5 if self.template == "mimic" else 1))

    @property
    def pending(self) -> int:
        return max(0, self.generated - self.judged)


def score_dir(out_dir: str | Path) -> tuple[str, list[TaskScore]]:
    """The model's label and a TaskScore for every ``<task>/judgements.jsonl`` under ``out_dir``."""
    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no such output directory: {root}")
    scores: list[TaskScore] = []
    label = None
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        jpath = d / "judgements.jsonl"
        if not jpath.exists():
            continue
        latest: dict = {}
        for r in read_rows(jpath):  # a sample re-judged later (--retry-errors) counts once, the last time
            latest[r.get("id")] = r
        gens = read_rows(d / "generations.jsonl")
        if label is None and gens:
            label = gens[0].get("model")
        rows = list(latest.values())
        template = rows[0].get("template", "base") if rows else "base"
        errors = sum(1 for r in rows if r.get("score") is None)
        points = float(sum(r["score"] for r in rows if r.get("score") is not None))
        generated = len({g.get("id") for g in gens})
        scores.append(TaskScore(d.name, template, generated, len(rows), errors, points))
    if not scores:
        raise FileNotFoundError(
            f"{root}: no <task>/judgements.jsonl here; run `medix eval judge --out {root}` first"
        )
    return label or root.name, scores


def average(scores: list[TaskScore]) -> float:
    vals = [s.accuracy for s in scores if not math.isnan(s.accuracy)]
    return sum(vals) / len(vals) if vals else math.nan


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def _table(runs: list[tuple[str, list[TaskScore]]]) -> tuple[list[str], list[list[str]]]:
    tasks = list(dict.fromkeys(s.task for _, scores in runs for s in scores))
    header = ["task", "metric"]
    for label, _ in runs:
        suffix = f" ({label})" if len(runs) > 1 else ""
        header += [f"accuracy %{suffix}", f"scored{suffix}", f"errors{suffix}", f"pending{suffix}"]
    if len(runs) == 2:
        header.append("difference")
    body = []
    for t in tasks:
        row = [t, ""]
        accs = []
        for _, scores in runs:
            s = next((x for x in scores if x.task == t), None)
            if s is None:
                row += ["-", "0", "0", "0"]
                accs.append(math.nan)
                continue
            row[1] = "0-5 rubric" if s.template == "mimic" else "correct/total"
            row += [_pct(s.accuracy), str(s.scored), str(s.errors), str(s.pending)]
            accs.append(s.accuracy)
        if len(runs) == 2:
            d = accs[1] - accs[0]
            row.append("n/a" if math.isnan(d) else f"{100 * d:+.1f}")
        body.append(row)
    avg = ["average over tasks", ""]
    avgs = []
    for _, scores in runs:
        a = average(scores)
        avgs.append(a)
        avg += [
            _pct(a),
            str(sum(s.scored for s in scores)),
            str(sum(s.errors for s in scores)),
            str(sum(s.pending for s in scores)),
        ]
    if len(runs) == 2:
        d = avgs[1] - avgs[0]
        avg.append("n/a" if math.isnan(d) else f"{100 * d:+.1f}")
    body.append(avg)
    return header, body


def render_table(runs: list[tuple[str, list[TaskScore]]]) -> str:
    """A plain-text table for the terminal."""
    header, body = _table(runs)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def _markdown(runs: list[tuple[str, list[TaskScore]]]) -> str:
    header, body = _table(runs)
    title = " vs ".join(f"`{label}`" for label, _ in runs)
    out = [f"# Evaluation: {title}", ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(" --- " for _ in header) + "|")
    out += ["| " + " | ".join(r) + " |" for r in body]
    out += [
        "",
        "Accuracy: binary tasks correct/scored, 0-5 tasks sum/(5 x scored); the average is the mean "
        "over tasks with at least one scored sample. `errors`: samples the judge could not score (left "
        "out of the denominator); `pending`: answers not judged yet.",
        "",
    ]
    return "\n".join(out)


def _plot(runs: list[tuple[str, list[TaskScore]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [*dict.fromkeys(s.task for _, scores in runs for s in scores), "average"]
    n = len(runs)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(tasks) + 2), 4.5))
    for k, (label, scores) in enumerate(runs):
        by = {s.task: s.accuracy for s in scores}
        by["average"] = average(scores)
        vals = [100 * by.get(t, math.nan) for t in tasks]
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(tasks))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=label)
        for b, v in zip(bars, vals):
            ax.annotate(
                "n/a" if math.isnan(v) else f"{v:.1f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("MediX-R1 evaluation (LLM judge)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(out_dir: str | Path, runs: list[tuple[str, list[TaskScore]]]) -> dict[str, Path]:
    """Write scores.md, scores.csv and scores.png under ``out_dir``; returns their paths."""
    root = Path(out_dir)
    paths = {"md": root / "scores.md", "csv": root / "scores.csv", "png": root / "scores.png"}
    paths["md"].write_text(_markdown(runs), encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["run", "task", "metric", "accuracy", "scored", "errors", "pending", "points"])
        for label, scores in runs:
            for s in scores:
                acc = "" if math.isnan(s.accuracy) else f"{s.accuracy:.6f}"
                metric = "rubric_0_5" if s.template == "mimic" else "binary"
                w.writerow([label, s.task, metric, acc, s.scored, s.errors, s.pending, f"{s.points:g}"])
            a = average(scores)
            w.writerow(
                [
                    label,
                    "average",
                    "mean_over_tasks",
                    "" if math.isnan(a) else f"{a:.6f}",
                    sum(s.scored for s in scores),
                    sum(s.errors for s in scores),
                    sum(s.pending for s in scores),
                    "",
                ]
            )
    _plot(runs, paths["png"])
    return paths
