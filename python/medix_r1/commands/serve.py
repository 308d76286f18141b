"""`medix serve`: answer OpenAI-compatible chat requests with an exported policy GGUF (streaming included)."""

from __future__ import annotations

import argparse
import os
import sys

API_KEY_ENV = "MEDIX_SERVE_API_KEY"
SERVE_LLM = ("n_ctx", "n_threads", "n_gpu_layers")


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
    from medix_r1.llm.options import add_llm_options

    # --n-ctx, --n-threads, --n-gpu-layers and --llama-extra-buffers: the one declaration of the LLM options
    add_llm_options(s, prefix="", names=SERVE_LLM)
    s.add_argument("--chat-format", default=None, help="llama-cpp-python chat format (default: the GGUF's)")
    s.add_argument("--name", default=None, help="model id clients must send (default: the file's stem)")
    s.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` (default: ${API_KEY_ENV} when set; prefer the variable)",
    )
    s.add_argument("--max-connections", metavar="N", type=int, default=64, help="open connections at most")
    s.add_argument(
        "--max-per-client",
        metavar="N",
        type=int,
        default=16,
        help="open connections from one client address (beyond: 429)",
    )
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
    from medix_r1.export.policy import policy_files

    if os.path.isdir(args.model):
        args.model, mm = policy_files(args.model)
        args.mmproj = args.mmproj or mm
    elif not args.mmproj and os.path.isfile(os.path.join(os.path.dirname(args.model), "export.json")):
        try:  # an exported vision model: its projector comes with it
            model, mm = policy_files(os.path.dirname(args.model))
        except MissingModelError:  # e.g. a gguf-lora export: no model of its own
            model, mm = args.model, None
        if os.path.samefile(model, args.model):
            args.mmproj = mm
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    from medix_r1.llm import BackendConfig
    from medix_r1.llm.options import llm_overrides

    try:  # checked (and defaulted) as every command's LLM options are
        llm = BackendConfig(model=args.model, **llm_overrides(args, prefix="", names=SERVE_LLM))
    except ValueError as e:
        raise UserError(str(e)) from e
    for flag in ("max_connections", "max_queue", "max_body", "max_per_client"):
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
            n_ctx=llm.n_ctx,
            n_gpu_layers=llm.n_gpu_layers,
            n_threads=llm.n_threads,
            chat_format=args.chat_format,
            host=args.host,
            port=args.port,
            name=args.name,
            api_key=api_key,
            max_connections=args.max_connections,
            max_queue=args.max_queue,
            timeout=args.timeout,
            max_body=args.max_body,
            max_per_client=args.max_per_client,
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
