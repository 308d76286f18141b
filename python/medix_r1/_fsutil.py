"""Writing a directory so that readers never see it half-done."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir"]


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh sibling temporary directory; on success it replaces ``out``, on any error it is removed.

    An interrupted conversion or export therefore never leaves a directory that a later run would trust.
    """
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
