"""The report files of a validation: ``report.json``, ``report.md`` and the PNG figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medix_r1.errors import UserError
from medix_r1.judge.validate.identity import describe_judge

__all__ = ["fmt", "write_report"]


def fmt(v: Any, pct: bool = False) -> str:
    """A report value for people: ``n/a`` for None, a float to 3 places (``pct``: as a percentage)."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}"
    return str(v)


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    paths = [out / "report.json", out / "report.md"]
    paths[0].write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    pngs = _plots(report, out)
    paths[1].write_text(_markdown(public, [p.name for p in pngs]), encoding="utf-8")
    return paths + pngs


def _markdown(r: dict[str, Any], pngs: list[str]) -> str:
    th = r["thresholds"]
    ident = r.get("judge") or {}
    lines = [
        "# Judge validation report",
        "",
        f"**Verdict: {r['verdict'].upper()}**"
        + (f" ({'; '.join(r['failed_checks'])})" if r["failed_checks"] else ""),
        "",
        f"- judge: {describe_judge(ident) if ident else 'n/a'}",
        f"- pairs: {r.get('pairs_file', 'n/a')} ({r['n']} pairs)",
        f"- time: {r['ms_per_pair']:.1f} ms per pair",
        "",
        "| metric | value | threshold |",
        "|---|---|---|",
        f"| accuracy | {fmt(r['accuracy'], True)} | |",
        f"| balanced accuracy | {fmt(r['balanced_accuracy'], True)} | >= {th['min_balanced_accuracy']:g} |",
        f"| AUROC of P(YES) | {fmt(r['auroc'])} | >= {th['min_auroc']:g} (when available) |",
        f"| YES rate on mismatches | {fmt(r['yes_rate_on_mismatch'], True)} "
        f"| <= {th['max_yes_rate_on_mismatch']:g} |",
        f"| YES rate on matches | {fmt(r['yes_rate_on_match'], True)} | |",
        f"| injection flip rate | {fmt(r['injection_flip_rate'], True)} "
        f"({r['injection']['pairs']} rejected answers x {r['injection']['attacks']} attacks) "
        f"| <= {th['max_injection_flip_rate']:g} |",
        f"| unscorable | {r['unscorable']} | <= {th['max_unscorable_rate']:g} of pairs |",
        "",
        "Confusion (rows: label; columns: judge): "
        f"match -> YES {r['confusion']['tp']}, NO {r['confusion']['fn']}; "
        f"mismatch -> YES {r['confusion']['fp']}, NO {r['confusion']['tn']}.",
        "",
        "## By category",
        "",
        "| category | n | accuracy | YES on match | YES on mismatch | TP | FN | FP | TN | unscorable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, v in r["by_category"].items():
        lines.append(
            f"| {c} | {v['n']} | {fmt(v['accuracy'], True)} | {fmt(v['yes_rate_on_match'], True)} | "
            f"{fmt(v['yes_rate_on_mismatch'], True)} | {v['tp']} | {v['fn']} | {v['fp']} | {v['tn']} | "
            f"{v['unscorable']} |"
        )
    if "embed" in r:
        e = r["embed"]
        lines += [
            "",
            "## Embedding accuracy",
            "",
            f"- model: {r.get('embed_model', 'n/a')}",
            f"- AUROC of the cosine: {fmt(e['auroc'])}",
            f"- accuracy at the threshold {e['threshold']:g}: {fmt(e['accuracy_at_threshold'], True)} "
            f"(balanced {fmt(e['balanced_accuracy_at_threshold'], True)})",
            f"- best threshold on these pairs: {fmt(e['best_threshold'])} "
            f"(accuracy {fmt(e['accuracy_at_best_threshold'], True)})",
        ]
    for key, title in (("false_yes", "Mismatches judged YES"), ("false_no", "Matches judged NO")):
        ex = r["examples"][key]
        if ex:
            lines += ["", f"## {title} (first {len(ex)})", ""]
            for x in ex:
                lines.append(f"- [{x['category']}] `{x['answer'][:120]}` vs `{x['ground_truth'][:120]}`")
    if r["unscorable_errors"]:
        lines += ["", "## Unscorable", ""] + [f"- {e}" for e in r["unscorable_errors"]]
    if pngs:
        lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in pngs]
    return "\n".join(lines) + "\n"


def _plots(r: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    cats = list(r["by_category"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(cats) + 1.8))
    pos = np.arange(len(cats))
    acc = [r["by_category"][c]["accuracy"] or 0.0 for c in cats]
    fyes = [r["by_category"][c]["yes_rate_on_mismatch"] or 0.0 for c in cats]
    ax.barh(pos - 0.2, acc, height=0.4, label="accuracy")
    ax.barh(pos + 0.2, fyes, height=0.4, label="YES rate on mismatches")
    ax.set_yticks(pos, cats)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8)
    ax.set_title(f"judge by category (verdict: {r['verdict']})")
    fig.tight_layout()
    paths.append(out / "categories.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    y = np.array(r["_labels"], dtype=bool)
    curves = []
    if r["auroc"] is not None:
        dec = np.array(r["_decided"], dtype=bool)
        p = np.array([v if v is not None else np.nan for v in r["_p_yes"]], dtype=np.float64)
        curves.append(("judge P(YES)", p[dec], y[dec], 0.5))
    if "_cos" in r:
        curves.append(("embedding cosine", np.array(r["_cos"]), y, r["embed"]["threshold"]))
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name, s, lab, thr in curves:
            ts = np.unique(np.concatenate([s, [np.inf]]))[::-1]
            tpr = [((s >= t) & lab).sum() / max(1, lab.sum()) for t in ts]
            fpr = [((s >= t) & ~lab).sum() / max(1, (~lab).sum()) for t in ts]
            axes[0].plot(fpr, tpr, label=name)
            bins = np.linspace(min(0.0, float(np.nanmin(s))), 1.0, 21)
            axes[1].hist(s[lab], bins=bins, alpha=0.5, label=f"{name}: match")
            axes[1].hist(s[~lab], bins=bins, alpha=0.5, label=f"{name}: mismatch")
            axes[1].axvline(thr, color="k", lw=0.8, ls="--")
        axes[0].plot([0, 1], [0, 1], color="grey", lw=0.5)
        axes[0].set_xlabel("false positive rate")
        axes[0].set_ylabel("true positive rate")
        axes[0].set_title("ROC")
        axes[0].legend(fontsize=8)
        axes[1].set_title("scores by label")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "scores.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
