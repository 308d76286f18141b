"""How well a judge (and an embedder) agrees with labelled answer pairs, before it is trusted as a reward.

A pair is a predicted answer, a ground truth and a human label (``match``: true/false), in JSONL with optional
``category`` and ``question``. The report gives accuracy, balanced accuracy, the AUROC of P(YES) where the
judge reports one, the YES rate on mismatches, how often prompt-injection suffixes appended to wrong answers
flip a NO into a YES, unscorable pairs and the time per pair, and a pass/fail verdict against thresholds; for
an embedder, the AUROC of the cosine and the accuracy at its threshold. ``validation_warning`` turns a report
(or its absence) into the one-line warning ``medix train`` and ``medix demo`` print.

The command itself is :mod:`medix_r1.commands.judge`; here: :mod:`.pairs` (loading), :mod:`.metrics`,
:mod:`.identity` (which judge a report is for, and the warning), :mod:`.run` (the run and its verdict) and
:mod:`.report` (the files).
"""

from __future__ import annotations

from medix_r1.judge.validate.identity import judge_identity, validation_warning
from medix_r1.judge.validate.metrics import auroc
from medix_r1.judge.validate.pairs import DEFAULT_PAIRS, Pair, load_pairs
from medix_r1.judge.validate.report import write_report
from medix_r1.judge.validate.run import INJECTIONS, Thresholds, run_validation

__all__ = [
    "DEFAULT_PAIRS",
    "INJECTIONS",
    "Pair",
    "Thresholds",
    "auroc",
    "judge_identity",
    "load_pairs",
    "run_validation",
    "validation_warning",
    "write_report",
]
