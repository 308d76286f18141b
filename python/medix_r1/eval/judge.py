"""Former name of :mod:`medix_r1.eval.grading`, kept so that outside imports keep working."""

from __future__ import annotations

from medix_r1.eval import grading as _grading
from medix_r1.eval.grading import *  # noqa: F403
from medix_r1.eval.grading import _judgement_row  # noqa: F401

__all__ = _grading.__all__
