"""`medix judge`: serve a GGUF judge model behind an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="the YES/NO judge of the composite reward")
    p.set_defaults(group_parser=p)
    jsub = p.add_subparsers(dest="judge_command", metavar="SUBCOMMAND")
    s = jsub.add_parser(
        "serve",
        help="serve a .gguf judge with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)",
    )
    s.add_argument("--model", required=True, help="the judge model: a local .gguf file")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8085, help="port to listen on (0: any free port)")
    s.add_argument("--n-ctx", type=int, default=4096, help="context size in tokens")
    s.add_argument("--n-gpu-layers", type=int, default=0, help="layers offloaded to the GPU (-1: all)")
    s.add_argument("--n-threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    s.add_argument("--name", default=None, help="model id clients must send (default: the file's stem)")
    s.set_defaults(handler=_serve)
    from medix_r1.judge.validate import register_validate

    register_validate(jsub)


def _serve(args: argparse.Namespace) -> int:
    from medix_r1.cli import UserError
    from medix_r1.errors import BackendError, MissingModelError
    from medix_r1.judge.server import JudgeServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.n_ctx < 256:
        raise UserError(f"--n-ctx must be >= 256, got {args.n_ctx}")
    if args.n_threads is not None and args.n_threads < 1:
        raise UserError(f"--n-threads must be >= 1, got {args.n_threads}")
    try:
        srv = JudgeServer(
            args.model,
            host=args.host,
            port=args.port,
            n_ctx=args.n_ctx,
            n_gpu_layers=args.n_gpu_layers,
            n_threads=args.n_threads,
            name=args.name,
        )
    except (MissingModelError, BackendError) as e:
        raise UserError(str(e)) from e
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    print(
        f"medix judge: serving {srv.model_name!r} at {srv.url} (Ctrl-C to stop)", file=sys.stderr, flush=True
    )
    try:
        srv.serve_forever()
    finally:
        srv.httpd.server_close()
    return 0
