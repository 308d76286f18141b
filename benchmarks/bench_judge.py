"""Judge throughput on CPU, in-process: LocalJudge's one-token YES/NO decision vs a plain 4-token chat
completion (what the authors' reward asks a judge for), same model, same prompts, same unique pairs, one run;
and the supervised judge (the same LocalJudge in a worker process, what training uses) against it.

    python benchmarks/bench_judge.py [--model X.gguf] [--groups 8] [--group-size 5] [--threads 2]
        [--paths ABCDE] [--cpu-pairs 10] [--busy 4]

Prints pairs/s and ratios; asserts nothing. Also prints how many prompt tokens llama.cpp actually decoded vs
took from its KV cache (the fixed instruction is a shared prefix; groups share the ground truth too).

Then (``--cpu-pairs``, 0 to skip) the supervised judge with llama.cpp's default threads and OpenMP wait
policy, with ``--threads`` threads, and with one thread and ``OMP_WAIT_POLICY=PASSIVE`` (set in the worker's
environment before llama.cpp loads), on an idle machine and with ``--busy`` busy-loop processes started here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_reward import authors_messages  # the authors' request layout (instruction, answer, truth)
from medix_r1.judge import JudgeConfig, LocalJudge, build_messages
from medix_r1.judge.supervised import SupervisedJudge

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
    ap.add_argument(
        "--paths", default="ABCDE", help="which rows to measure (A is always measured: the baseline)"
    )
    ap.add_argument(
        "--cpu-pairs", type=int, default=10, help="pairs per setting in the CPU section (0: skip)"
    )
    ap.add_argument("--busy", type=int, default=4, help="busy-loop processes for the loaded CPU runs")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs")
    paths = set(args.paths.upper()) | {"A"}

    judge = LocalJudge(args.model, n_ctx=1024, n_threads=args.threads, cache_size=0)
    supervised = (
        SupervisedJudge(JudgeConfig(model=args.model, n_ctx=1024, n_threads=args.threads, cache_size=0))
        if "E" in paths
        else None
    )
    llm = judge.chat.llm
    pairs = make_pairs(args.groups, args.group_size)
    assert len(set(pairs)) == len(pairs)
    # Warm both paths (first prompt evaluated in full) on a pair outside the measured set.
    judge.judge([("warm-up answer", "warm-up truth")])
    llm.create_chat_completion(build_messages("warm-up answer", "warm-up truth"), max_tokens=4, temperature=0)
    if supervised is not None:
        supervised.judge([("warm-up answer", "warm-up truth")])

    inf = float("inf")
    best_judge = best_chat = best_nokv = best_naive = best_sup = inf
    decoded = reused = 0
    same = True
    for _ in range(args.repeats):
        e0, r0 = judge.chat.evaluated_tokens, judge.chat.reused_tokens
        t0 = time.perf_counter()
        verdicts = judge.judge(pairs)
        best_judge = min(best_judge, time.perf_counter() - t0)
        decoded, reused = judge.chat.evaluated_tokens - e0, judge.chat.reused_tokens - r0
        assert all(v.source == "judge" for v in verdicts)

        if supervised is not None:
            t0 = time.perf_counter()
            sv = supervised.judge(pairs)
            best_sup = min(best_sup, time.perf_counter() - t0)
            same = same and [v.p_yes for v in sv] == [v.p_yes for v in verdicts]
        if not paths & set("BCD"):
            continue

        if "B" in paths:
            t0 = time.perf_counter()
            for pred, truth in pairs:
                llm.create_chat_completion(build_messages(pred, truth), max_tokens=4, temperature=0)
            best_chat = min(best_chat, time.perf_counter() - t0)

        if "C" in paths:
            t0 = time.perf_counter()
            for pred, truth in pairs:
                judge.chat.reset()  # forget the KV cache: every prompt decoded in full
                judge.p_yes(pred, truth)
            best_nokv = min(best_nokv, time.perf_counter() - t0)

        if "D" in paths:
            t0 = time.perf_counter()
            for pred, truth in pairs:
                llm.create_chat_completion(authors_messages(pred, truth), max_tokens=4, temperature=0)
            best_naive = min(best_naive, time.perf_counter() - t0)
        judge.chat.reset()  # the next round's A starts from the same (empty) cache state as E's worker

    n = len(pairs)
    print(
        f"model: {args.model}  threads: {args.threads}  unique pairs: {n} ({args.groups} x {args.group_size})"
    )
    rows = [
        ("A  LocalJudge: 1 token from logits, KV prefix reuse", best_judge),
        ("B  create_chat_completion max_tokens=4, same prompts", best_chat),
        ("C  LocalJudge: 1 token from logits, KV cache reset", best_nokv),
        ("D  create_chat_completion max_tokens=4, authors' layout", best_naive),
        ("E  SupervisedJudge: A in a worker process (training)", best_sup),
    ]
    for label, t in rows:
        if t < inf:
            print(f"{label:55s} {n / t:7.2f} pairs/s  {1000 * t / n:7.1f} ms/pair")
    ratios = [
        ("A vs B (same prompt, llama-cpp-python reuses its prefix too)", best_chat),
        ("A vs C (what the shared prefix buys)", best_nokv),
        ("A vs D (plain 4-token judge call, the authors' prompt layout)", best_naive),
    ]
    for label, t in ratios:
        if t < inf:
            print(f"speed-up {label:62s} {t / best_judge:6.2f}x")
    if supervised is not None:
        print(
            f"supervised (E) cost per pair vs in-process (A): {best_sup / best_judge:6.3f}x "
            f"({1000 * (best_sup - best_judge) / n:+.1f} ms/pair); P(YES) identical: {same}"
        )
        supervised.close()
    print(
        f"prompt tokens per pair: {(decoded + reused) / n:.0f}, of which decoded {decoded / n:.1f} and "
        f"reused from the KV cache {reused / n:.1f} ({100 * reused / max(1, decoded + reused):.0f}%)"
    )
    judge.close()
    if args.cpu_pairs:
        bench_cpu_settings(args.model, pairs[: args.cpu_pairs], args.threads, args.busy)


def _busy() -> None:
    while True:
        pass


def bench_cpu_settings(model: str, pairs: list[tuple[str, str]], threads: int, busy: int) -> None:
    """The supervised judge (a worker process, so OpenMP settings apply before llama.cpp loads) with each
    thread / wait-policy setting, idle and with ``busy`` busy-loop processes running."""
    import multiprocessing as mp

    settings = [
        ("llama.cpp default threads, OpenMP default", {}, None),
        (f"{threads} threads, OpenMP default", {}, threads),
        ("1 thread, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, 1),
    ]
    n = len(pairs)
    for loaded in (False, True):
        procs = []
        if loaded:
            procs = [mp.get_context("spawn").Process(target=_busy, daemon=True) for _ in range(busy)]
            for p in procs:
                p.start()
            time.sleep(2)
        try:
            for label, env, n_threads in settings:
                cfg = JudgeConfig(model=model, n_ctx=1024, n_threads=n_threads, cache_size=0)
                j = SupervisedJudge(cfg, env=env)
                try:
                    j.judge([("warm-up answer", "warm-up truth")])
                    t0 = time.perf_counter()
                    j.judge(pairs)
                    t = time.perf_counter() - t0
                finally:
                    j.close()
                where = f"{busy} busy loops" if loaded else "idle"
                print(
                    f"CPU settings, {where:13s} {label:42s} {1000 * t / n:8.1f} ms/pair  "
                    f"(load {os.getloadavg()[0]:.2f})"
                )
        finally:
            for p in procs:
                p.terminate()
                p.join()


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
