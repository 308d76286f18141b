"""Which GGUF quantization makes the fastest CPU judge: llama.cpp prompt throughput of one model stored as
several types, same build, same threads, one run.

    python benchmarks/bench_quant.py [--model X.gguf] [--types Q4_1,Q4_0,Q8_0,Q4_K_M,F16] [--threads 2]

The other types are re-quantized from ``--model`` into a temporary directory (``llama_model_quantize`` with
``allow_requantize``): good enough to time the kernels, not to judge with (re-quantizing loses quality; get a
judge GGUF made from the original weights). A judge's cost is its prompt evaluation, so this prints tokens/s
for a 28-token piece (one judged pair: answer + template tail) and a 256-token prompt. Asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from pathlib import Path

from bench_judge import DEFAULT_MODEL  # the test judge GGUF

TEXT = "The patient presents with a productive cough, fever and right-sided pleuritic chest pain. " * 40


def prompt_speed(path: Path, threads: int, sizes: tuple[int, ...], repeats: int = 3) -> list[float]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, verbose=False)
    try:
        tokens = llm.tokenize(TEXT.encode())
        out = []
        for n in sizes:
            best = float("inf")
            for _ in range(repeats):
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(tokens[:n])
                best = min(best, time.perf_counter() - t0)
            out.append(n / best)
        return out
    finally:
        llm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--types", default="Q4_1,Q4_0,Q8_0,Q4_K_M,F16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import llama_cpp

    print(llama_cpp.llama_print_system_info().decode().strip())
    sizes = (28, 256)
    with tempfile.TemporaryDirectory(prefix="medix-quant-") as tmp:
        for name in args.types.split(","):
            ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.strip().upper()}", None)
            if ftype is None:
                print(f"{name}: unknown type")
                continue
            path = Path(tmp) / f"{name}.gguf"
            if args.model.name.upper().endswith(f".{name.upper()}.GGUF"):
                path = args.model  # the original file
            else:
                p = llama_cpp.llama_model_quantize_default_params()
                p.ftype, p.allow_requantize, p.nthread = ftype, True, args.threads
                src, dst = str(args.model).encode(), str(path).encode()
                if llama_cpp.llama_model_quantize(src, dst, ctypes.byref(p)):
                    print(f"{name}: llama_model_quantize failed")
                    continue
            speeds = prompt_speed(path, args.threads, sizes)
            size_mb = path.stat().st_size / 2**20
            cells = "  ".join(f"{n:4d} tokens {s:6.0f} tok/s" for n, s in zip(sizes, speeds))
            print(f"{name:7s} {size_mb:6.1f} MiB  {cells}")


if __name__ == "__main__":
    main()
