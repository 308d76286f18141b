"""`medix serve`: answer OpenAI-compatible chat requests with an exported policy GGUF (streaming included)."""

from __future__ import annotations

import argparse
import os
import sys

API_KEY_ENV = "MEDIX_SERVE_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a policy .gguf (e.g. from medix export) with an OpenAI-compatible API, "
        "streaming included",
        description="POST /v1/chat/completions (stream: true answers as server-sent events; image parts with "
        "--mmproj), GET /v1/models, GET /health, on 127.0.0.1 unless --host says otherwise. The judge "
        "server's limits apply: --api-key, --max-connections, --max-queue (429 beyond), --timeout, "
        "--max-body; a request whose client has gone stops decoding.",
    )
    s.add_argument("--model", metavar="F.gguf", help="the policy GGUF (default: the bundle's policy)")
    s.add_argument("--mmproj", metavar="F.gguf", help="its vision projector, for image+text requests")
    s.add_argument("--lora", metavar="F.gguf", help="a llama.cpp LoRA GGUF applied on --model")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    s.add_argument("--n-ctx", type=int, default=4096, metavar="N", help="context size in tokens")
    s.add_argument("--n-gpu-layers", type=int, default=0, metavar="N", help="layers on the GPU (-1: all)")
    s.add_argument("--n-threads", type=int, default=None, metavar="N", help="CPU threads")
    s.add_argument("--chat-format", default=None, help="llama-cpp-python chat format (default: the GGUF's)")
    s.add_argument("--name", default=None, help="model id clients must send (default: the file's stem)")
    s.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` (default: ${API_KEY_ENV} when set; prefer the variable)",
    )
    s.add_argument("--max-connections", metavar="N", type=int, default=64, help="open connections at most")
    s.add_argument("--max-queue", metavar="N", type=int, default=32, help="requests waiting at most")
    s.add_argument("--timeout", metavar="S", type=float, default=30.0, help="seconds a connection may idle")
    s.add_argument("--max-body", metavar="N", type=int, default=8 * 1024 * 1024, help="largest body in bytes")
    from medix_r1.bundle import add_bundle_option

    add_bundle_option(s)
    s.set_defaults(handler=_serve, group_parser=s)


def _serve(args: argparse.Namespace) -> int:
    from medix_r1.bundle import resolve_bundle
    from medix_r1.errors import BackendError, MissingModelError, UserError
    from medix_r1.export.serve import PolicyServer

    resolve_bundle(args, policy="model")
    if not args.model:
        raise UserError("--model F.gguf is required (or --bundle DIR carrying a policy GGUF)")
    if os.path.isdir(args.model):
        from medix_r1.export.policy import policy_files

        args.model, mm = policy_files(args.model)
        args.mmproj = args.mmproj or mm
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.n_ctx < 256:
        raise UserError(f"--n-ctx must be >= 256, got {args.n_ctx}")
    for flag in ("max_connections", "max_queue", "max_body"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        srv = PolicyServer(
            args.model,
            mmproj=args.mmproj,
            lora=args.lora,
            n_ctx=args.n_ctx,
            n_gpu_layers=args.n_gpu_layers,
            n_threads=args.n_threads,
            chat_format=args.chat_format,
            host=args.host,
            port=args.port,
            name=args.name,
            api_key=api_key,
            max_connections=args.max_connections,
            max_queue=args.max_queue,
            timeout=args.timeout,
            max_body=args.max_body,
        )
    except (MissingModelError, BackendError) as e:
        raise UserError(str(e)) from e
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    auth = "API key required" if api_key else "no API key"
    extra = (" + mmproj" if args.mmproj else "") + (" + LoRA" if args.lora else "")
    print(
        f"medix serve: {srv.model_name!r}{extra} at {srv.url} ({auth}; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        srv.serve_forever()
    finally:
        srv.close()
    return 0
