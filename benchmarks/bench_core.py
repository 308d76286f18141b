"""Benchmark of the Rust core against the Python it replaces, measured side by side in one run.

Prints (never asserts):
1. format + modality + answer extraction over 4,096 completions of ~1.5 KB: Rust (one batch call, FFI
   included)
   vs the authors' Python `re` code (reference mode);
2. group_advantages on 8,192 rewards in groups of 8: Rust vs vectorised NumPy vs a per-group loop over torch
   tensors (EasyR1's style);
3. a 10 MB adversarial completion (unclosed and nested tags) in both modes.

Run: python benchmarks/bench_core.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections import defaultdict

import numpy as np
from medix_r1.advantages import group_advantages
from medix_r1.rewards import analyze, extract_answers, format_rewards, modality_rewards

TAGS = ["X_RAY", "CT_SCAN", "MRI_SCAN", "ULTRASOUND", "MICROSCOPY", "ENDOSCOPY"]
ANSWERS = ["Right lower lobe pneumonia", "Hepatocellular carcinoma", "Pleural effusion", "Normal study"]


def completions(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    words = [
        "the",
        "axial",
        "image",
        "shows",
        "a",
        "hypodense",
        "lesion",
        "with",
        "arterial",
        "enhancement",
        "and",
        "portal",
        "venous",
        "washout",
    ]
    out, gts = [], []
    for i in range(n):
        reasoning = " ".join(rng.choice(words) for _ in range(200))  # ~1.4 KB
        tag, ans = rng.choice(TAGS), rng.choice(ANSWERS)
        shape = i % 4
        if shape == 0:
            text = f"<{tag}> <thinking>{reasoning}</thinking>\n<answer>{ans}.</answer>"
        elif shape == 1:
            text = f"<{tag}>\n< thinking >{reasoning}</ thinking > <answer> {ans} </answer>\n"
        elif shape == 2:
            text = f"<thinking>{reasoning} / {reasoning[:60]}</thinking>{ans}"
        else:
            text = f"{reasoning}<answer>{ans}</answer>"
        out.append(text)
        gts.append(f"<{rng.choice(TAGS)}> {ans}")
    return out, gts


# --- the authors' Python (reference mode), per completion ------------------------------------------------
_FMT = re.compile(r"<thinking>.*?</thinking>\s*<answer>.*?</answer>", re.DOTALL)
_ANS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_COLLAPSE = re.compile(r"\s*(<|>|/)\s*")


def python_reference(responses: list[str], gts: list[str]) -> tuple[list[float], list[float], list[str]]:
    fmt, mod, ans = [], [], []
    for r, gt in zip(responses, gts):
        p = _COLLAPSE.sub(r"\1", r)
        idx = p.find("<thinking>")
        fmt.append(1.0 if idx != -1 and _FMT.fullmatch(p[idx:].strip()) else 0.0)
        mod.append(
            1.0
            if idx != -1 and p[:idx].strip().upper() == (gt.split(">", maxsplit=1)[0] + ">").upper()
            else 0.0
        )
        m = _ANS.search(p)
        ans.append((m.group(1).strip() if m else p.strip()).strip("."))
    return fmt, mod, ans


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# --- advantages baselines ---------------------------------------------------------------------------------
def numpy_advantages(r: np.ndarray, g: int, eps: float = 1e-6) -> np.ndarray:
    x = r.reshape(-1, g)
    valid = ~np.isnan(x)
    cnt = valid.sum(1)
    mean = np.where(valid, x, 0.0).sum(1) / np.maximum(cnt, 1)
    dev = np.where(valid, x - mean[:, None], 0.0)
    std = np.sqrt((dev**2).sum(1) / np.maximum(cnt - 1, 1))
    flat = (cnt < 2) | (np.nanmax(x, 1) - np.nanmin(x, 1) <= 1e-12)
    return np.where(valid & ~flat[:, None], dev / (std[:, None] + eps), 0.0).reshape(-1)


def torch_loop_advantages(scores, index: list[int], eps: float = 1e-6):
    """The verl/EasyR1 pattern: bucket scores per prompt id in Python, then a torch mean/std per bucket and a
    per-sample Python loop to normalise."""
    import torch

    buckets: dict[int, list] = defaultdict(list)
    for i in range(scores.shape[0]):
        buckets[index[i]].append(scores[i])
    mean, std = {}, {}
    for k, vals in buckets.items():
        t = torch.stack(vals)
        mean[k], std[k] = t.mean(), t.std()
    out = scores.clone()
    for i in range(scores.shape[0]):
        out[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + eps)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(0)

    responses, gts = completions(4096, rng)
    kb = sum(len(r) for r in responses) / len(responses) / 1024
    print(f"1) parsing 4096 completions, mean {kb:.2f} KB (best of {args.repeat})")
    py_fmt, py_mod, py_ans = python_reference(responses, gts)
    ref = analyze(responses, gts, mode="reference")
    assert ref.format.tolist() == py_fmt and ref.modality.tolist() == py_mod and ref.answers == py_ans
    t_py = best_of(lambda: python_reference(responses, gts), args.repeat)
    t_ref = best_of(lambda: analyze(responses, gts, mode="reference"), args.repeat)
    t_strict = best_of(lambda: analyze(responses, gts, mode="strict"), args.repeat)
    t_three = best_of(
        lambda: (
            format_rewards(responses, "reference"),
            modality_rewards(responses, gts, "reference"),
            extract_answers(responses, "reference"),
        ),
        args.repeat,
    )
    print(f"   python re (authors' code)          {t_py * 1e3:9.2f} ms")
    print(
        f"   rust analyze, reference mode       {t_ref * 1e3:9.2f} ms   {t_py / t_ref:6.1f}x faster"
        " (same results)"
    )
    print(f"   rust analyze, strict mode          {t_strict * 1e3:9.2f} ms   {t_py / t_strict:6.1f}x faster")
    print(f"   rust 3 separate calls, reference   {t_three * 1e3:9.2f} ms   {t_py / t_three:6.1f}x faster")

    print("2) group_advantages, 8192 rewards in groups of 8")
    r = np.array([rng.choice([0.0, 0.1, 0.55, 0.9, 1.0]) for _ in range(8192)])
    np.testing.assert_allclose(group_advantages(r, 8), numpy_advantages(r, 8), atol=1e-9)
    reps = max(args.repeat, 50)
    t_rust = best_of(lambda: group_advantages(r, 8), reps)
    t_np = best_of(lambda: numpy_advantages(r, 8), reps)
    line = f"   rust {t_rust * 1e6:9.1f} us | numpy vectorised {t_np * 1e6:9.1f} us ({t_np / t_rust:5.1f}x)"
    try:
        import torch

        tr = torch.tensor(r)
        index = [i // 8 for i in range(len(r))]
        t_torch = best_of(lambda: torch_loop_advantages(tr, index), 3)
        line += f" | torch per-group loop {t_torch * 1e6:10.1f} us ({t_torch / t_rust:7.0f}x)"
    except ImportError:
        line += " | torch not installed: per-group loop skipped"
    print(line)

    print("3) 10 MB adversarial completion")
    # Half unclosed `<think` tags, half nested/duplicated tags: every '<' is a tag candidate.
    unit = "<think <thinking><answer></thinking" + " " * 8 + "< / answer <"
    big = "<think " * (5_000_000 // 7) + unit * (5_000_000 // len(unit))
    for mode in ("strict", "reference"):
        t = statistics.median(best_of(lambda m=mode: analyze([big], [big], mode=m), 1) for _ in range(3))
        print(f"   {mode:9s} {len(big) / 1e6:.1f} MB in {t * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
