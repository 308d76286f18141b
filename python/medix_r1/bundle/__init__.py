"""Offline bundles: one folder with the models, a wheelhouse, an installer and a manifest of hashes, made on a
connected machine and used on one without network (`medix bundle create / verify`, `--bundle DIR`).

Commands take ``--bundle DIR`` (or ``MEDIX_BUNDLE``) through :func:`add_bundle_option` and fill the model
paths the user did not give with :func:`resolve_bundle`; nothing here imports a heavy library.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from medix_r1.bundle.manifest import MANIFEST, BundleError, read_manifest, verify_bundle
from medix_r1.bundle.standalone import path_problem

__all__ = [
    "ENV",
    "MANIFEST",
    "BundleError",
    "add_bundle_option",
    "bundle_models",
    "read_manifest",
    "resolve_bundle",
    "verify_bundle",
]

ENV = "MEDIX_BUNDLE"
ROLES = ("judge", "embed", "policy")


def add_bundle_option(parser: argparse.ArgumentParser | Any) -> None:
    """Register ``--bundle DIR`` (default: ``$MEDIX_BUNDLE``) on a command's parser."""
    parser.add_argument(
        "--bundle",
        metavar="DIR",
        default=None,
        help=f"an offline bundle (`medix bundle create`): its judge/embedder/policy fill the model options "
        f"not given (default ${ENV})",
    )


def bundle_models(bundle: str | Path, *, must_exist: bool = True) -> dict[str, Path]:
    """role (judge, embed, policy) -> absolute path of that model in ``bundle``; each must exist (unless
    ``must_exist`` is false: `medix doctor` reports missing files itself)."""
    root = Path(bundle).expanduser().resolve()
    data = read_manifest(root)
    out: dict[str, Path] = {}
    for role, m in (data.get("models") or {}).items():
        rel = m.get("path") if isinstance(m, dict) else None
        if not isinstance(rel, str) or not rel:
            raise BundleError(f"{root / MANIFEST}: the {role} model has no path; copy the bundle again")
        if why := path_problem(root, rel):
            raise BundleError(
                f"{root / MANIFEST}: the {role} model's path {rel!r}: {why}; copy the bundle again"
            )
        p = root / rel
        if must_exist and not p.exists():
            raise BundleError(
                f"{p}: the bundle's {role} model is missing; copy it again from the source bundle and check "
                f"with `medix bundle verify {root}`"
            )
        out[role] = p
    return out


def resolve_bundle(args: argparse.Namespace, **attrs: str) -> dict[str, Path] | None:
    """Fill ``args`` from the bundle in ``args.bundle`` or ``$MEDIX_BUNDLE``.

    ``attrs`` maps a role to the ``args`` attribute it fills, e.g. ``judge="judge_model"``; an attribute the
    user already set is left alone, and so is a role whose ``skip`` attribute (``judge_url`` for a judge
    server) is set: pass it as ``attrs["judge_skip"] = "judge_url"``. Returns the bundle's models, or None
    when no bundle is named.
    """
    bundle = getattr(args, "bundle", None) or os.environ.get(ENV) or None
    if not bundle:
        return None
    models = bundle_models(bundle)
    for role in ROLES:
        attr = attrs.get(role)
        if not attr or role not in models or getattr(args, attr, None) is not None:
            continue
        skip = attrs.get(f"{role}_skip")
        if skip and getattr(args, skip, None):
            continue
        setattr(args, attr, str(models[role]))
    return models
