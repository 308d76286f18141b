"""Exceptions shared across medix-r1, each carrying what went wrong, where, and how to fix it.

Everything a user can fix derives from :class:`MedixError`; the CLI prints those (and the native
``MedixInputError``) as one line and exits with status 2. Anything else escaping a command is a bug in
medix-r1 and surfaces with its traceback. Callers tell errors apart by type, never by message text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medix_r1._native import MedixInputError

__all__ = [
    "BackendError",
    "ConfigError",
    "DataError",
    "GpuRequiredError",
    "JudgeFailedError",
    "JudgeOutageError",
    "MedixError",
    "MedixInputError",
    "MissingModelError",
    "ResumeMismatchError",
    "RewardComponentError",
    "RewardStepError",
    "UserError",
    "check_model_path",
]


class MedixError(Exception):
    """Base of every error a user can fix; printed without a traceback by the CLI (exit status 2)."""


class UserError(MedixError):
    """A bad command-line option or a combination of them; the message names the flag."""


class ConfigError(MedixError, ValueError):
    """A configuration value is wrong: ``key`` (dotted, e.g. ``lora.enabled``), the ``value`` given and
    what is ``allowed`` (a short description), all in the message too."""

    def __init__(
        self, message: str, *, key: str | None = None, value: Any = None, allowed: str | None = None
    ):
        super().__init__(message)
        self.key = key
        self.value = value
        self.allowed = allowed

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class DataError(MedixError, ValueError):
    """A dataset or input file cannot be read, or has bad rows; ``path`` and ``line`` (1-based) when known."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class MissingModelError(MedixError, FileNotFoundError):
    """A model file or directory that was named explicitly is not there (we never download one)."""


class BackendError(MedixError, RuntimeError):
    """A model backend (llama.cpp, an OpenAI-compatible server) could not answer after its retries."""


class JudgeOutageError(BackendError):
    """The judge stayed unavailable through every retry during training; a resumable checkpoint was
    written first."""


class JudgeFailedError(MedixError, RuntimeError):
    """Too large a share of a batch could not be judged; the message names the judge and the cause."""


class RewardComponentError(MedixError, RuntimeError):
    """A custom reward component (``file.py:function``) could not be loaded, raised, or returned something
    other than one float or None per item; the message names ``file.py:function``."""


class RewardStepError(MedixError, RuntimeError):
    """Scoring a batch failed during training on one or more processes (a custom component raised, the
    embedder failed, ...): every process stops with this same error, which names the failed ``processes``
    (ranks) and their errors, after a resumable checkpoint of the steps done (``step`` of them)."""

    def __init__(self, message: str, *, processes: list[int] | None = None, step: int | None = None):
        super().__init__(message)
        self.processes = list(processes or [])
        self.step = step

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class ResumeMismatchError(MedixError, ValueError):
    """An existing output does not belong to this input/configuration; the message says how to start
    over."""


class GpuRequiredError(MedixError, RuntimeError):
    """The configured run needs an NVIDIA GPU (e.g. Unsloth, 4-bit QLoRA) and none is visible."""


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    e = cls.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


def check_model_path(path: str | Path, what: str, how: str, *, directory: bool = False) -> Path:
    """Return ``path`` resolved, or raise MissingModelError naming ``what`` it is for and ``how`` to get
    it."""
    p = Path(path).expanduser()
    ok = p.is_dir() if directory else p.is_file()
    if not ok:
        kind = "directory" if directory else "file"
        raise MissingModelError(f"{what}: no such {kind}: {p}. {how} (medix-r1 never downloads models).")
    return p.resolve()
