"""One process vs two (`torchrun --nproc-per-node 2`) on the tiny CPU setup with the real judge
and embedder, the same global batch (2 prompts x group 2 per step): wall time per step (TRL's ``step_time``,
median over the steps after the first) and the bytes each process's collective calls received per step.
Prints only; never asserts.

    python benchmarks/bench_multiprocess.py [--steps 5] [--algo grpo] [--out /tmp/medix-bench-mp]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _overrides(
    models: Path, data: Path, out: Path, algo: str, steps: int, prompts: int, threads: int
) -> list[str]:
    gguf = models / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return [
        f"--model.path={gguf}",
        f"--data.path={data}",
        "--data.few_shot=0",
        f"--algo.name={algo}",
        "--algo.num_generations=2",
        "--algo.max_completion_length=16",
        f"--train.output_dir={out}",
        f"--train.max_steps={steps}",
        f"--train.prompts_per_step={prompts}",
        f"--train.threads={threads}",
        "--train.device=cpu",
        f"--train.save_steps={steps}",
        f"--reward.judge.model={gguf}",
        f"--reward.judge.n_threads={threads}",
        f"--reward.embed.model={models / 'all-MiniLM-L6-v2-onnx'}",
    ]


def _run(n_proc: int, args: argparse.Namespace, models: Path, data: Path) -> None:
    out = Path(args.out) / f"p{n_proc}"
    shutil.rmtree(out, ignore_errors=True)
    trace = out / "trace"
    driver = str(ROOT / "tests" / "mp_driver.py")
    # The same global batch: one process takes both prompts, two processes one each.
    threads = args.threads or 2 // n_proc
    ov = _overrides(models, data, out / "run", args.algo, args.steps, 2 // n_proc, threads)
    if n_proc == 1:
        cmd = [sys.executable, driver, str(trace), "--", *ov]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n_proc)]
        cmd += [driver, str(trace), "--count-bytes", "--", *ov]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    times = [r["step_time"] for r in rows if r.get("step_time") is not None]
    med = statistics.median(times[1:] or times) if times else float("nan")
    print(
        f"{n_proc} process(es), {threads} thread(s) each: {len(rows)} steps, total wall {total:.1f}s, "
        f"per step median {med:.2f}s (all: {', '.join(f'{t:.1f}' for t in times)})"
    )
    if n_proc > 1:
        t = json.loads((trace / "rank0.json").read_text())
        steps = t["steps"]
        for a, b in itertools.pairwise(steps):
            delta = {k: b["bytes"].get(k, 0) - a["bytes"].get(k, 0) for k in b["bytes"]}
            print(f"  bytes received by rank 0 in step {b['step'] + 1}: {sum(delta.values())} {delta}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--algo", default="grpo")
    ap.add_argument("--out", default="/tmp/medix-bench-mp")
    ap.add_argument(
        "--threads", type=int, default=0, help="threads per process (default: the 2 cores split between them)"
    )
    args = ap.parse_args()
    from medix_r1.train.data import demo_dataset_path

    models = Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models"))
    data = Path(args.out) / "data.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:16]))
    for n in (1, 2):
        _run(n, args, models, data)


if __name__ == "__main__":
    main()
