"""`medix bundle`: make an offline bundle (models, wheels, installer, manifest); verify it after transfer."""

from __future__ import annotations

import argparse

from medix_r1.commands import command_group


def register(sub: argparse._SubParsersAction) -> None:
    bsub = command_group(
        sub, "bundle", "carry models and wheels to a machine without network (create, verify)"
    )
    c = bsub.add_parser(
        "create",
        help="write a folder with the models, a wheelhouse, install.sh and medix-bundle.json",
        description="On a connected machine: copy the models (a Hugging Face embedder is exported to ONNX), "
        "collect medix-r1 and every dependency of --extras as wheels for the target Python/platform "
        "(llama-cpp-python built once with portable flags), write install.sh, README.md and the manifest of "
        "hashes. Rerunning after an interruption resumes.",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to write (or finish)")
    c.add_argument("--judge", metavar="F.gguf", help="the judge GGUF (needs a chat template)")
    c.add_argument("--embed", metavar="DIR", help="ONNX embedder dir, or a Hugging Face checkpoint to export")
    c.add_argument(
        "--policy",
        metavar="PATH",
        help="the policy: a GGUF, a checkpoint directory or a `medix export` folder",
    )
    c.add_argument(
        "--extras",
        default="judge,embed",
        metavar="LIST",
        help="medix-r1 extras to carry, comma-separated: judge,embed,export,train,eval,gpu "
        "(default judge,embed)",
    )
    c.add_argument("--python", metavar="X.Y", help="target Python (default: this one)")
    c.add_argument(
        "--platform",
        action="append",
        metavar="TAG",
        help="target wheel platform, e.g. manylinux2014_x86_64 (repeatable; default: this machine)",
    )
    c.add_argument(
        "--llama-cmake-args",
        metavar="ARGS",
        help="CMAKE_ARGS for the llama-cpp-python wheel (default: portable x86-64 with AVX2, no AVX-512/AMX: "
        '"-DGGML_NATIVE=OFF -DGGML_AVX2=ON ... -DGGML_AMX_INT8=OFF", see bundle/wheels.py; '
        'e.g. "-DGGML_CUDA=on")',
    )
    c.add_argument("--llama-wheel", metavar="FILE", help="a llama-cpp-python wheel built elsewhere")
    c.add_argument(
        "--llama-sdist",
        metavar="FILE",
        help="the llama-cpp-python source distribution to carry in tools/ (llama.cpp's GGUF converters for "
        "medix export; when the export extra is asked for and this is not given: fetched from a --find-links "
        "folder or the package index ($PIP_INDEX_URL, else PyPI), its SHA-256 checked)",
    )
    c.add_argument("--medix-wheel", metavar="FILE", help="medix-r1's wheel (default: built with maturin)")
    c.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="extra wheel folder for pip (repeatable)",
    )
    c.add_argument("--no-index", action="store_true", help="pip: use only --find-links, no package index")
    c.add_argument(
        "--from-env",
        action="store_true",
        help="re-pack the wheels from this environment's installed packages instead of pip download",
    )
    c.set_defaults(handler=_create)

    v = bsub.add_parser(
        "verify",
        help="check every file of a bundle against medix-bundle.json (exit 0 only when all match)",
    )
    v.add_argument("dir", metavar="DIR", help="the bundle folder")
    v.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    v.add_argument(
        "--allow-extra",
        action="store_true",
        help="files the manifest does not list are reported but do not fail the check (install.sh never "
        "installs them)",
    )
    v.set_defaults(handler=_verify)


def _create(args: argparse.Namespace) -> int:
    from medix_r1.bundle.create import create_bundle

    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    create_bundle(
        args.out,
        judge=args.judge,
        embed=args.embed,
        policy=args.policy,
        extras=extras,
        python=args.python,
        platforms=args.platform,
        llama_cmake_args=args.llama_cmake_args,
        medix_wheel=args.medix_wheel,
        llama_wheel=args.llama_wheel,
        find_links=args.find_links,
        no_index=args.no_index,
        from_env=args.from_env,
        llama_sdist=args.llama_sdist,
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from medix_r1.bundle import verify_bundle
    from medix_r1.bundle.standalone import report

    res = verify_bundle(args.dir, progress=not args.no_progress, allow_extra=args.allow_extra)
    ok = report(
        {
            "unsafe": res.unsafe,
            "missing": res.missing,
            "altered": res.altered,
            "extra": res.extra,
            "ok": ["."] * res.checked,
        },
        allow_extra=args.allow_extra,
        prog="medix bundle verify",
    )
    if not ok:
        return 1
    print(f"medix bundle verify: all {res.checked} files match ({res.bytes / 2**20:.0f} MiB)")
    return 0
