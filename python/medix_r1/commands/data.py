"""`medix data check PATH`: find what would stop training on a local dataset, row by row."""

from __future__ import annotations

import argparse

from medix_r1.commands import command_group


def register(sub: argparse._SubParsersAction) -> None:
    dsub = command_group(sub, "data", "check local training data (authors' schema: image, problem, solution)")
    c = dsub.add_parser(
        "check",
        help="report missing fields, unknown tags, empty answers and unreadable images, with row numbers",
    )
    c.add_argument(
        "path", help="JSONL / JSON / Parquet file, image folder with metadata.jsonl, or save_to_disk dir"
    )
    c.add_argument("--no-images", action="store_true", help="skip opening the images (faster)")
    c.add_argument("--limit", type=int, default=50, help="print at most this many problems (default 50)")
    c.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from medix_r1.cli import UserError
    from medix_r1.train.data import DataError, check_rows, load_rows

    try:
        rows, base = load_rows(args.path)
    except DataError as e:
        raise UserError(str(e)) from None
    problems = check_rows(rows, base, images=not args.no_images)
    n_img = sum(
        len(r.get("image") or []) if isinstance(r.get("image"), list) else 1 for r in rows if r.get("image")
    )
    if not problems:
        print(f"{args.path}: {len(rows)} rows, {n_img} images: OK")
        return 0
    for p in problems[: args.limit]:
        print(p)
    if len(problems) > args.limit:
        print(f"... and {len(problems) - args.limit} more")
    bad = len({p.row for p in problems})
    print(
        f"{args.path}: {len(rows)} rows, {bad} bad ({len(problems)} problems). Training refuses this "
        "data unless "
        "--data.skip_bad=true (then these rows are skipped)."
    )
    return 1
