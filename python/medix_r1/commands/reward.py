"""`medix reward`: score (response, ground truth) pairs from a JSONL file with the composite reward."""

from __future__ import annotations

import argparse
import sys

from medix_r1.commands import command_group


def register(sub: argparse._SubParsersAction) -> None:
    rsub = command_group(sub, "reward", "score completions with the MediX-R1 composite reward")
    s = rsub.add_parser(
        "score",
        help="score a JSONL file of {response, ground_truth} rows",
        description="Score each {response, ground_truth} row with format, modality, LLM-judge accuracy and "
        "embedding accuracy. Without --judge-* / --embed-model those components do not apply and only "
        "format and modality are scored. Custom components come from --config (`extra: [{function: "
        "path/to/file.py:function, weight: 0.2}]`): each is a column named after its function, and a "
        "share of overall. Rerunning with the same --output resumes after the rows already "
        "there (what produced it is recorded in OUTPUT.meta.json; a rerun with another input or "
        "configuration is refused). Bad rows are written with null scores and an error naming file:line; "
        "the exit status is 0 unless every row failed (1).",
    )
    s.add_argument(
        "--input", required=True, help="JSONL with at least `response` and `ground_truth` per line"
    )
    s.add_argument("--output", required=True, help="JSONL to write (rows already there are kept and skipped)")
    s.add_argument("--config", metavar="YAML", help="a RewardConfig as YAML (the options below override it)")
    s.add_argument(
        "--mode", choices=["strict", "reference"], default=None, help="parsing mode (default strict)"
    )
    from medix_r1.rewards.components import default_weights_spec

    s.add_argument(
        "--weights",
        metavar="SPEC",
        help=f'e.g. "{default_weights_spec()}" (the paper\'s, the default)',
    )
    j = s.add_argument_group("LLM judge (one of)")
    from medix_r1.llm.options import add_llm_options

    add_llm_options(j, prefix="judge", old={"model": ["--judge"]})
    j.add_argument(
        "--judge-reference-prompt", metavar="FILE",
        help="--mode reference: the judge prompt template ({predicted}, {ground_truth}), e.g. a copy of the "
        "prompt in the authors' medical.py, which reproduces their numbers exactly (default: our wording)",
    )  # fmt: skip
    j.add_argument("--soft-judge", action="store_true", default=None, help="reward P(YES) instead of 0/1")
    j.add_argument(
        "--max-unscorable",
        type=float,
        metavar="F",
        help="stop when more than this share of a batch cannot be judged (default 0.5)",
    )
    e = s.add_argument_group("embedding model")
    e.add_argument("--embed-model", metavar="DIR", help="a directory written by `medix embed export`")
    e.add_argument(
        "--embed-backend", choices=["fastembed", "sentence-transformers"], help="default fastembed"
    )
    e.add_argument(
        "--embed-threshold", type=float, metavar="COS", help="cosine counted as correct (default 0.8)"
    )
    e.add_argument("--soft-embed", action="store_true", default=None, help="reward the cosine itself")
    s.add_argument("--batch-size", type=int, default=64, metavar="N", help="rows per batch (default 64)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from medix_r1.bundle import add_bundle_option

    add_bundle_option(s)
    s.set_defaults(handler=_score)


def _load_yaml(path: str) -> dict:
    from medix_r1.cli import UserError
    from medix_r1.config import load_yaml
    from medix_r1.errors import ConfigError

    try:
        data = load_yaml(path) or {}
    except OSError as e:
        raise UserError(f"--config: {e}") from None
    except ConfigError as e:
        raise UserError(f"--config {e}") from None
    if isinstance(data, dict) and isinstance(data.get("reward"), dict):
        data = data["reward"]  # a training config: take its reward section
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of reward options")
    return data


def build_config(args: argparse.Namespace):  # -> RewardConfig
    """The RewardConfig from --config plus the command-line overrides."""
    from medix_r1.rewards.composite import RewardConfig, parse_weights

    d = _load_yaml(args.config) if args.config else {}
    judge = dict(d.pop("judge", None) or {})
    embed = dict(d.pop("embed", None) or {})
    if args.mode is not None:
        d["mode"] = args.mode
    if args.weights is not None:
        d.pop("weights", None)
        d.update(parse_weights(args.weights))
    if args.soft_judge:
        d["soft_judge"] = True
    if args.max_unscorable is not None:
        d["max_unscorable_fraction"] = args.max_unscorable
    if args.judge_model or args.judge_url:
        judge = {k: v for k, v in judge.items() if k not in ("model", "url", "name")}
        if args.judge_model and args.judge_url:
            raise ValueError("give either --judge-model or --judge-url, not both")
        judge.update({"model": args.judge_model} if args.judge_model else {"url": args.judge_url})
    from medix_r1.llm.options import llm_overrides

    judge.update({k: v for k, v in llm_overrides(args, prefix="judge").items() if k not in ("model", "url")})
    if args.judge_reference_prompt is not None:
        judge["reference_prompt"] = args.judge_reference_prompt
    if args.judge_name and not judge.get("url"):
        raise ValueError("--judge-name goes with --judge-url")
    for key, value in (
        ("model", args.embed_model),
        ("backend", args.embed_backend),
        ("threshold", args.embed_threshold),
        ("soft", args.soft_embed),
    ):
        if value is not None:
            embed[key] = value
    d["judge"] = judge if (judge.get("model") or judge.get("url")) else None
    d["embed"] = embed if embed.get("model") else None
    return RewardConfig.from_dict(d)


def _score(args: argparse.Namespace) -> int:
    from medix_r1.cli import UserError
    from medix_r1.errors import BackendError, JudgeFailedError, MissingModelError, RewardComponentError
    from medix_r1.rewards.score_file import ResumeMismatchError, score_file

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    from medix_r1.bundle import resolve_bundle

    resolve_bundle(args, judge="judge_model", judge_skip="judge_url", embed="embed_model")
    try:
        cfg = build_config(args)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    try:
        res = score_file(
            args.input, args.output, cfg, batch_size=args.batch_size, progress=not args.no_progress
        )
    except (MissingModelError, ResumeMismatchError) as e:
        raise UserError(str(e)) from None
    except ImportError as e:
        raise UserError(
            f"{e} (install the judge/embed extras: pip install 'medix-r1[judge,embed]')"
        ) from None
    except (JudgeFailedError, BackendError, RewardComponentError) as e:
        raise UserError(f"{e}. Rows written so far are kept in {args.output}; rerun to resume.") from None
    parts = [f"{res.rows} rows in {args.output}"]
    if res.skipped:
        parts.append(f"{res.skipped} already there (resumed)")
    if res.bad_rows:
        parts.append(f"{res.bad_rows} unreadable input rows (null scores, see `errors`)")
    if res.unscorable - res.bad_rows:
        parts.append(f"{res.unscorable - res.bad_rows} rows with an unscorable component (see `errors`)")
    print("medix: " + "; ".join(parts), file=sys.stderr)
    if res.rows and res.failed == res.rows:
        print(f"medix: every row failed (no `overall` score in any row of {args.output})", file=sys.stderr)
        return 1
    return 0
