"""Coverage-guided fuzzing of the native module across the FFI boundary (atheris).

Every call must either return a result of the right shape or raise a Python exception that names the
argument; a Rust panic would surface as `pyo3_runtime.PanicException` and fails the run.
Run: pip install atheris && python fuzz/fuzz_native.py -max_total_time=120
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np
    from medix_r1 import MedixInputError
    from medix_r1.advantages import group_advantages, group_stats
    from medix_r1.rewards import analyze, is_invalid_answers, parse_ground_truths

PIECES = [
    "<think>",
    "</think>",
    "<thinking>",
    "</thinking>",
    "<answer>",
    "</answer>",
    "<X_RAY>",
    "< ",
    "/",
    ">",
]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    texts = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        parts = [
            PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)]
            if fdp.ConsumeBool()
            else fdp.ConsumeUnicodeNoSurrogates(8)
            for _ in range(fdp.ConsumeIntInRange(0, 8))
        ]
        texts.append("".join(parts))
    for mode in ("strict", "reference"):
        s = analyze(texts, texts, mode=mode)
        assert len(s.answers) == len(texts) == s.format.shape[0]
        is_invalid_answers(s.answers, mode)
    parse_ground_truths(texts)
    n = fdp.ConsumeIntInRange(0, 16)
    rewards = np.array([fdp.ConsumeFloat() for _ in range(n)], dtype=np.float64)
    g = fdp.ConsumeIntInRange(1, 5)
    try:
        group_advantages(rewards, group_size=g, scale=["group", "batch", "none"][fdp.ConsumeIntInRange(0, 2)])
        group_stats(rewards, group_ids=[fdp.ConsumeIntInRange(0, 3) for _ in range(n)])
    except MedixInputError:
        pass  # not divisible / infinite reward: a named, expected error


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
