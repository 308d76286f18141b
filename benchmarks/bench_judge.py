"""Judge throughput on CPU, in-process: LocalJudge's one-token YES/NO decision vs a plain 4-token chat
completion (what the authors' reward asks a judge for), same model, same prompts, same unique pairs, one run.

    python benchmarks/bench_judge.py [--model X.gguf] [--groups 8] [--group-size 5] [--threads 2]

Prints pairs/s and ratios; asserts nothing. Also prints how many prompt tokens llama.cpp actually decoded vs
took from its KV cache (the fixed instruction is a shared prefix; groups share the ground truth too).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_reward import authors_messages  # the authors' request layout (instruction, answer, truth)
from medix_r1.judge import LocalJudge, build_messages

DEFAULT_MODEL = (
    Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models"))
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)
TRUTHS = [
    "Right lower lobe pneumonia",
    "Pneumothorax",
    "Osteosarcoma of the distal femur",
    "Diabetic retinopathy",
    "Squamous cell carcinoma",
    "Acute appendicitis",
    "Left ventricular hypertrophy",
    "Hashimoto thyroiditis",
    "Multiple sclerosis",
    "Basal cell carcinoma",
    "Pulmonary embolism",
    "Colonic diverticulitis",
]
PREDICTIONS = [
    "pneumonia in the right lower lobe",
    "no acute abnormality",
    "{} most likely",
    "a benign lesion",
    "probably {}, but consider tuberculosis",
    "normal study",
    "malignant tumour",
]


def make_pairs(groups: int, group_size: int) -> list[tuple[str, str]]:
    """``groups`` questions x ``group_size`` distinct completions (an RL group shares its ground truth)."""
    pairs = []
    for g in range(groups):
        truth = TRUTHS[g % len(TRUTHS)] + ("" if g < len(TRUTHS) else f" (case {g})")
        for k in range(group_size):
            pred = PREDICTIONS[k % len(PREDICTIONS)].format(truth.lower())
            pairs.append((pred + ("" if k < len(PREDICTIONS) else f" #{k}"), truth))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=2, help="alternating rounds; the best round of each counts"
    )
    args = ap.parse_args()

    judge = LocalJudge(args.model, n_ctx=1024, n_threads=args.threads, cache_size=0)
    llm = judge.chat.llm
    pairs = make_pairs(args.groups, args.group_size)
    assert len(set(pairs)) == len(pairs)
    # Warm both paths (first prompt evaluated in full) on a pair outside the measured set.
    judge.judge([("warm-up answer", "warm-up truth")])
    llm.create_chat_completion(build_messages("warm-up answer", "warm-up truth"), max_tokens=4, temperature=0)

    best_judge = best_chat = best_nokv = best_naive = float("inf")
    decoded = reused = 0
    for _ in range(args.repeats):
        e0, r0 = judge.chat.evaluated_tokens, judge.chat.reused_tokens
        t0 = time.perf_counter()
        verdicts = judge.judge(pairs)
        best_judge = min(best_judge, time.perf_counter() - t0)
        decoded, reused = judge.chat.evaluated_tokens - e0, judge.chat.reused_tokens - r0
        assert all(v.source == "judge" for v in verdicts)

        t0 = time.perf_counter()
        for pred, truth in pairs:
            llm.create_chat_completion(build_messages(pred, truth), max_tokens=4, temperature=0)
        best_chat = min(best_chat, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for pred, truth in pairs:
            judge.chat.reset()  # forget the KV cache: every prompt decoded in full
            judge.p_yes(pred, truth)
        best_nokv = min(best_nokv, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for pred, truth in pairs:
            llm.create_chat_completion(authors_messages(pred, truth), max_tokens=4, temperature=0)
        best_naive = min(best_naive, time.perf_counter() - t0)

    n = len(pairs)
    print(
        f"model: {args.model}  threads: {args.threads}  unique pairs: {n} ({args.groups} x {args.group_size})"
    )
    rows = [
        ("A  LocalJudge: 1 token from logits, KV prefix reuse", best_judge),
        ("B  create_chat_completion max_tokens=4, same prompts", best_chat),
        ("C  LocalJudge: 1 token from logits, KV cache reset", best_nokv),
        ("D  create_chat_completion max_tokens=4, authors' layout", best_naive),
    ]
    for label, t in rows:
        print(f"{label:55s} {n / t:7.2f} pairs/s  {1000 * t / n:7.1f} ms/pair")
    ratios = [
        ("A vs B (same prompt, llama-cpp-python reuses its prefix too)", best_chat),
        ("A vs C (what the shared prefix buys)", best_nokv),
        ("A vs D (plain 4-token judge call, the authors' prompt layout)", best_naive),
    ]
    for label, t in ratios:
        print(f"speed-up {label:62s} {t / best_judge:6.2f}x")
    print(
        f"prompt tokens per pair: {(decoded + reused) / n:.0f}, of which decoded {decoded / n:.1f} and "
        f"reused from the KV cache {reused / n:.1f} ({100 * reused / max(1, decoded + reused):.0f}%)"
    )


def bench_sanitize() -> None:
    """Worst case of the answer sanitiser on 1 MB answers built to be slow (nested special-token look-alikes
    were quadratic before the length cap came first)."""
    from medix_r1.judge import sanitize

    mb = 1_000_000
    cases = {
        "nested <|...|>": "<|" * (mb // 4) + "x" + "|>" * (mb // 4),
        "nested <|<|x|>|> repeated": ("<|" * 8 + "x" + "|>" * 8) * (mb // 34),
        "'<' only": "<" * mb,
        "tag look-alikes": "<ground_truth" * (mb // 13),
        "labels": "Ground Truth: " * (mb // 14),
        "zero-width": "\u200b" * mb,
        "NFKC 18x expansion": "\ufdfa" * mb,
        "plain text": "lesion " * (mb // 7),
    }
    worst = ("", 0.0)
    for name, text in cases.items():
        best = min(_timed(sanitize, text) for _ in range(5))
        worst = max(worst, (name, best), key=lambda x: x[1])
        print(f"sanitize 1 MB {name:28s} {best * 1000:7.2f} ms")
    print(f"worst-case sanitize of a 1 MB answer: {worst[1] * 1000:.1f} ms ({worst[0]})")


def _timed(fn, *a) -> float:
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


if __name__ == "__main__":
    bench_sanitize()
    main()
