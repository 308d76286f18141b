"""Writing a directory so that readers never see it half-done; a file's SHA-256 read in chunks."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "file_sha256"]


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


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` (hex), read 1 MiB at a time. (``bundle/standalone.py`` keeps its
    own copy: it runs before medix-r1 is installed.)"""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
