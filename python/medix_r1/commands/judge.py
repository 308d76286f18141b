"""`medix judge`: serve a GGUF judge behind an OpenAI-compatible API; validate a judge on labelled pairs; show
the exact tokens it is given."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from medix_r1.commands import command, command_group

API_KEY_ENV = "MEDIX_JUDGE_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    jsub = command_group(sub, "judge", "the YES/NO judge of the composite reward")
    s = command(
        jsub,
        "serve",
        _serve,
        help="serve a .gguf judge with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)",
    )
    from medix_r1.bundle import add_bundle_option
    from medix_r1.commands.serve import add_server_options
    from medix_r1.llm.options import LOCAL, REMOTE, add_llm_options

    # --model, --n-ctx, --n-gpu-layers, --n-threads: the spellings serve had before (kept)
    old = {"model": ["--model"], "n_ctx": ["--n-ctx"], "n_gpu_layers": ["--n-gpu-layers"]}
    old["n_threads"] = ["--n-threads"]
    add_llm_options(s, prefix="judge", names=LOCAL, old=old, help={"model": "the judge model: a local .gguf"})
    add_bundle_option(s)
    add_server_options(s, port=8085, max_body=1024 * 1024, api_key_env=API_KEY_ENV)

    v = command(
        jsub,
        "validate",
        _validate,
        help="measure a judge (and an embedder) on labelled answer pairs; writes report.md/json and PNGs",
        description="Run a judge on labelled (answer, ground truth, match) pairs and write DIR/report.md, "
        "DIR/report.json and DIR/*.png with a pass/fail verdict. Exit status 1 when the judge fails.",
    )
    from medix_r1.judge.validate import DEFAULT_PAIRS, Thresholds

    src = v.add_mutually_exclusive_group()
    add_llm_options(src, prefix="judge", names=("model", "url"), cpu_option=False)
    # --n-threads, --n-ctx, --n-gpu-layers: the spellings validate had before (kept)
    old = {"n_ctx": ["--n-ctx"], "n_gpu_layers": ["--n-gpu-layers"], "n_threads": ["--n-threads"]}
    rest = ("n_ctx", "n_threads", "n_gpu_layers", *(r for r in REMOTE if r != "url"))
    add_llm_options(v, prefix="judge", names=rest, old=old)
    add_bundle_option(v)
    v.add_argument(
        "--embed-model", metavar="DIR", help="also measure this embedder (`medix embed export` dir)"
    )
    v.add_argument(
        "--embed-threshold", type=float, default=0.8, help="cosine threshold of the embedding reward"
    )
    v.add_argument(
        "--pairs",
        metavar="F.jsonl",
        default=str(DEFAULT_PAIRS),
        help="labelled pairs: JSONL with answer, ground_truth, match, optional category, question "
        "(default: the bundled medical set)",
    )
    v.add_argument("--out", required=True, metavar="DIR", help="directory for report.md, report.json, *.png")
    v.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N pairs")
    v.add_argument(
        "--injection-pairs",
        type=int,
        default=24,
        metavar="N",
        help="attack at most N correctly rejected wrong answers with each injection suffix (0: skip)",
    )
    for f in fields(Thresholds):
        v.add_argument(
            "--" + f.name.replace("_", "-"), type=float, default=f.default, help=f.metadata["help"]
        )

    i = command(
        jsub,
        "inspect",
        _inspect,
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
    from medix_r1.commands.serve import run_server, server_options
    from medix_r1.llm.server import ChatServer

    limits = server_options(args, API_KEY_ENV)
    chat: Any = local_backend(args)  # a GGUF: a LlamaCppChat
    return run_server(lambda: ChatServer(chat, **limits), args, "medix judge: serving {name}")


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


def _validate(args: argparse.Namespace) -> int:
    from medix_r1.bundle import resolve_bundle
    from medix_r1.errors import UserError
    from medix_r1.judge import JudgeConfig, make_judge
    from medix_r1.judge.validate import Thresholds, judge_identity, load_pairs, run_validation, write_report
    from medix_r1.judge.validate.report import fmt
    from medix_r1.llm.options import llm_overrides

    resolve_bundle(args, judge="judge_model", judge_skip="judge_url")
    if not (args.judge_model or args.judge_url):
        raise UserError("give --judge-model FILE.gguf or --judge-url URL (or --bundle DIR with a judge)")
    if args.judge_url and not args.judge_name:
        raise UserError("--judge-url needs --judge-name, the model id served there")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    th = Thresholds(**{f.name: getattr(args, f.name) for f in fields(Thresholds)})
    pairs = load_pairs(args.pairs)
    if args.limit is not None:
        pairs = pairs[: args.limit]
    try:
        jcfg = JudgeConfig(**llm_overrides(args, prefix="judge"))
    except ValueError as e:
        raise UserError(str(e)) from e
    embedder = None
    if args.embed_model:
        from medix_r1.embed.backends import make_embedder
        from medix_r1.embed.config import EmbedConfig

        embedder = make_embedder(EmbedConfig(model=args.embed_model, threads=args.judge_n_threads))
    judge = make_judge(jcfg)
    try:
        report = run_validation(
            judge,
            pairs,
            embedder=embedder,
            embed_threshold=args.embed_threshold,
            thresholds=th,
            injection_pairs=args.injection_pairs,
            log=lambda m: print(f"medix judge validate: {m}", file=sys.stderr, flush=True),
        )
    finally:
        if hasattr(judge, "close"):
            judge.close()
    report["judge"] = judge_identity(jcfg)
    report["pairs_file"] = str(Path(args.pairs).resolve())
    if args.embed_model:
        report["embed_model"] = str(Path(args.embed_model).resolve())
    written = write_report(report, out)
    print(
        f"medix judge validate: {report['verdict'].upper()}: balanced accuracy "
        f"{fmt(report['balanced_accuracy'], True)}, "
        f"YES on mismatches {fmt(report['yes_rate_on_mismatch'], True)}, "
        f"injection flips {fmt(report['injection_flip_rate'], True)}, AUROC {fmt(report['auroc'])}, "
        f"{report['ms_per_pair']:.1f} ms/pair"
        + (f"; failed: {'; '.join(report['failed_checks'])}" if report["failed_checks"] else "")
    )
    print(f"medix judge validate: wrote {', '.join(str(p) for p in written)}")
    return 0 if report["verdict"] == "pass" else 1
