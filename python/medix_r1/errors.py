"""Exceptions shared across medix-r1, each carrying what went wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path

from medix_r1._native import MedixInputError

__all__ = ["BackendError", "JudgeFailedError", "MedixInputError", "MissingModelError", "check_model_path"]


class MissingModelError(FileNotFoundError):
    """A model file or directory that was named explicitly is not there (we never download one)."""


class BackendError(RuntimeError):
    """A model backend (llama.cpp, an OpenAI-compatible server) could not answer after its retries."""


class JudgeFailedError(RuntimeError):
    """Too large a share of a batch could not be judged; the message names the judge and the cause."""


def check_model_path(path: str | Path, what: str, how: str, *, directory: bool = False) -> Path:
    """Return ``path`` resolved, or raise MissingModelError naming ``what`` it is for and ``how`` to get
    it."""
    p = Path(path).expanduser()
    ok = p.is_dir() if directory else p.is_file()
    if not ok:
        kind = "directory" if directory else "file"
        raise MissingModelError(f"{what}: no such {kind}: {p}. {how} (medix-r1 never downloads models).")
    return p.resolve()
