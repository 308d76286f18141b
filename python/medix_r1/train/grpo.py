"""TRL's GRPOTrainer with MediX-R1's advantages, DAPO dynamic sampling, judge-outage handling and monitors.

Overrides only two of TRL's methods: ``_calculate_rewards`` (retry on a judge outage, keep the per-component
scores) and ``_generate_and_score_completions`` (replace the advantages with the Rust group advantages, drop
zero-variance groups and refill the batch for DAPO, log the monitors). Imported only after the backend is set
up, because Unsloth must be imported before TRL.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
import trl
from trl import GRPOTrainer

from medix_r1 import errors
from medix_r1.advantages import group_stats
from medix_r1.errors import JudgeFailedError
from medix_r1.rewards.structure import analyze
from medix_r1.train.monitors import COMPONENTS, completion_text, component_means, monitor_values

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


def install_cpu_logprob() -> bool:
    """Route TRL's fused LM head through :class:`TorchChunkedLogProb` without CUDA; True if installed."""
    import trl.trainer.utils as tu

    if torch.cuda.is_available():
        return False
    tu._ChunkedLogProbFunction = TorchChunkedLogProb
    return True


JudgeOutageError = errors.JudgeOutageError  # one type for the whole package (medix_r1.errors)


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


class MedixGRPOTrainer(GRPOTrainer):
    def __init__(self, *args: Any, medix: dict[str, Any] | None = None, **kwargs: Any) -> None:
        install_cpu_logprob()
        super().__init__(*args, **kwargs)
        m = medix or {}
        self.medix_dynamic = bool(m.get("dynamic_sampling", False))
        self.medix_min_mean = float(m.get("dynamic_min_mean", 0.01))
        self.medix_max_mean = float(m.get("dynamic_max_mean", 0.99))
        self.medix_max_rounds = int(m.get("dynamic_max_rounds", 4))
        self.medix_judge_retries = int(m.get("judge_retries", 3))
        self.medix_retry_wait = float(m.get("judge_retry_wait", 10.0))
        self.medix_print = m.get("on_batch")  # optional callable(dict) for console output
        self._medix_last: dict[str, Any] = {}
        self._medix_warned_refill = False

    # -- rewards
    # -------------------------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        attempt = 0
        while True:
            try:
                rewards_per_func = super()._calculate_rewards(
                    inputs, prompts, completions, completion_ids_list
                )
                break
            except JudgeFailedError as e:
                if attempt >= self.medix_judge_retries:
                    where = self._save_outage_checkpoint()
                    raise JudgeOutageError(
                        f"the judge failed {attempt + 1} times in a row at step "
                        f"{self.state.global_step}: {e}. "
                        f"A checkpoint was written to {where}; fix the judge and run the same command "
                        "with --resume."
                    ) from e
                wait = self.medix_retry_wait * (2**attempt)
                log.warning(
                    "judge outage (%s); retry %d/%d in %.0fs", e, attempt + 1, self.medix_judge_retries, wait
                )
                time.sleep(wait)
                attempt += 1
        texts = [completion_text(c) for c in completions]
        self._medix_last = {
            "rewards_per_func": rewards_per_func.detach().cpu(),
            "texts": texts,
            "solutions": [x.get("solution", x.get("ground_truth")) for x in inputs],
            "scores": self._component_scores(texts, inputs, rewards_per_func),
            "lengths": [len(ids) for ids in completion_ids_list],
        }
        return rewards_per_func

    def _component_scores(
        self, texts: list[str], inputs: list[dict], rewards_per_func: torch.Tensor
    ) -> list[dict]:
        for f in self.reward_funcs:
            last = getattr(f, "last_scores", None)
            if isinstance(last, list) and len(last) == len(texts):
                return [dict(s) for s in last]
        # A reward without per-component scores: read format and modality from the text (one Rust call).
        sols = [x.get("solution", x.get("ground_truth")) or "" for x in inputs]
        st = analyze(texts, sols)
        total = self._weighted(rewards_per_func.detach().cpu())
        return [
            {
                "overall": None if math.isnan(float(total[i])) else float(total[i]),
                "format": float(st.format[i]),
                "modality": None if math.isnan(st.modality[i]) else float(st.modality[i]),
                "accuracy_llm": None,
                "accuracy_embed": None,
            }
            for i in range(len(texts))
        ]

    def _weighted(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """The scalar reward per completion, NaN where every reward function said unscorable."""
        w = self.reward_weights.to(rewards_per_func.device, rewards_per_func.dtype).unsqueeze(0)
        rewards = (rewards_per_func * w).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return rewards

    def _save_outage_checkpoint(self) -> str:
        import os

        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        self._save_checkpoint(self.model, trial=None)
        return os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    # -- generation, advantages, dynamic sampling
    # ----------------------------------------------------------------
    def _score_round(self, inputs: list[dict]) -> tuple[dict[str, Any], Any, np.ndarray]:
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        g = self.num_generations if mode == "train" else self.num_generations_eval
        last = self._medix_last
        rewards = self._weighted(last["rewards_per_func"]).double().numpy()
        stats = group_stats(rewards, group_size=g, scale=self.scale_rewards)
        n_local = len(inputs)
        start = self.accelerator.process_index * n_local
        local = stats.advantages[start : start + n_local]
        out["advantages"] = torch.as_tensor(
            np.array(local), dtype=torch.float32, device=out["advantages"].device
        )
        self._log_round(mode, last, stats, inputs)
        return out, stats, rewards

    def _log_round(self, mode: str, last: dict[str, Any], stats: Any, inputs: list[dict]) -> None:
        scores = last["scores"]
        comps = component_means(scores)
        answers = [s.get("answer") or "" for s in scores]
        if not any(answers):
            from medix_r1.rewards.structure import extract_answers

            answers = extract_answers(last["texts"])
        keys = [str(x.get("prompt")) for x in inputs]
        mons = monitor_values(scores, answers, keys, last["lengths"], stats.degenerate_fraction)
        metrics = self._metrics[mode]
        for k, v in comps.items():
            metrics[f"reward/{k}"].append(v)
        for k, v in mons.items():
            metrics[f"monitor/{k}"].append(v)
        if self.medix_print is not None:
            self.medix_print({"texts": last["texts"], "scores": scores, **comps, **mons})

    def _keep_groups(self, stats: Any) -> np.ndarray:
        """Groups with a learning signal: not degenerate (variance > 0 over >= 2 scorable rewards) and a
        mean inside [dynamic_min_mean, dynamic_max_mean]."""
        ok = ~stats.degenerate
        ok &= (stats.mean >= self.medix_min_mean) & (stats.mean <= self.medix_max_mean)
        return np.flatnonzero(ok)

    def _generate_and_score_completions(self, inputs):  # type: ignore[override]
        out, stats, _ = self._score_round(inputs)
        mode = "train" if self.model.training else "eval"
        if not (self.medix_dynamic and mode == "train"):
            return out
        g = self.num_generations
        n_groups = len(inputs) // g
        if self.accelerator.num_processes != 1 or not self._row_indexable(out, len(inputs)):
            if not self._medix_warned_refill:
                log.warning(
                    "dynamic sampling: refilling needs one process and per-row tensors; zero-variance groups "
                    "are kept with advantage 0 instead"
                )
                self._medix_warned_refill = True
            self._metrics[mode]["dynamic/kept_groups"].append(
                len(self._keep_groups(stats)) / max(n_groups, 1)
            )
            return out
        kept = self._keep_groups(stats)
        pieces = [self._select(out, self._rows(kept, g))] if len(kept) else []
        have, rounds = len(kept), 0
        first_dropped = np.setdiff1d(np.arange(n_groups), kept)
        while have < n_groups and rounds < self.medix_max_rounds:
            rounds += 1
            extra = self._refill_inputs(n_groups, rounds)
            o, st, _ = self._score_round(extra)
            k = self._keep_groups(st)[: n_groups - have]
            if len(k):
                pieces.append(self._select(o, self._rows(k, g)))
                have += len(k)
        filled = 0
        if (
            have < n_groups
        ):  # give up: pad with dropped groups (advantage 0: no gradient) to keep shapes fixed
            filled = n_groups - have
            pieces.append(self._select(out, self._rows(first_dropped[:filled], g)))
        merged = self._concat(pieces)
        self._metrics[mode]["dynamic/kept_groups"].append(len(kept) / n_groups)
        self._metrics[mode]["dynamic/rounds"].append(float(rounds))
        self._metrics[mode]["dynamic/filled_degenerate"].append(filled / n_groups)
        return merged

    @staticmethod
    def _rows(groups: np.ndarray, g: int) -> torch.Tensor:
        return torch.as_tensor((np.asarray(groups)[:, None] * g + np.arange(g)[None, :]).reshape(-1))

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
        """Fresh prompts for a refill round, drawn reproducibly from (seed, step, round) so a resumed run
        makes the same choices."""
        rng = np.random.default_rng([self.args.seed, self.state.global_step, round_])
        idx = rng.choice(len(self.train_dataset), size=n_groups, replace=len(self.train_dataset) < n_groups)
        rows = []
        for i in idx:
            row = dict(self.train_dataset[int(i)])
            rows += [dict(row) for _ in range(self.num_generations)]
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
                fill = pad_id if _ROW_KEYS_PAD[k] == "pad" else _ROW_KEYS_PAD[k]
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
        merged["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return merged


__all__ = ["COMPONENTS", "JudgeOutageError", "MedixGRPOTrainer", "check_trl_version"]
