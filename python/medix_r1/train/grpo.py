"""TRL's GRPOTrainer with MediX-R1's advantages, DAPO dynamic sampling, judge-outage handling and monitors.

Overrides only two of TRL's methods: ``_calculate_rewards`` (retry on a judge outage in step on every
process, keep the per-component scores) and ``_generate_and_score_completions`` (replace the advantages with
the Rust group advantages, drop zero-variance groups and refill the batch for DAPO, log the monitors).
Imported only after the backend is set up, because Unsloth must be imported before TRL.

Several processes (torchrun on the CPU, ``accelerate launch`` on GPUs): every process generates and scores its
own slice of the generation batch; the rewards are gathered, the advantages computed on the global batch by
the same code as with one process, and each process keeps its slice. Everything that decides how many
collective calls come next (a judge retry, DAPO's drops and refill rounds) is decided from gathered data,
identical on every process, so the processes stay in step. Monitors and reward components are logged over the
global batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import trl
import trl.trainer.grpo_trainer as _trl_grpo
from trl import GRPOTrainer

from medix_r1 import errors
from medix_r1.advantages import GroupStats, group_stats
from medix_r1.errors import JudgeFailedError

if TYPE_CHECKING:
    from medix_r1.train.config import TrainerKnobs
from medix_r1.train.monitors import (
    COMPLETIONS_FILE,
    COMPONENTS,
    completion_text,
    component_matrix,
    component_means,
    ground_truths,
    monitor_values,
    pack_rows,
    reward_columns,
    unpack_rows,
)

log = logging.getLogger("medix_r1.train")

# The two methods overridden here are private to TRL; these are the releases they were read from and tested
# on.
TRL_MIN, TRL_MAX = (1, 10, 0), (1, 15, 0)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def check_trl_version(version: str | None = None) -> None:
    v = version or trl.__version__
    if not (TRL_MIN <= _version_tuple(v) <= TRL_MAX):
        raise ImportError(
            f"medix-r1's trainer supports trl {'.'.join(map(str, TRL_MIN))} to "
            f"{'.'.join(map(str, TRL_MAX))}, "
            f"found trl {v}; install a supported one: pip install 'trl>=1.10,<=1.15.0'"
        )
    for name in ("_calculate_rewards", "_generate_and_score_completions"):
        if not hasattr(GRPOTrainer, name):
            raise ImportError(f"trl {v}: GRPOTrainer.{name} is missing; use trl>=1.10,<=1.15.0")
    if not callable(getattr(_trl_grpo, "gather", None)):
        raise ImportError(f"trl {v}: trl.trainer.grpo_trainer.gather is missing; use trl>=1.10,<=1.15.0")


check_trl_version()


class TorchChunkedLogProb:
    """Plain-PyTorch stand-in for TRL's Triton ``ChunkedLogProbFunction`` (same ``apply`` signature and
    outputs).

    TRL 1.15 computes the per-token log-probabilities with a Triton kernel only, which has no CPU driver; on a
    machine without CUDA this materialises the logits of the scored tokens instead (small models, short
    completions: a few hundred MB at most) and lets autograd do the backward.
    """

    @staticmethod
    def apply(
        hidden,
        weight,
        bias,
        targets,
        temperature,
        chunk_size,
        final_logit_softcapping=None,
        logit_scale=1.0,
        outputs=("entropy",),
    ):
        logits = hidden.float() @ weight.float().t()
        if bias is not None:
            logits = logits + bias.float()
        logits = logits * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1)
        logprobs = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
        sq = torch.logsumexp(2 * logp, dim=-1).detach() if "log_sum_sq_probs" in outputs else None
        mean_logits = logits.mean(-1).detach() if "mean_logits" in outputs else None
        is_top1 = None
        if "is_top1" in outputs:
            is_top1 = (logits.argmax(-1) == targets) & (
                logits.max(-1).values == logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
            )
        return logprobs, entropy, sq, mean_logits, is_top1


TRL_CHUNKED_LOGPROB: Any = None  # TRL's own kernel class, kept when install_cpu_logprob replaces it


def install_cpu_logprob() -> bool:
    """Route TRL's fused LM head through :class:`TorchChunkedLogProb` without CUDA; True if installed
    (TRL's own class is kept in ``TRL_CHUNKED_LOGPROB``)."""
    global TRL_CHUNKED_LOGPROB
    import trl.trainer.utils as tu

    if torch.cuda.is_available():
        return False
    current = getattr(tu, "_ChunkedLogProbFunction", None)
    if current is not TorchChunkedLogProb:
        TRL_CHUNKED_LOGPROB = current
    setattr(tu, "_ChunkedLogProbFunction", TorchChunkedLogProb)  # noqa: B010
    return True


JudgeOutageError = errors.JudgeOutageError  # one type for the whole package (medix_r1.errors)


def _resume_command() -> str:
    """This run's own ``medix train`` command with ``--resume``, or the general form."""
    import shlex
    import sys

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == "train" and os.path.basename(argv[0]) in ("medix", "cli.py"):
        return "medix " + shlex.join([*argv[1:], *([] if "--resume" in argv else ["--resume"])])
    return "medix train --config RUN.yaml --resume"


@contextlib.contextmanager
def _local_rewards() -> Iterator[None]:
    """Make TRL's ``_calculate_rewards`` return this process's rows instead of gathering them.

    TRL gathers the rewards at the end of that method; a process whose judge failed raises before it, while
    the others would wait in the gather for ever. Keeping the rewards local lets every process first agree
    on whether any judge failed, and only then gather.
    """
    real = _trl_grpo.gather
    setattr(_trl_grpo, "gather", lambda tensor: tensor)  # noqa: B010
    try:
        yield
    finally:
        setattr(_trl_grpo, "gather", real)  # noqa: B010


# Output keys whose first dimension is one row per completion, and how to pad them when batches are merged.
_LEFT_PAD = {"prompt_ids", "prompt_mask"}
_ROW_KEYS_PAD = {
    "prompt_ids": "pad",
    "prompt_mask": 0,
    "completion_ids": "pad",
    "completion_mask": 0,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 0.0,
    "tool_mask": 1,
}


_OK, _RETRY, _FATAL = 0, 1, 2  # how a process's reward step went (gathered before the rewards)
_MSG_CHARS = 2000  # a failed process's message is quoted up to this length


def _cut(msg: str) -> str:
    return msg if len(msg) <= _MSG_CHARS else msg[:_MSG_CHARS] + f"... ({len(msg)} chars)"


def local_slice(process_index: int, n_local: int) -> slice:
    """The rows of the gathered batch that belong to one process (TRL's layout: rank order, equal sizes)."""
    return slice(process_index * n_local, (process_index + 1) * n_local)


def kept_rows(stats: GroupStats, min_mean: float, max_mean: float) -> np.ndarray:
    """Per row of the batch, True where its group has a learning signal: not degenerate (variance > 0 over
    >= 2 scorable rewards) and a mean inside [min_mean, max_mean]."""
    ok = ~stats.degenerate
    ok &= (stats.mean >= min_mean) & (stats.mean <= max_mean)
    return np.asarray(ok[stats.group_index], dtype=bool)


def refill_plan(
    masks: list[np.ndarray], n_processes: int, n_local: int
) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Which rows each process takes from each round of DAPO's dynamic sampling.

    ``masks[r]`` is the kept-row mask of round ``r`` over the gathered batch. Each process fills its
    ``n_local`` rows from its own rows, in round order (rows never move between processes); returns, per
    process, the local row indices taken from each round, and how many rows each process is still short.
    The same input gives the same plan on every process.
    """
    take: list[list[np.ndarray]] = [[] for _ in range(n_processes)]
    short = np.full(n_processes, n_local, dtype=np.int64)
    for mask in masks:
        for p in range(n_processes):
            rows = np.flatnonzero(mask[local_slice(p, n_local)])[: short[p]]
            take[p].append(rows)
            short[p] -= len(rows)
    return take, short


class MedixGRPOTrainer(GRPOTrainer):
    def __init__(
        self,
        *args: Any,
        medix: TrainerKnobs | None = None,
        on_batch: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``medix``: the knobs beyond GRPOConfig, typed and made from the run's config (default: the
        config's defaults); ``on_batch``: optional console output, called with each batch's scores."""
        from medix_r1.train.config import TrainerKnobs

        install_cpu_logprob()
        super().__init__(*args, **kwargs)
        m = medix if medix is not None else TrainerKnobs.from_config()
        self.medix_dynamic = m.dynamic_sampling
        self.medix_min_mean = m.dynamic_min_mean
        self.medix_max_mean = m.dynamic_max_mean
        self.medix_max_rounds = m.dynamic_max_rounds
        self.medix_judge_retries = m.judge_retries
        self.medix_retry_wait = m.judge_retry_wait
        self.medix_log_completions = m.log_completions
        self.medix_print = on_batch
        self._medix_last: dict[str, Any] = {}
        self._medix_warned_refill = False
        self._medix_dynamic_last: dict[str, Any] = {}  # the last step's dynamic-sampling decisions
        self._medix_round_no = 0  # DAPO: 0 for a step's first scoring round, then each refill round's number

    def _mode(self) -> str:
        return "train" if getattr(self.model, "training", False) else "eval"

    # -- resume
    # ----------------------------------------------------------------------------------------------------
    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """transformers maps the optimizer state to ``args.device`` when several processes train, which on
        the CPU is ``cpu:<rank>``, a location ``torch.load`` cannot restore to; load it to ``cpu`` instead."""
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            super()._load_optimizer_and_scheduler(checkpoint)
            return
        real = torch.load

        def load(*args: Any, **kwargs: Any) -> Any:
            if str(kwargs.get("map_location", "")).startswith("cpu"):
                kwargs["map_location"] = "cpu"
            return real(*args, **kwargs)

        setattr(torch, "load", load)  # noqa: B010
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            setattr(torch, "load", real)  # noqa: B010

    # -- collectives
    # ---------------------------------------------------------------------------------------------
    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return t
        return self.accelerator.gather(t.to(self.accelerator.device)).cpu()

    def _any_process(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any of them (one tiny all-gather)."""
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self._gather(torch.tensor([int(flag)], dtype=torch.int64)).any())

    # -- rewards
    # -------------------------------------------------------------------------------------------------
    def _statuses(self, code: int, extra: int = 0) -> list[tuple[int, int]]:
        """``(code, extra)`` of every process, in rank order (one tiny all-gather): each process learns how
        the others' reward step went before anything else is gathered."""
        if self.accelerator.num_processes == 1:
            return [(code, extra)]
        g = self._gather(torch.tensor([[code, extra]], dtype=torch.int64))
        return [(int(a), int(b)) for a, b in g.tolist()]

    def _messages(self, msg: str) -> list[str]:
        """Every process's ``msg``, in rank order (only on the failure path: an object all-gather)."""
        if self.accelerator.num_processes == 1:
            return [msg]
        import torch.distributed as dist

        out: list[Any] = [None] * self.accelerator.num_processes
        dist.all_gather_object(out, msg)
        return [str(m) for m in out]

    def _local_reward_rows(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        """This process's rewards and per-component rows, computed before any collective call: whatever
        raises here is reported to every process instead of leaving them waiting in a gather."""
        with _local_rewards():
            local = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        texts = [completion_text(c) for c in completions]
        truths = ground_truths(inputs)
        local_cpu = local.detach().cpu()
        comps, answers = component_matrix(
            self.reward_funcs,
            texts,
            truths,
            local_cpu.double().numpy(),
            self._weighted(local_cpu).double().numpy(),
        )
        lengths = [len(ids) for ids in completion_ids_list]
        keys = [str(x.get("prompt")) for x in inputs]
        packed = torch.from_numpy(pack_rows(comps, lengths, answers, keys))
        return local, local_cpu, texts, truths, answers, packed

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        """The rewards of the gathered batch. A judge failure (``JudgeFailedError``) on any process is
        retried by every process in step, then stops the run with a checkpoint; any other error on any
        process (a custom component that raises, the embedder failing) stops every process at once with
        one error naming the process and the cause, after a checkpoint: no process is left waiting in the
        gather, and every process reports the same error."""
        attempt = 0
        while True:
            failure: BaseException | None = None
            code = _OK
            result: Any = None
            try:
                result = self._local_reward_rows(inputs, prompts, completions, completion_ids_list)
            except JudgeFailedError as e:
                failure, code = e, _RETRY
            except Exception as e:
                failure, code = e, _FATAL
            statuses = self._statuses(code, int(self._checkpoint_exists()))
            codes = [c for c, _ in statuses]
            if all(c == _OK for c in codes):
                break
            what = self._failures(codes, failure)
            if _FATAL in codes:
                self._stop_together(codes, what, failure, saved=bool(statuses[0][1]))
            if attempt >= self.medix_judge_retries:
                where = self._checkpoint_path() if statuses[0][1] else self._save_outage_checkpoint()
                raise JudgeOutageError(
                    f"the judge failed {attempt + 1} times in a row at step "
                    f"{self.state.global_step}: {what}. "
                    f"A checkpoint was written to {where}; fix the judge and run the same command "
                    f"with --resume ({_resume_command()})."
                ) from failure
            wait = self.medix_retry_wait * (2**attempt)
            log.warning(
                "judge outage (%s); retry %d/%d in %.0fs", what, attempt + 1, self.medix_judge_retries, wait
            )
            time.sleep(wait)
            attempt += 1
        local, local_cpu, texts, truths, answers, packed = result
        rewards_per_func = self._gather(local_cpu).to(local.device)
        self._medix_last = {
            "rewards_per_func": rewards_per_func.detach().cpu(),
            "local_rewards_per_func": local_cpu,
            "texts": texts,
            "truths": truths,
            "answers": answers,
            "columns": reward_columns(self.reward_funcs),
            "rows": self._gather(packed).numpy(),
        }
        return rewards_per_func

    def _failures(self, codes: list[int], failure: BaseException | None) -> str:
        """What failed, the same text on every process: each failed process (with several) and its error.
        For the worst kind of failure only (any fatal error, else the judge failures)."""
        mine = ""
        if failure is not None:
            medix = isinstance(failure, errors.MedixError)
            mine = str(failure) if medix else f"{type(failure).__name__}: {failure}"
            if not medix:  # a bug: its traceback, from the process it hit
                log.error(
                    "the reward step failed on process %d", self.accelerator.process_index, exc_info=failure
                )
        msgs = self._messages(mine)
        n = self.accelerator.num_processes
        worst = _FATAL if _FATAL in codes else _RETRY
        return "; ".join(
            (f"process {r} of {n}: " if n > 1 else "") + _cut(msgs[r])
            for r, c in enumerate(codes)
            if c == worst
        )

    def _stop_together(
        self, codes: list[int], what: str, failure: BaseException | None, *, saved: bool
    ) -> None:
        """Every process: raise the same RewardStepError naming each failed process and its error, after a
        checkpoint of the steps done (unless one is already written for this step, or none is done yet)."""
        step = self.state.global_step
        where = "no step was done yet, nothing to save"
        if step > 0:
            if saved:
                where = f"the checkpoint of step {step} is {self._checkpoint_path()}"
            else:
                where = f"a checkpoint was written to {self._save_outage_checkpoint()}"
        raise errors.RewardStepError(
            f"the reward failed at step {step + 1} ({what}); every process stopped: {where}; fix the cause "
            f"and run the same command with --resume ({_resume_command()})",
            processes=[r for r, c in enumerate(codes) if c == _FATAL],
            step=step,
        ) from failure

    def _checkpoint_path(self) -> str:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        return os.path.join(str(self.args.output_dir), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _checkpoint_exists(self) -> bool:
        """This step's checkpoint is written (its trainer state is the last file the Trainer saves)."""
        return os.path.isfile(os.path.join(self._checkpoint_path(), "trainer_state.json"))

    def _weighted(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """The scalar reward per completion, NaN where every reward function said unscorable."""
        w = self.reward_weights.to(rewards_per_func.device, rewards_per_func.dtype).unsqueeze(0)
        rewards = (rewards_per_func * w).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return rewards

    def _save_outage_checkpoint(self) -> str:
        self._save_checkpoint(self.model, trial=None)
        return self._checkpoint_path()

    # -- generation, advantages, dynamic sampling
    # ----------------------------------------------------------------
    def _score_round(self, inputs: list[dict]) -> tuple[dict[str, Any], GroupStats]:
        """TRL's generate-and-score for this process's rows, with the advantages replaced by the Rust group
        advantages of the gathered batch (this process's slice)."""
        out = super()._generate_and_score_completions(inputs)
        mode = self._mode()
        g = self.num_generations if mode == "train" else self.num_generations_eval
        last = self._medix_last
        rewards = self._weighted(last["rewards_per_func"]).double().numpy()
        n_local, n_proc = len(inputs), self.accelerator.num_processes
        if len(rewards) != n_local * n_proc:
            raise RuntimeError(
                f"gathered {len(rewards)} rewards from {n_proc} process(es) holding {n_local} rows each"
            )
        stats = group_stats(rewards, group_size=g, scale=self.scale_rewards)
        local = stats.advantages[local_slice(self.accelerator.process_index, n_local)]
        out["advantages"] = torch.as_tensor(
            np.array(local), dtype=torch.float32, device=out["advantages"].device
        )
        self._log_round(mode, last, stats)
        return out, stats

    def _log_round(self, mode: str, last: dict[str, Any], stats: GroupStats) -> None:
        # the global batch, every process
        scores, answers, keys, lengths = unpack_rows(last["rows"], last["columns"])
        comps = component_means(scores, last["columns"])
        mons = monitor_values(scores, answers, keys, lengths, stats.degenerate_fraction)
        metrics = self._metrics[mode]
        for k, v in comps.items():
            metrics[f"reward/{k}"].append(v)
        for k, v in mons.items():
            metrics[f"monitor/{k}"].append(v)
        metrics["num_processes"].append(float(self.accelerator.num_processes))
        every = self.medix_log_completions
        if every and mode == "train" and (self.state.global_step + 1) % every == 0:
            self._write_completions(last, scores, stats)
        if self.medix_print is not None and self.accelerator.is_main_process:
            mine = scores[local_slice(self.accelerator.process_index, len(last["texts"]))]
            self.medix_print({"texts": last["texts"], "scores": mine, **comps, **mons})

    def _write_completions(
        self, last: dict[str, Any], scores: list[dict[str, Any]], stats: GroupStats
    ) -> None:
        """``train.log_completions``: the scoring round's completions of every process (in rank order), each
        with its ground truth, reward components and advantage (in that round), appended to
        ``completions.jsonl`` by the main process. Every process decides alike (from the step number), so
        every one reaches the object gather."""
        mine = list(zip(last["texts"], last["truths"]))
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * self.accelerator.num_processes
            dist.all_gather_object(parts, mine)
            pairs = [p for part in parts for p in part]
        else:
            pairs = mine
        if not self.accelerator.is_main_process:
            return
        n_local = len(mine)
        step = self.state.global_step + 1
        path = os.path.join(str(self.args.output_dir), COMPLETIONS_FILE)
        lines = []
        for i, ((text, truth), sc) in enumerate(zip(pairs, scores)):
            adv = float(stats.advantages[i])
            row = {
                "step": step,
                "round": self._medix_round_no,
                "process": i // n_local if n_local else 0,
                "group": int(stats.group_index[i]),
                "completion": text,
                "ground_truth": truth,
                **{k: v if v is None or np.isfinite(v) else None for k, v in sc.items()},
                "advantage": adv if np.isfinite(adv) else None,
            }
            lines.append(json.dumps(row) + "\n")
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
        except OSError as e:  # the main process alone: raising would leave the others in the next collective
            log.warning(
                "train.log_completions: cannot write %s (%s); step %d's completions not logged", path, e, step
            )

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        self._medix_round_no = 0
        out, stats = self._score_round(inputs)
        mode = self._mode()
        if not (self.medix_dynamic and mode == "train"):
            return out
        n_local, n_proc, rank = len(inputs), self.accelerator.num_processes, self.accelerator.process_index
        n_rows = n_local * n_proc
        n_groups = n_rows // self.num_generations
        masks = [kept_rows(stats, self.medix_min_mean, self.medix_max_mean)]
        metrics = self._metrics[mode]
        kept_share = float(masks[0].sum()) / n_rows
        if self._any_process(not self._row_indexable(out, n_local)):
            if not self._medix_warned_refill:
                log.warning(
                    "dynamic sampling: the batch holds tensors that are not one row per completion "
                    "(images?); "
                    "zero-variance groups are kept with advantage 0 instead of refilled"
                )
                self._medix_warned_refill = True
            metrics["dynamic/kept_groups"].append(kept_share)
            metrics["dynamic/refill_rounds"].append(0.0)
            return out
        outs = [out]
        _, short = refill_plan(masks, n_proc, n_local)
        rounds = 0
        # `short` comes from gathered rewards, identical everywhere: every process runs the same rounds.
        while short.max() > 0 and rounds < self.medix_max_rounds:
            rounds += 1
            self._medix_round_no = rounds
            extra = self._refill_inputs(n_groups, rounds)[local_slice(rank, n_local)]
            o, st = self._score_round(extra)
            outs.append(o)
            masks.append(kept_rows(st, self.medix_min_mean, self.medix_max_mean))
            _, short = refill_plan(masks, n_proc, n_local)
        take, short = refill_plan(masks, n_proc, n_local)
        pieces = [self._select(o, torch.as_tensor(rows)) for o, rows in zip(outs, take[rank]) if len(rows)]
        if short[rank] > 0:
            # Give up: pad with this process's dropped rows of the first round, advantage 0 (no gradient),
            # to keep the batch shape.
            dropped = np.flatnonzero(~masks[0][local_slice(rank, n_local)])[: short[rank]]
            pad = self._select(out, torch.as_tensor(dropped))
            pad["advantages"] = torch.zeros_like(pad["advantages"])
            pieces.append(pad)
        merged = self._concat(pieces)
        metrics["dynamic/kept_groups"].append(kept_share)
        metrics["dynamic/rounds"].append(float(rounds))
        metrics["dynamic/refill_rounds"].append(float(rounds))
        metrics["dynamic/filled_degenerate"].append(float(short.sum()) / n_rows)
        self._medix_dynamic_last = {"masks": masks, "rounds": rounds, "take": take[rank], "short": short}
        return merged

    @staticmethod
    def _row_indexable(out: dict[str, Any], n: int) -> bool:
        for k, v in out.items():
            if k == "num_items_in_batch":
                continue
            if k == "num_images" and isinstance(v, list):
                continue
            if not (isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n):
                return False
        return True

    def _refill_inputs(self, n_groups: int, round_: int) -> list[dict]:
        """Fresh prompts for a refill round of the whole (gathered) batch, drawn reproducibly from (seed,
        step, round): every process draws the same list and keeps its slice, and a resumed run makes the
        same choices."""
        data: Any = self.train_dataset
        g = int(cast(int, self.num_generations))
        rng = np.random.default_rng([self.args.seed, self.state.global_step, round_])
        idx = rng.choice(len(data), size=n_groups, replace=len(data) < n_groups)
        rows = []
        for i in idx:
            row = dict(data[int(i)])
            rows += [dict(row) for _ in range(g)]
        return rows

    @staticmethod
    def _select(out: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
        sel: dict[str, Any] = {}
        for k, v in out.items():
            if k == "num_items_in_batch":
                continue
            if k == "num_images":
                sel[k] = [v[int(i)] for i in rows]
            else:
                sel[k] = v[rows.to(v.device)]
        return sel

    def _concat(self, pieces: list[dict[str, Any]]) -> dict[str, Any]:
        pad_id = self._tokenizer.pad_token_id
        merged: dict[str, Any] = {}
        for k in pieces[0]:
            vals = [p[k] for p in pieces]
            if k == "num_images":
                merged[k] = [x for v in vals for x in v]
                continue
            if vals[0].dim() >= 2 and k in _ROW_KEYS_PAD:
                width = max(v.shape[1] for v in vals)
                fill: Any = pad_id if _ROW_KEYS_PAD[k] == "pad" else _ROW_KEYS_PAD[k]
                padded = []
                for v in vals:
                    extra = width - v.shape[1]
                    if extra:
                        block = torch.full(
                            (v.shape[0], extra, *v.shape[2:]), fill, dtype=v.dtype, device=v.device
                        )
                        v = torch.cat([block, v] if k in _LEFT_PAD else [v, block], dim=1)
                    padded.append(v)
                vals = padded
            elif vals[0].dim() >= 2 and len({tuple(v.shape[1:]) for v in vals}) > 1:
                raise RuntimeError(
                    f"dynamic sampling cannot merge {k!r} tensors of shapes {[v.shape for v in vals]}"
                )
            merged[k] = torch.cat(vals, dim=0)
        mask = merged["completion_mask"]
        if "tool_mask" in merged:
            mask = mask * merged["tool_mask"]
        # A collective: every process reaches it once per step, whatever it kept.
        merged["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return merged


__all__ = [
    "COMPONENTS",
    "JudgeOutageError",
    "MedixGRPOTrainer",
    "check_trl_version",
    "kept_rows",
    "local_slice",
    "refill_plan",
]
