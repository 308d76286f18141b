"""`medix export`: a trained run as a merged checkpoint, a quantized GGUF (+ mmproj) or a LoRA GGUF."""

from __future__ import annotations

import argparse

from medix_r1.commands import command


def register(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "export",
        _export,
        help="turn a run's LoRA adapter into a merged checkpoint, a quantized GGUF or a LoRA GGUF (offline)",
        description="merged: the adapter merged into the 16-bit base (a QLoRA run's 4-bit base is loaded in "
        "16-bit), saved as safetensors with the tokenizer/processor and chat template. gguf: that checkpoint "
        "converted by llama.cpp's own convert_hf_to_gguf.py (from the llama-cpp-python source distribution: "
        "--converter, --bundle, $MEDIX_LLAMA_CPP_SOURCE) and quantized with llama_model_quantize, plus the "
        "vision projector (mmproj) of a vision model. gguf-lora: the adapter alone for a base GGUF you have. "
        "export.json (inputs, hashes, sizes, versions) is written last; a rerun resumes or starts over.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="output folder of medix train / medix demo")
    src.add_argument("--adapter", metavar="DIR", help="a PEFT LoRA adapter folder (with --base)")
    p.add_argument("--base", metavar="DIR", help="the 16-bit base checkpoint (default: the run's model)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--format", dest="fmt", choices=["merged", "gguf", "gguf-lora"], default="gguf")
    p.add_argument(
        "--quant",
        metavar="Q",
        help="GGUF type: q4_k_m, q5_k_m, q6_k, q8_0, q4_0, f16, bf16, f32, ... "
        "(default q8_0; gguf-lora: f16)",
    )
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="dtype of the merge (default: the base's 16-bit dtype, else bfloat16)",
    )
    p.add_argument(
        "--converter",
        metavar="PATH",
        help="llama-cpp-python sdist (.tar.gz), a llama.cpp folder, or its convert_hf_to_gguf.py",
    )
    p.add_argument("--threads", type=int, default=None, help="threads for quantization")
    p.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
    from medix_r1.bundle import add_bundle_option

    add_bundle_option(p)


def _export(args: argparse.Namespace) -> int:
    import os

    from medix_r1.bundle import ENV
    from medix_r1.export import export

    rec = export(
        out=args.out,
        run=args.run,
        adapter=args.adapter,
        base=args.base,
        fmt=args.fmt,
        quant=args.quant,
        dtype=args.dtype,
        converter=args.converter,
        bundle=args.bundle or os.environ.get(ENV) or None,
        threads=args.threads,
        overwrite=args.overwrite,
    )
    names = ", ".join(
        f"{f['name']} ({f['size'] / 1e6:.1f} MB)" for f in rec["files"] if f["role"] != "checkpoint"
    )
    what = names or f"{len(rec['files'])} files, {rec['total_size'] / 1e6:.1f} MB"
    print(f"medix export: {rec['format']} in {args.out}: {what}; export.json written ({rec['seconds']:.0f}s)")
    return 0
