"""Run `medix train` under torchrun with recorders on the trainer, for
tests/test_multiprocess.py and benchmarks/bench_multiprocess.py (not a test module itself).

    torchrun --standalone --nproc-per-node 2 tests/mp_driver.py TRACE_DIR [--rig-dapo]
        [--per-device-batch N] [--resume] [--count-bytes] [--fail WHAT:RANK:CALL] -- --section.key=value ...

Every process writes ``TRACE_DIR/rank<r>.json`` after each step: per scoring round its own rewards, the
gathered rewards and the advantages it kept (with its completions and ground truths, so a test can
re-score them); per step the dynamic-sampling decisions, the advantages of the batch it trained on, a
timestamp and (with ``--count-bytes``) the bytes its collective calls received.

``--rig-dapo`` overwrites the composite reward's values on the first three scoring calls of each process (the
real reward still runs): process 0 sees a group with variance, process 1 a zero-variance group in the first
two rounds and variance in the third, so only process 1 needs refills and exactly two refill rounds fill it.

``--fail embed:1:2`` makes the embedding accuracy raise (a RuntimeError, as an ONNX failure would) on
process 1 from its 2nd scoring call on; ``--fail judge:1:2`` makes the judge fail there (JudgeFailedError,
an outage) from that call on. A run that raises records ``error`` (type and message) in the trace and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def _install_byte_counter(counter: dict[str, int]) -> None:
    import torch.distributed as dist

    def wrap(name: str, size_of: Any) -> None:
        real = getattr(dist, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counter[name] = counter.get(name, 0) + int(size_of(*args, **kwargs))
            return real(*args, **kwargs)

        setattr(dist, name, counted)

    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    wrap("all_gather_into_tensor", lambda out, *a, **k: nbytes(out))
    wrap("all_gather", lambda outs, *a, **k: sum(nbytes(t) for t in outs))
    wrap("all_reduce", lambda t, *a, **k: nbytes(t))
    wrap("broadcast", lambda t, *a, **k: nbytes(t))

    real_obj = dist.all_gather_object

    def all_gather_object(out: list, obj: Any, *a: Any, **k: Any) -> Any:
        import pickle

        counter["all_gather_object"] = counter.get("all_gather_object", 0) + len(pickle.dumps(obj)) * len(out)
        return real_obj(out, obj, *a, **k)

    dist.all_gather_object = all_gather_object


def _rig_failure(what: str, from_call: int) -> None:
    """This process's embedder or judge fails from its ``from_call``-th scoring call (one per batch) on. The
    failure is raised where the composite scores a batch, not inside the embedder or judge call: those are
    skipped for a batch whose answers are all decided without a model (malformed), as a tiny policy's often
    are."""
    from medix_r1.errors import JudgeFailedError
    from medix_r1.rewards.composite import CompositeReward

    real = CompositeReward.score
    calls = [0]

    def failing(self: Any, *args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] >= from_call:
            if what == "embed":
                raise RuntimeError("rigged: the ONNX session failed")
            raise JudgeFailedError("judge rigged: 2 of 2 answers in this batch could not be judged")
        return real(self, *args, **kw)

    CompositeReward.score = failing  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_dir")
    ap.add_argument("--rig-dapo", action="store_true")
    ap.add_argument("--per-device-batch", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--count-bytes", action="store_true")
    ap.add_argument("--fail", default=None)
    import sys

    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    overrides = argv[cut + 1 :]
    rank = int(os.environ.get("RANK", "0"))
    out_path = Path(a.trace_dir) / f"rank{rank}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(1)
    counter: dict[str, int] = {}
    if a.count_bytes:
        _install_byte_counter(counter)

    from medix_r1.rewards.composite import CompositeReward
    from medix_r1.train.grpo import MedixGRPOTrainer
    from medix_r1.train.monitors import ground_truths

    trace: dict[str, Any] = {"rank": rank, "rounds": [], "steps": []}

    real_score = MedixGRPOTrainer._score_round

    def score_round(self: Any, inputs: list[dict]) -> Any:
        out, stats = real_score(self, inputs)
        last = self._medix_last
        trace["rounds"].append(
            {
                "step": self.state.global_step,
                "local_rewards": self._weighted(last["local_rewards_per_func"]).tolist(),
                "gathered_rewards": self._weighted(last["rewards_per_func"]).tolist(),
                "advantages": out["advantages"].tolist(),
                "texts": last["texts"],
                "truths": ground_truths(inputs),
                "group_size": self.num_generations,
                "scale": self.scale_rewards,
            }
        )
        return out, stats

    real_gen = MedixGRPOTrainer._generate_and_score_completions

    def generate(self: Any, inputs: list[dict]) -> Any:
        out = real_gen(self, inputs)
        d = self._medix_dynamic_last
        trace["steps"].append(
            {
                "step": self.state.global_step,
                "time": time.time(),
                "advantages": out["advantages"].tolist(),
                "rounds": d.get("rounds"),
                "masks": [m.tolist() for m in d.get("masks", [])],
                "short": None if "short" not in d else [int(x) for x in d["short"]],
                "bytes": dict(counter),
            }
        )
        self._medix_dynamic_last = {}
        out_path.write_text(json.dumps(trace))
        return out

    MedixGRPOTrainer._score_round = score_round  # type: ignore[method-assign]
    MedixGRPOTrainer._generate_and_score_completions = generate  # type: ignore[method-assign]

    if a.rig_dapo:
        calls = [0]
        real_call = CompositeReward.__call__

        def rigged(self: Any, prompts: Any = None, completions: Any = (), **kw: Any) -> Any:
            values = real_call(self, prompts, completions, **kw)
            i = calls[0]
            calls[0] += 1
            if i > 2:
                return values
            alternating = [float(j % 2) for j in range(len(values))]
            if rank == 0:
                return alternating if i == 0 else values
            return [1.0] * len(values) if i < 2 else alternating

        CompositeReward.__call__ = rigged  # type: ignore[method-assign]

    if a.fail:
        what, fail_rank, from_call = a.fail.split(":")
        if rank == int(fail_rank):
            _rig_failure(what, int(from_call))

    from medix_r1.train.config import load_config
    from medix_r1.train.trainer import run_training

    cfg = load_config(None, overrides)
    targs = {"per_device_train_batch_size": a.per_device_batch} if a.per_device_batch else None
    t0 = time.time()
    try:
        res = run_training(cfg, resume=a.resume, echo=None, trainer_args=targs)
    except Exception as e:
        trace["error"] = {"type": type(e).__name__, "message": str(e)}
        out_path.write_text(json.dumps(trace))
        sys.exit(2)
    trace["done"] = {"steps": res["steps"], "seconds": time.time() - t0, "bytes": dict(counter)}
    out_path.write_text(json.dumps(trace))


if __name__ == "__main__":
    main()
