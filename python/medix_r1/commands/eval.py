"""`medix eval`: the paper's three-stage evaluation (generate, judge, score) on local benchmark copies."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medix_r1.commands import command_group


def _add_task_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--tasks",
        nargs="+",
        required=required,
        metavar="TASK",
        help="task names: the bundled demo / demo_vlm, any of the 17 benchmarks (e.g. medqa vqa_rad), `all` "
        "for the 17, or names from --task-file",
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding one <task>/ directory per benchmark (default $MEDIX_DATA or "
        "~/.cache/medix-r1/eval-data)",
    )
    p.add_argument(
        "--task-file",
        action="append",
        default=[],
        metavar="YAML",
        help="your own task(s) in YAML (repeatable)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N samples of each task")


def _add_generate_options(p: argparse.ArgumentParser) -> None:
    from medix_r1.llm.options import add_llm_options

    g = p.add_argument_group("evaluated model (one of)")
    add_llm_options(
        g,
        prefix="",
        names=("model", "url", "name"),
        old={"name": ["--model-name"]},
        help={
            "model": "a local .gguf (llama.cpp) or a transformers checkpoint directory",
            "name": "the model id on --url",
        },
    )
    g.add_argument(
        "--mmproj", metavar="FILE", help="the multimodal projector of a vision GGUF (mmproj-*.gguf)"
    )
    g.add_argument("--chat-format", metavar="NAME", help="llama-cpp-python chat format (e.g. qwen2.5-vl)")
    g.add_argument("--adapter", metavar="DIR", help="a LoRA adapter (peft) on top of a checkpoint directory")
    p.add_argument(
        "--max-new-tokens", type=int, default=2048, metavar="N", help="answer length limit (default 2048)"
    )
    add_llm_options(p, prefix="", names=("n_ctx", "n_threads", "n_gpu_layers", "api_key_env", "concurrency"))


def _add_judge_options(p: argparse.ArgumentParser) -> None:
    from medix_r1.llm.options import add_llm_options

    g = p.add_argument_group("judge (one of)")
    add_llm_options(
        g,
        prefix="judge",
        old={"model": ["--judge"]},
        help={"model": 'a local GGUF judge, run in-process, its reply constrained to {"score": n}'},
    )
    p.add_argument(
        "--judge-max-tokens",
        type=int,
        default=64,
        metavar="N",
        help="reply limit of a remote judge (default 64)",
    )
    p.add_argument(
        "--judge-mode",
        choices=["logits", "grammar"],
        default="logits",
        help="in-process judge: pick the best allowed score from the logits after a forced '{\"score\": ' "
        "(default, fast) or decode under a llama.cpp GBNF grammar",
    )
    p.add_argument(
        "--parse-retries",
        type=int,
        default=2,
        metavar="N",
        help="re-asks after an unreadable judge reply before the sample is recorded as an error (default 2)",
    )
    p.add_argument(
        "--retry-errors", action="store_true", help="judge again the samples recorded as errors before"
    )


def register(sub: argparse._SubParsersAction) -> None:
    esub = command_group(sub, "eval", "evaluate a model on medical benchmarks with an LLM judge (3 stages)")

    g = esub.add_parser(
        "generate",
        help="stage 1: greedy answers for every sample, to OUT/<task>/generations.jsonl (resumable)",
        description="Answer every sample greedily; each answer is appended to "
        "OUT/<task>/generations.jsonl as it comes, and a rerun skips the samples already there.",
    )
    _add_task_options(g, required=True)
    _add_generate_options(g)
    g.set_defaults(handler=_generate)

    j = esub.add_parser(
        "judge",
        help="stage 2: three-round reference-based judging, to OUT/<task>/judgements.jsonl (resumable)",
        description="Judge every generated answer with the paper's BASE (0/1) or MIMIC (0-5) template, three "
        "rounds in one conversation; majority vote (binary) or mean (0-5). Unreadable replies are retried, "
        "then recorded as errors (score null), never as 0.",
    )
    _add_judge_options(j)
    j.add_argument("--tasks", nargs="+", metavar="TASK", help="default: every task with answers under --out")
    j.set_defaults(handler=_judge)

    s = esub.add_parser(
        "score",
        help="stage 3: per-task accuracy and the average; OUT/scores.md, scores.csv, scores.png",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the directory `judge` wrote")
    s.add_argument("--compare", metavar="DIR2", help="a second run's directory, shown side by side")
    s.set_defaults(handler=_score)

    r = esub.add_parser(
        "run",
        help="all three stages; rerunning on the same --out resumes and redoes nothing",
    )
    _add_task_options(r, required=True)
    _add_generate_options(r)
    _add_judge_options(r)
    r.add_argument("--compare", metavar="DIR2", help="a second run's directory for the score stage")
    r.set_defaults(handler=_run)
    from medix_r1.bundle import add_bundle_option

    # What the three stages that run a model share: where they write, the progress bar, --bundle.
    for q, out in ((g, "output directory"), (j, "the directory `generate` wrote"), (r, "output directory")):
        q.add_argument("--out", required=True, metavar="DIR", help=out)
        q.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        add_bundle_option(q)


def _say_task(
    task: str, done: str, done_before: int, messages: Sequence[str], *, tail: str = "", lead: str = ""
) -> None:
    """A stage's line for one task (what it did, what was there before) and the first of its problems."""
    note = f" ({done_before} already there)" if done_before else ""
    print(f"medix eval: {task}: {done}{note}{tail}", file=sys.stderr)
    for m in messages[:5]:
        print(f"medix eval:   {lead}{m}", file=sys.stderr)


def _err(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


def _positive(args: argparse.Namespace, *names: str) -> None:
    from medix_r1.errors import UserError

    for n in names:
        v = getattr(args, n, None)
        if v is not None and v < (0 if n == "parse_retries" else 1):
            raise UserError(f"--{n.replace('_', '-')} must be >= {0 if n == 'parse_retries' else 1}, got {v}")


def _generate(args: argparse.Namespace) -> int:
    from medix_r1.errors import BackendError, MissingModelError, UserError
    from medix_r1.eval.generate import ImageNotSupportedError, generate_task, open_policy
    from medix_r1.eval.io import ResumeMismatchError
    from medix_r1.eval.tasks import MissingDatasetError, TaskError, load_samples, resolve_tasks

    _positive(args, "limit", "max_new_tokens", "n_ctx", "n_threads", "concurrency")
    _bundle(args)
    from pathlib import Path

    if args.model and (Path(args.model).expanduser() / "export.json").is_file():
        from medix_r1.export.policy import policy_files  # a `medix export` folder: its GGUF (+ mmproj)

        args.model, mm = policy_files(args.model)
        args.mmproj = args.mmproj or mm
    try:
        specs = resolve_tasks(args.tasks, args.task_file)
        samples = {t.name: load_samples(t, args.data_root, limit=args.limit) for t in specs}
    except MissingDatasetError as e:
        raise UserError(
            f"{_err(e)}\n(--data-root DIR names the folder holding <task>/ directories)"
        ) from None
    except TaskError as e:
        raise UserError(f"{_err(e)} (--task-file YAML defines tasks of your own)") from None
    except ImportError as e:
        raise UserError(f"{e} (install the eval extra: pip install 'medix-r1[eval]')") from None
    try:
        from medix_r1.llm.options import llm_overrides

        opts = llm_overrides(args, prefix="", names=("n_ctx", "n_threads", "n_gpu_layers", "api_key_env"))
        if args.concurrency is not None:
            opts["concurrency"] = args.concurrency
        policy = open_policy(
            args.model,
            url=args.url,
            model_name=args.name,
            mmproj=args.mmproj,
            adapter=args.adapter,
            chat_format=args.chat_format,
            **opts,
        )
    except (MissingModelError, BackendError, ValueError) as e:
        raise UserError(_err(e)) from None
    except ImportError as e:
        raise UserError(f"{e} (install the extras: pip install 'medix-r1[judge,train]')") from None
    # Refuse before any work when a task has images and the model cannot see them.
    for t in specs:
        if any(s.image is not None for s in samples[t.name]) and not policy.supports_images:
            raise UserError(f"task {t.name!r} has images, but {policy.why_no_images}")
    failed = 0
    for t in specs:
        try:
            res = generate_task(
                samples[t.name],
                policy,
                args.out,
                task=t.name,
                max_new_tokens=args.max_new_tokens,
                progress=not args.no_progress,
            )
        except ResumeMismatchError as e:
            raise UserError(f"{_err(e)} (--out DIR)") from None
        except ImageNotSupportedError as e:
            raise UserError(_err(e)) from None
        written = f"{res.generated} answers written"
        _say_task(t.name, written, res.done_before, res.errors, lead="not answered: ")
        failed += res.failed
    if failed:
        print(f"medix eval: {failed} samples could not be answered; rerun to retry them", file=sys.stderr)
        return 1
    return 0


def _judge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medix_r1.cli import UserError
    from medix_r1.errors import BackendError, MissingModelError
    from medix_r1.eval.grading import Grader, judge_task
    from medix_r1.eval.io import ResumeMismatchError
    from medix_r1.llm import BackendConfig, open_backend

    _positive(
        args, "judge_n_threads", "judge_n_ctx", "judge_concurrency", "judge_max_tokens", "parse_retries"
    )
    _bundle(args)
    out = Path(args.out)
    tasks = (
        args.tasks
        or sorted(d.name for d in out.iterdir() if d.is_dir() and (d / "generations.jsonl").exists())
        if out.is_dir()
        else []
    )
    if not tasks:
        raise UserError(f"{out}: no <task>/generations.jsonl; run `medix eval generate --out {out}` first")
    for t in tasks:
        if not (out / t / "generations.jsonl").exists():
            raise UserError(f"{out / t / 'generations.jsonl'}: no answers for task {t!r}; run generate first")
    try:
        model, name = args.judge_model, args.judge_name
        if args.judge_url and model and not model.endswith(".gguf"):
            model, name = None, name or model  # `--judge-url URL --judge NAME` reads naturally too
        if not (model or args.judge_url):
            raise UserError("give --judge-model FILE.gguf or --judge-url URL with --judge-name NAME")
        if args.judge_url and model:
            raise UserError("give either --judge-model FILE.gguf or --judge-url, not both")
        if args.judge_url and not name:
            raise UserError("--judge-url needs --judge-name (the model id on that server)")
        from medix_r1.llm.options import llm_overrides

        opts = llm_overrides(args, prefix="judge")
        opts.update(model=model, url=args.judge_url, name=name)
        cfg = BackendConfig(**opts)
        backend = Grader(open_backend(cfg), mode=args.judge_mode, max_tokens=args.judge_max_tokens)
    except (MissingModelError, BackendError, ValueError) as e:
        raise UserError(_err(e)) from None
    except ImportError as e:
        raise UserError(f"{e} (install the judge extra: pip install 'medix-r1[judge]')") from None
    errors = failed = 0
    for t in tasks:
        try:
            res = judge_task(
                out,
                t,
                backend,
                max_parse_retries=args.parse_retries,
                retry_errors=args.retry_errors,
                progress=not args.no_progress,
            )
        except ResumeMismatchError as e:
            raise UserError(_err(e)) from None
        _say_task(t, f"{res.judged} judged", res.done_before, res.messages, tail=f", {res.errors} errors")
        errors += res.errors
        failed += res.failed
    if errors:
        print(
            f"medix eval: {errors} samples could not be judged (recorded with score null, left out of the "
            "accuracy; --retry-errors judges them again)",
            file=sys.stderr,
        )
    if failed:
        print(f"medix eval: {failed} samples were not judged (judge server failed); rerun", file=sys.stderr)
        return 1
    return 0


def _score(args: argparse.Namespace) -> int:
    from medix_r1.errors import UserError
    from medix_r1.eval.score import render_table, score_dir, write_reports

    try:
        runs = [score_dir(args.out)]
        if args.compare:
            runs.append(score_dir(args.compare))
    except FileNotFoundError as e:
        raise UserError(_err(e)) from None
    if len(runs) == 2 and runs[0][0] == runs[1][0]:  # same model: tell the runs apart by directory
        from pathlib import Path

        runs = [(f"{label} [{Path(d).name}]", s) for (label, s), d in zip(runs, [args.out, args.compare])]
    print(render_table(runs))
    paths = write_reports(args.out, runs)
    print(f"medix eval: wrote {paths['md']}, {paths['csv']}, {paths['png']}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from medix_r1.errors import UserError

    _bundle(args)

    if not (args.judge_model or args.judge_url):
        raise UserError("give --judge FILE.gguf or --judge-url URL --judge-name NAME")
    rc = _generate(args)
    if rc:
        return rc
    args.tasks = [t.name for t in _specs(args)]
    rc = _judge(args)
    if rc:
        return rc
    return _score(args)


def _bundle(args: argparse.Namespace) -> None:
    from medix_r1.bundle import resolve_bundle

    resolve_bundle(args, judge="judge_model", judge_skip="judge_url", policy="model", policy_skip="url")


def _specs(args: argparse.Namespace) -> list:
    from medix_r1.eval.tasks import resolve_tasks

    return resolve_tasks(args.tasks, args.task_file)
