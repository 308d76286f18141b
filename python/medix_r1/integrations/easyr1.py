"""The MediX-R1 composite reward as an EasyR1 / verl batch reward function, reference mode by default.

Plug it into the authors' EasyR1 recipe in place of their ``medical.py``::

    python3 -m verl.trainer.main config=... \\
        worker.reward.reward_function=/path/to/medix_r1/integrations/easyr1.py:compute_score \\
        worker.reward.reward_function_kwargs='{format_weight: 0.1}'

(``python -c "import medix_r1.integrations.easyr1 as m; print(m.__file__)"`` prints the path.) There is no
``reward_type`` option to set: the authors' EasyR1 fork and EasyR1 since November 2025 read the call type from
this module's ``REWARD_TYPE = "batch"`` and reject ``worker.reward.reward_type`` (``ConfigKeyError: Key
'reward_type' not in 'RewardConfig'``); older EasyR1 releases had that key, defaulting to ``batch``. Their
loader calls ``compute_score(list_of_inputs, **reward_function_kwargs)`` and expects one dict per input.
Custom components go in the same kwargs: ``'{extra: [{function: /abs/path/check.py:fn, weight: 0.2}]}'``;
each is a key of the returned dicts named after its function, and a share of ``overall``
(:mod:`medix_r1.rewards.extra`); the other keys of EasyR1's reward inputs are passed to it as columns.
Configure the models with environment variables, set for the reward workers:

- ``MEDIX_JUDGE_MODEL``: a local ``.gguf`` judge run in-process by llama.cpp, or
- ``MEDIX_JUDGE_URL`` + ``MEDIX_JUDGE_NAME``: an OpenAI-compatible server (vLLM, ``medix judge serve``); the
  name is checked against the server's ``/v1/models`` when the judge is first built;
- ``MEDIX_EMBED_MODEL``: a directory from ``medix embed export`` (fastembed);
- ``MEDIX_REWARD_MODE``: ``reference`` (**the default here**: the authors' numbers, their parsing, judge
  question and reading of the judge's reply, including their 0.0 for inputs their code fails on, with the
  reason in the reward's ``errors`` and counted on stderr) or ``strict`` (this project's parser and judge
  question: not the authors' numbers, so not a drop-in for their recipe);
- ``MEDIX_REFERENCE_PROMPT``: a UTF-8 file holding the judge prompt template (``{predicted}``,
  ``{ground_truth}``), e.g. a copy of the prompt in the authors' medical.py: only with it are their numbers
  reproduced exactly (without it, reference mode asks with this project's own wording and warns once);
- ``MEDIX_MAX_UNSCORABLE``: the share of judged items that may fail per batch (default 0.5).

Neither judge nor embedder configured means those components do not apply (format and modality only), which
is printed once on stderr.

EasyR1 cannot take None: its reward manager writes ``overall`` into a tensor and collects every key of every
dict into per-key lists (``reward_metrics[key]``), which it averages for the logs and, with online
filtering, zips with the batch's group ids (``zip(uids, reward_metrics[filter_key])``). So:

- more than ``MEDIX_MAX_UNSCORABLE`` of a batch's judged items failing raises JudgeFailedError (the run
  stops with the judge's name and first error rather than training on guesses);
- below that, an item's ``overall`` is rescaled over the components that were scored, as in
  :class:`CompositeReward`; an item with no scorable content component at all gets the mean ``overall`` of
  the other completions for the same ground truth (its GRPO group), which leaves the group mean unchanged
  and gives it advantage 0; the count is printed on stderr for every batch where it happens;
- every dict has every key (``missing="nan"``, the default), so each per-key list is as long as the batch
  and lines up with its group ids. A component that does not apply (not configured; in strict mode, modality
  for a ground truth without a tag) or could not be scored (the judge failed on that item) is **NaN**, never
  a 0.0 that would be a wrong number: EasyR1's logged mean of that key is then NaN for the batch, and online
  filtering on that key drops the item's group (NaN is neither above nor below the bounds). ``overall`` is
  never NaN. In reference mode with both models configured, only a judge failure makes a NaN.
  ``missing="omit"`` leaves such keys out instead (shorter lists: only for a reward manager that pairs values
  with items by key, never with EasyR1's online filtering on that key).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import defaultdict
from typing import Any

from medix_r1.rewards.composite import CompositeReward, RewardConfig

__all__ = ["REWARD_NAME", "REWARD_TYPE", "compute_score", "config_from_env", "get_reward"]

REWARD_NAME = "medix_r1"
REWARD_TYPE = "batch"  # read by EasyR1's loader: compute_score takes the whole batch

_REWARDS: dict[tuple, CompositeReward] = {}
_LOCK = threading.Lock()


def config_from_env(
    format_weight: float = 0.1, environ: Any = None, extra: list[dict[str, Any]] | None = None
) -> RewardConfig:
    """The RewardConfig the ``MEDIX_*`` environment variables describe (reference mode unless
    ``MEDIX_REWARD_MODE`` says otherwise)."""
    env = os.environ if environ is None else environ
    judge: dict[str, Any] | None = None
    if env.get("MEDIX_JUDGE_MODEL"):
        judge = {"model": env["MEDIX_JUDGE_MODEL"]}
    elif env.get("MEDIX_JUDGE_URL"):
        judge = {"url": env["MEDIX_JUDGE_URL"], "name": env.get("MEDIX_JUDGE_NAME")}
    if judge is not None and env.get("MEDIX_REFERENCE_PROMPT"):
        judge["reference_prompt"] = env["MEDIX_REFERENCE_PROMPT"]
    embed = {"model": env["MEDIX_EMBED_MODEL"]} if env.get("MEDIX_EMBED_MODEL") else None
    return RewardConfig.from_dict(
        {
            "mode": env.get("MEDIX_REWARD_MODE", "reference") or "reference",
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
    missing: str = "nan",
    extra: list[dict[str, Any]] | None = None,
) -> list[dict[str, float]]:
    """EasyR1's batch reward function: one dict of floats per input (``response``, ``ground_truth``), every
    dict with the same keys (``missing="nan"``: NaN where a component does not apply or was unscorable)."""
    if missing not in ("omit", "nan"):
        raise ValueError(f"missing must be 'omit' or 'nan', got {missing!r}")
    if not isinstance(reward_inputs, list):
        raise TypeError(
            "compute_score expects the list of the batch's inputs (EasyR1 calls it so when the module's "
            "REWARD_TYPE is 'batch', as it is here)"
        )
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

    keys = reward.columns  # overall, the built-in components, then each custom one: every key, every item
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
        for k in keys:
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
