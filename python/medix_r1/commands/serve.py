"""`medix serve`: answer OpenAI-compatible chat requests with an exported policy GGUF (streaming included)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from medix_r1.commands import command

if TYPE_CHECKING:
    from medix_r1.llm.server import ChatServer

API_KEY_ENV = "MEDIX_SERVE_API_KEY"
SERVE_LLM = ("n_ctx", "n_threads", "n_gpu_layers")


def register(sub: argparse._SubParsersAction) -> None:
    s = command(
        sub,
        "serve",
        _serve,
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
    from medix_r1.llm.options import add_llm_options

    # --n-ctx, --n-threads, --n-gpu-layers and --llama-extra-buffers: the one declaration of the LLM options
    add_llm_options(s, prefix="", names=SERVE_LLM)
    s.add_argument("--chat-format", default=None, help="llama-cpp-python chat format (default: the GGUF's)")
    add_server_options(s, port=8080, max_body=8 * 1024 * 1024, api_key_env=API_KEY_ENV)
    from medix_r1.bundle import add_bundle_option

    add_bundle_option(s)


def _serve(args: argparse.Namespace) -> int:
    from medix_r1.bundle import resolve_bundle
    from medix_r1.errors import MissingModelError, UserError
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
    from medix_r1.llm import BackendConfig
    from medix_r1.llm.options import llm_overrides

    try:  # checked (and defaulted) as every command's LLM options are
        llm = BackendConfig(
            model=args.model,
            mmproj=args.mmproj,
            chat_format=args.chat_format,
            **llm_overrides(args, prefix="", names=SERVE_LLM),
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    limits = server_options(args, API_KEY_ENV)
    extra = (" + mmproj" if args.mmproj else "") + (" + LoRA" if args.lora else "")
    return run_server(
        lambda: PolicyServer(llm, lora=args.lora, **limits), args, f"medix serve: {{name}}{extra}"
    )


def add_server_options(p: argparse.ArgumentParser, *, port: int, max_body: int, api_key_env: str) -> None:
    """The flags of an OpenAI-compatible server (`medix serve`, `medix judge serve`): where it listens, the
    model id it answers to, its API key and its limits (:class:`~medix_r1.llm.server.ChatServer`)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=port, help="port to listen on (0: any free port)")
    p.add_argument("--name", default=None, help="model id clients must send (default: the file's stem)")
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` from clients (default: ${api_key_env} when set; prefer "
        "the variable: a key on the command line is visible to other users of the machine)",
    )
    p.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=64,
        help="requests served at once; a request gets a slot only when fully read and authorised "
        "(beyond: 429)",
    )
    p.add_argument(
        "--max-per-client",
        metavar="N",
        type=int,
        default=16,
        help="open connections from one client address (beyond: 429)",
    )
    p.add_argument(
        "--max-queue",
        metavar="N",
        type=int,
        default=32,
        help="requests waiting for the model at most (beyond: 429)",
    )
    p.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds a connection may idle plus take to send a whole request (head and body)",
    )
    p.add_argument(
        "--max-body", metavar="N", type=int, default=max_body, help="largest request body in bytes"
    )


def server_options(args: argparse.Namespace, api_key_env: str) -> dict[str, Any]:
    """The :class:`~medix_r1.llm.server.ChatServer` keywords of :func:`add_server_options`' flags, checked (a
    bad one is a UserError naming its flag); the API key from ``--api-key`` or ``$api_key_env``."""
    from medix_r1.errors import UserError

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    for flag in ("max_connections", "max_queue", "max_body", "max_per_client"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    keys = ("host", "port", "name", "max_connections", "max_queue", "timeout", "max_body", "max_per_client")
    return {k: getattr(args, k) for k in keys} | {
        "api_key": args.api_key or os.environ.get(api_key_env) or None
    }


def run_server(start: Callable[[], ChatServer], args: argparse.Namespace, what: str) -> int:
    """Start the server ``start()`` makes (a missing model or a port that cannot be listened on is a
    UserError), say where it serves on stderr (``what``, with ``{name}`` for its model id) and serve until
    interrupted."""
    from medix_r1.errors import BackendError, MissingModelError, UserError

    try:
        srv = start()
    except (MissingModelError, BackendError) as e:
        raise UserError(str(e)) from e
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    auth = "API key required" if srv.api_key else "no API key"
    print(
        f"{what.format(name=repr(srv.model_name))} at {srv.url} ({auth}; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    _stop_on_signals()
    try:
        srv.serve_forever()
    finally:
        srv.close()
    return 0


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM stop the server (closed in order, exit 130), whatever this process inherited: a
    server started in the background by a shell inherits SIGINT ignored, and a service manager stops it with
    SIGTERM, which would otherwise kill it without closing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
