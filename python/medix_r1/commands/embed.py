"""`medix embed`: prepare embedding models for the embedding-accuracy reward (ONNX export for fastembed)."""

from __future__ import annotations

import argparse
import sys

from medix_r1.commands import command_group


def register(sub: argparse._SubParsersAction) -> None:
    esub = command_group(sub, "embed", "embedding models for the reward: export to ONNX for fastembed")
    e = esub.add_parser(
        "export",
        help="export a local Hugging Face sentence-embedding checkpoint to an ONNX directory fastembed loads",
        description="Export a local Hugging Face sentence-embedding checkpoint (BERT-like, e.g. "
        "MedEmbed-large-v0.1 or all-MiniLM-L6-v2) to ONNX, check it against torch, and write the directory "
        "that `--embed-model` takes. Needs torch, transformers and onnx (the `export` extra).",
    )
    e.add_argument("--from", dest="src", required=True, metavar="DIR", help="the Hugging Face checkpoint")
    e.add_argument("--to", dest="dst", required=True, metavar="DIR", help="where to write the ONNX directory")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.add_argument(
        "--atol", type=float, default=1e-4, help="largest allowed |ONNX - torch| on normalised embeddings"
    )
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from medix_r1.cli import UserError
    from medix_r1.embed.export import export_onnx, read_manifest
    from medix_r1.errors import MissingModelError

    try:
        out = export_onnx(args.src, args.dst, opset=args.opset, atol=args.atol)
    except MissingModelError as e:
        raise UserError(str(e)) from None
    except ImportError as e:
        raise UserError(f"{e}; `medix embed export` needs torch, transformers and onnx") from None
    m = read_manifest(out)
    print(
        f"wrote {out} (dim {m['dim']}, {m['pooling']} pooling, max {m['max_length']} tokens); "
        f"use it with --embed-model {out}",
        file=sys.stderr,
    )
    return 0
