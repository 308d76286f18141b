"""The MediX-R1 composite reward as an EasyR1 / verl batch reward function.

Plug it into the authors' EasyR1 recipe (reward type ``batch``)::

    python3 -m verl.trainer.main config=... \\
        worker.reward.reward_type=batch \\
        worker.reward.reward_function=/path/to/medix_r1/integrations/easyr1.py:compute_score \\
        worker.reward.reward_function_kwargs='{format_weight: 0.1}'

(``python -c "import medix_r1.integrations.easyr1 as m; print(m.__file__)"`` prints the path.) Custom
components go in the same kwargs: ``'{extra: [{function: /abs/path/check.py:fn, weight: 0.2}]}'``; each
is a key of the returned dicts named after its function, and a share of ``overall``
(:mod:`medix_r1.rewards.extra`); the other keys of EasyR1's reward inputs are passed to it as columns. Configure the
models with environment variables, set for the reward workers:

- ``MEDIX_JUDGE_MODEL``: a local ``.gguf`` judge run in-process by llama.cpp, or
- ``MEDIX_JUDGE_URL`` + ``MEDIX_JUDGE_NAME``: an OpenAI-compatible server (vLLM, ``medix judge serve``);
- ``MEDIX_EMBED_MODEL``: a directory from ``medix embed export`` (fastembed);
- ``MEDIX_REWARD_MODE``: ``strict`` (default) or ``reference`` (the authors' own numbers, including their 0.0
  for inputs their code fails on; the reason is in the reward's ``errors`` and counted on stderr);
- ``MEDIX_MAX_UNSCORABLE``: the share of judged items that may fail per batch (default 0.5).

Neither judge nor embedder configured means those components do not apply (format and modality only), which
is printed once on stderr.

EasyR1 cannot take None: its reward manager writes ``overall`` into a tensor and averages every other key
into the logged metrics. So:

- more than ``MEDIX_MAX_UNSCORABLE`` of a batch's judged items failing raises JudgeFailedError (the run
  stops with the judge's name and first error rather than training on guesses);
- below that, an item's ``overall`` is rescaled over the components that were scored, as in
  :class:`CompositeReward`; an item with no scorable content component at all gets the mean ``overall`` of
  the other completions for the same ground truth (its GRPO group), which leaves the group mean unchanged
  and gives it advantage 0; the count is printed on stderr for every batch where it happens;
- a component that is None (not applicable, or unscorable) is left out of that item's dict
  (``missing="omit"``, the default), so EasyR1's per-key mean covers only the items where it was scored; a
  0.0 there would be a wrong number. ``missing="nan"`` writes NaN instead, for managers that need every key.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import defaultdict
from typing import Any

from medix_r1.rewards.composite import CompositeReward, RewardConfig

__all__ = ["compute_score", "config_from_env", "get_reward"]

_REWARDS: dict[tuple, CompositeReward] = {}
_LOCK = threading.Lock()


def config_from_env(
    format_weight: float = 0.1, environ: Any = None, extra: list[dict[str, Any]] | None = None
) -> RewardConfig:
    """The RewardConfig the ``MEDIX_*`` environment variables describe."""
    env = os.environ if environ is None else environ
    judge: dict[str, Any] | None = None
    if env.get("MEDIX_JUDGE_MODEL"):
        judge = {"model": env["MEDIX_JUDGE_MODEL"]}
    elif env.get("MEDIX_JUDGE_URL"):
        judge = {"url": env["MEDIX_JUDGE_URL"], "name": env.get("MEDIX_JUDGE_NAME")}
    embed = {"model": env["MEDIX_EMBED_MODEL"]} if env.get("MEDIX_EMBED_MODEL") else None
    return RewardConfig.from_dict(
        {
            "mode": env.get("MEDIX_REWARD_MODE", "strict") or "strict",
            "format_weight": format_weight,
            "judge": judge,
            "embed": embed,
            "max_unscorable_fraction": float(env.get("MEDIX_MAX_UNSCORABLE", "0.5")),
            "extra": list(extra or []),
        }
    )


def get_reward(format_weight: float = 0.1, extra: list[dict[str, Any]] | None = None) -> CompositeReward:
    """The process-wide CompositeReward for the current environment (built once, models loaded lazily)."""
    cfg = config_from_env(format_weight, extra=extra)
    key = (repr(cfg),)
    with _LOCK:
        reward = _REWARDS.get(key)
        if reward is None:
            reward = _REWARDS[key] = CompositeReward(cfg)
            if not reward.has_judge and not reward.has_embedder:
                print(
                    "medix: no MEDIX_JUDGE_MODEL / MEDIX_JUDGE_URL / MEDIX_EMBED_MODEL set: only format and "
                    "modality are scored",
                    file=sys.stderr,
                )
    return reward


def compute_score(
    reward_inputs: list[dict[str, Any]],
    format_weight: float = 0.1,
    missing: str = "omit",
    extra: list[dict[str, Any]] | None = None,
) -> list[dict[str, float]]:
    """EasyR1's batch reward function: one dict of floats per input (``response``, ``ground_truth``)."""
    if missing not in ("omit", "nan"):
        raise ValueError(f"missing must be 'omit' or 'nan', got {missing!r}")
    if not isinstance(reward_inputs, list):
        raise TypeError("compute_score expects a list of dicts (use reward_type=batch in EasyR1)")
    responses = [str(x["response"]) for x in reward_inputs]
    gts = [str(x["ground_truth"]) for x in reward_inputs]
    reward = get_reward(format_weight, extra)
    columns = None
    if reward.extras:
        names = {k for x in reward_inputs for k in x} - {"response", "ground_truth"}
        columns = {k: [x.get(k) for x in reward_inputs] for k in sorted(names)}
    scores = reward.score(responses, gts, columns)

    by_gt: dict[str, list[float]] = defaultdict(list)
    for g, s in zip(gts, scores):
        if s["overall"] is not None:
            by_gt[g].append(s["overall"])
    scored = [s["overall"] for s in scores if s["overall"] is not None]
    if not scored and scores:
        first = next((e for s in scores for e in s["errors"]), "no component could be scored")
        from medix_r1.errors import JudgeFailedError

        raise JudgeFailedError(f"no item of this batch could be scored; first error: {first}")
    batch_mean = sum(scored) / len(scored) if scored else 0.0

    out: list[dict[str, float]] = []
    filled = with_errors = 0
    for g, s in zip(gts, scores):
        d: dict[str, float] = {}
        overall = s["overall"]
        if overall is None:
            group = by_gt.get(g)
            overall = sum(group) / len(group) if group else batch_mean
            filled += 1
        if s["errors"]:
            with_errors += 1
        for k in reward.columns:
            v = overall if k == "overall" else s[k]
            if v is None:
                if missing == "nan":
                    d[k] = math.nan
            else:
                d[k] = float(v)
        out.append(d)
    if filled or with_errors:
        c = reward.counters
        print(
            f"medix: reward batch of {len(scores)}: {with_errors} item(s) with errors recorded (unscorable, "
            f"or scored 0.0 in reference mode), {filled} with no scorable content (given their group's mean "
            "overall); "
            f"judge unscorable so far {c['judge_unscorable']}/{c['judge_items']}",
            file=sys.stderr,
        )
    return out
