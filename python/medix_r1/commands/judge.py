"""`medix judge`: serve a GGUF judge behind an OpenAI-compatible API; show the exact tokens it is given."""

from __future__ import annotations

import argparse
import json
import os
import sys

from medix_r1.commands import command_group

API_KEY_ENV = "MEDIX_JUDGE_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    jsub = command_group(sub, "judge", "the YES/NO judge of the composite reward")
    s = jsub.add_parser(
        "serve",
        help="serve a .gguf judge with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)",
    )
    from medix_r1.bundle import add_bundle_option
    from medix_r1.llm.options import LOCAL, add_llm_options

    # --model, --n-ctx, --n-gpu-layers, --n-threads: the spellings serve had before (kept)
    old = {"model": ["--model"], "n_ctx": ["--n-ctx"], "n_gpu_layers": ["--n-gpu-layers"]}
    old["n_threads"] = ["--n-threads"]
    add_llm_options(s, prefix="judge", names=LOCAL, old=old, help={"model": "the judge model: a local .gguf"})
    add_bundle_option(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8085, help="port to listen on (0: any free port)")
    s.add_argument("--name", default=None, help="model id clients must send (default: the file's stem)")
    s.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` from clients (default: ${API_KEY_ENV} when set; prefer "
        "the variable: a key on the command line is visible to other users of the machine)",
    )
    s.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=64,
        help="requests served at once; a request gets a slot only when fully read and authorised "
        "(beyond: 429)",
    )
    s.add_argument(
        "--max-per-client",
        metavar="N",
        type=int,
        default=16,
        help="open connections from one client address (beyond: 429)",
    )
    s.add_argument(
        "--max-queue",
        metavar="N",
        type=int,
        default=32,
        help="requests waiting for the model at most (beyond: 429)",
    )
    s.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds a connection may idle plus take to send a whole request (head and body)",
    )
    s.add_argument(
        "--max-body", metavar="N", type=int, default=1024 * 1024, help="largest request body in bytes"
    )
    s.set_defaults(handler=_serve)
    from medix_r1.judge.validate import register_validate

    register_validate(jsub)

    i = jsub.add_parser(
        "inspect",
        help="print the exact tokens the judge model is given for one (answer, ground truth) pair",
        description="Prints the token ids and texts of the reward judge's prompt (or, with --grader, the "
        "eval grader's first-round prompt) for one pair, control tokens marked. No answer can change the "
        "number of control tokens: answers are tokenized with special-token parsing off.",
    )
    add_llm_options(i, prefix="judge", names=LOCAL, old={"model": ["--judge", "--model"]})
    add_bundle_option(i)
    i.add_argument("--answer", required=True, help="the predicted answer (model-written text)")
    i.add_argument("--ground-truth", required=True, help="the reference answer")
    i.add_argument("--question", default="", help="with --grader: the question (default empty)")
    i.add_argument("--grader", action="store_true", help="the eval grader's first-round prompt instead")
    i.add_argument(
        "--json", action="store_true", help='{"tokens": [{"id", "text", "control"}...], "n_control": N}'
    )
    i.set_defaults(handler=_inspect)


def local_backend(args: argparse.Namespace) -> object:
    """The judge GGUF these options name (``--judge-model`` or the bundle's judge), opened by
    :func:`medix_r1.llm.open_backend`; a bad option or file is a UserError."""
    from medix_r1.bundle import resolve_bundle
    from medix_r1.errors import BackendError, MissingModelError, UserError
    from medix_r1.llm import BackendConfig, open_backend
    from medix_r1.llm.options import LOCAL, llm_overrides

    resolve_bundle(args, judge="judge_model")
    if not args.judge_model:
        raise UserError("give --judge-model FILE.gguf (or --bundle DIR with a judge)")
    try:
        return open_backend(BackendConfig(**llm_overrides(args, prefix="judge", names=LOCAL)))
    except (MissingModelError, BackendError, ValueError) as e:
        raise UserError(str(e)) from e


def _serve(args: argparse.Namespace) -> int:
    from medix_r1.errors import BackendError, MissingModelError, UserError
    from medix_r1.llm.server import ChatServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    for flag in ("max_connections", "max_queue", "max_body", "max_per_client"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    chat = local_backend(args)
    try:
        srv = ChatServer(
            chat,  # type: ignore[arg-type]  # a GGUF: a LlamaCppChat
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
    print(
        f"medix judge: serving {srv.model_name!r} at {srv.url} ({auth}; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        srv.serve_forever()
    finally:
        srv.httpd.server_close()
    return 0


def inspect_tokens(
    model: str | object, answer: str, ground_truth: str, *, grader: bool = False, question: str = ""
) -> dict:
    """The tokens the judge model is given for one pair: ``{"tokens": [{"id", "text", "control"}...],
    "n_control": N}`` (the reward judge's prompt, or the eval grader's first-round prompt). ``model``: a
    GGUF path or an open LlamaCppChat (closed here)."""
    from medix_r1.llm import BackendConfig, LlamaCppChat, open_backend

    chat = model if isinstance(model, LlamaCppChat) else open_backend(BackendConfig(model=str(model)))
    assert isinstance(chat, LlamaCppChat)
    try:
        if grader:
            from medix_r1.eval.grading import Grader, build_first_messages

            row = {"type": "qa", "question": question, "reference": ground_truth, "response": answer}
            ids = Grader(chat).prompt_tokens(build_first_messages(row))
        else:
            from medix_r1.judge import LocalJudge

            ids = LocalJudge(chat, cache_size=0).prompt_tokens(answer, ground_truth)
        tokens = [{"id": t, "text": chat.token_text(t), "control": chat.is_control(t)} for t in ids]
    finally:
        chat.close()
    return {"tokens": tokens, "n_control": sum(t["control"] for t in tokens)}


def _inspect(args: argparse.Namespace) -> int:
    out = inspect_tokens(
        local_backend(args), args.answer, args.ground_truth, grader=args.grader, question=args.question
    )
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for i, t in enumerate(out["tokens"]):
        mark = "CONTROL" if t["control"] else ""
        print(f"{i:5d} {t['id']:7d} {mark:7s} {t['text']!r}")
    print(
        f"{len(out['tokens'])} tokens, {out['n_control']} control tokens (all from the chat template; "
        "the answer is tokenized with special-token parsing off)",
        file=sys.stderr,
    )
    return 0
