"""CPU demo timing and the format-reward curve: runs `medix demo` settings for N steps and prints the wall
time per step (median, total) and the per-step format / overall rewards. Prints only; never asserts.

    python benchmarks/bench_train.py [--steps N (default: the demo's)] [--out /tmp/medix-bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    from medix_r1.train.demo import DEMO_STEPS

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=DEMO_STEPS)
    ap.add_argument("--out", default="/tmp/medix-bench-train")
    args = ap.parse_args()

    from medix_r1.train.demo import find_test_models, run_demo

    t0 = time.perf_counter()
    res = run_demo(args.out, args.steps, find_test_models())
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in Path(res["metrics"]).read_text().splitlines() if x.strip()]
    step_times = [r["step_time"] for r in rows if r.get("step_time") is not None]
    print(f"steps: {len(rows)}  total wall: {total:.1f}s (incl. model load/convert)")
    if step_times:
        print(
            f"per step: median {statistics.median(step_times):.1f}s  min {min(step_times):.1f}s  "
            f"max {max(step_times):.1f}s"
        )
    fmt = [r.get("reward/format") for r in rows]
    print("step  format  overall  completion_len")
    for r in rows:
        print(
            f"{r['step']:>4}  {r.get('reward/format')!s:>6.6}  {r.get('reward/overall')!s:>7.7}  "
            f"{r.get('monitor/completion_length')!s:>6.6}"
        )
    k = max(len(fmt) // 3, 1)
    head = [x for x in fmt[:k] if x is not None]
    tail = [x for x in fmt[-k:] if x is not None]
    if head and tail:
        print(
            f"format reward, first third mean {statistics.mean(head):.3f} -> last third "
            f"{statistics.mean(tail):.3f} "
            f"(ratio {statistics.mean(tail) / max(statistics.mean(head), 1e-9):.2f}x)"
        )


if __name__ == "__main__":
    main()
