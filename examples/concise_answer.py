"""A custom MediX-R1 reward component: prefer short final answers.

Use it with nothing but a config line (see README, "Custom reward components"):

    extra: [{function: examples/concise_answer.py:concise_answer, weight: 0.2}]

in a reward config (`medix reward score --config F.yaml`), or under `reward:` in a training run file. Its
score is the column / metric `concise_answer`, and 0.2 of `overall` wherever it applies.
"""

from __future__ import annotations

import re

MAX_WORDS = 8
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def concise_answer(completions: list[str], ground_truths: list[str], **columns: object) -> list[float | None]:
    """1.0 for a final answer of at most MAX_WORDS words, MAX_WORDS / n for a longer one; None (not
    applicable) for a completion without an <answer> block, which the format reward already scores."""
    out: list[float | None] = []
    for text in completions:
        m = _ANSWER.search(text)
        if m is None:
            out.append(None)
            continue
        n = len(m.group(1).split())
        out.append(1.0 if n <= MAX_WORDS else MAX_WORDS / n)
    return out
