"""Evaluation benchmark (prints only, asserts nothing).

1. Judging throughput against `medix judge serve` (a subprocess on a free port): conversations in flight at
   once (--concurrency) versus one request at a time, same judge, same answers.
2. The in-process judge: constrained by logits (default) versus a llama.cpp GBNF grammar.
3. Wall time of the bundled evaluation: `medix eval run --tasks demo` with the tiny GGUF as model and judge.

    python benchmarks/bench_eval.py [--model FILE.gguf] [--concurrency 8] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_MODEL = (
    Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache" / "medix-r1" / "test-models"))
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def medix(*args: str) -> list[str]:
    return [sys.executable, "-m", "medix_r1.cli", *args]


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"judge server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("judge server did not come up")


def judge_rate(gens: Path, work: Path, backend, label: str) -> float:
    from medix_r1.eval.grading import judge_task

    d = work / label
    shutil.rmtree(d, ignore_errors=True)
    (d / "demo").mkdir(parents=True)
    shutil.copy(gens, d / "demo" / "generations.jsonl")
    t = time.perf_counter()
    res = judge_task(d, "demo", backend, max_parse_retries=1, progress=False)
    dt = time.perf_counter() - t
    rate = res.judged / dt
    print(
        f"  {label:<28} {res.judged} samples in {dt:6.2f} s = {rate:6.2f} samples/s "
        f"({res.errors} recorded as unparseable)"
    )
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = Path(args.model)
    if not model.is_file():
        raise SystemExit(f"no model at {model}; run scripts/test-models.sh")
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    threads = str(args.threads)
    print(f"model and judge: {model.name}; {os.cpu_count()} CPUs; threads {threads}")
    try:
        # 3 first: it also produces the answers the judging benchmarks reuse.
        out = work / "run"
        t = time.perf_counter()
        subprocess.run(
            medix("eval", "run", "--model", str(model), "--judge", str(model), "--tasks", "demo",
                  "--out", str(out), "--max-new-tokens", str(args.max_new_tokens), "--n-ctx", "1024",
                  "--threads", threads, "--judge-threads", threads, "--judge-ctx", "2048", "--no-progress"),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(
            medix("eval", "run", "--model", str(model), "--judge", str(model), "--tasks", "demo",
                  "--out", str(out), "--n-ctx", "1024", "--max-new-tokens", str(args.max_new_tokens),
                  "--no-progress"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        rerun = time.perf_counter() - t
        gens = out / "demo" / "generations.jsonl"
        n = sum(1 for _ in gens.open())
        acc = (out / "scores.csv").read_text().splitlines()[1].split(",")[3]
        print("\nbundled evaluation (medix eval run --tasks demo, generate + judge + score, one process):")
        print(f"  {n} samples, max-new-tokens {args.max_new_tokens}: {wall:.1f} s wall (accuracy {acc})")
        print(f"  rerun on the same --out (everything resumed, nothing redone): {rerun:.1f} s")

        from medix_r1.eval.grading import Grader
        from medix_r1.llm import BackendConfig, open_backend

        def local(mode: str) -> Grader:
            return Grader(
                open_backend(BackendConfig(model=str(model), n_ctx=2048, n_threads=args.threads)), mode=mode
            )

        def remote(concurrency: int) -> Grader:
            cfg = BackendConfig(url=url, name=name, concurrency=concurrency, timeout=120)
            return Grader(open_backend(cfg), max_tokens=12)

        print("\nin-process judge (3 rounds per sample):")
        logits = judge_rate(gens, work, local("logits"), "logits-constrained")
        grammar = judge_rate(
            gens,
            work,
            local("grammar"),
            "GBNF grammar",
        )
        print(f"  logits / grammar speed-up: {logits / grammar:.2f}x")

        port = free_port()
        srv = subprocess.Popen(
            medix("judge", "serve", "--model", str(model), "--port", str(port), "--n-ctx", "4096",
                  "--n-threads", threads),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/v1"
            wait_health(url, srv)
            print(f"\nremote judge: medix judge serve on port {port} (free text, max 12 tokens per reply):")
            name = model.stem
            judge_rate(gens, work, remote(1), "warm-up")
            one = judge_rate(gens, work, remote(1), "one at a time")
            many = judge_rate(
                gens,
                work,
                remote(args.concurrency),
                f"concurrency {args.concurrency}",
            )
            print(f"  concurrency speed-up: {many / one:.2f}x")
        finally:
            srv.terminate()
            srv.wait(timeout=30)
        rows = [
            json.loads(x)
            for x in (work / f"concurrency {args.concurrency}" / "demo" / "judgements.jsonl").open()
        ]
        print(f"  (remote replies parsed: {sum(r['error'] is None for r in rows)}/{len(rows)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
