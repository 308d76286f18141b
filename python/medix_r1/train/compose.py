"""Our GRPOTrainer subclass built on whichever ``trl.GRPOTrainer`` is current: TRL's own, or Unsloth's.

What Unsloth does to TRL (read from unsloth 2026.10.9, ``unsloth/models/rl.py`` and ``rl_replacements.py``):
``import unsloth`` calls ``PatchFastRL``, which takes the *source* of TRL's ``GRPOTrainer``, rewrites some of
its methods as text (``_generate_and_score_completions``, ``_get_per_token_logps_and_entropies``,
``compute_loss``, ``_prepare_inputs``, ...), compiles it into a generated module as ``_UnslothGRPOTrainer``
with a thin ``UnslothGRPOTrainer`` on top, and rebinds ``trl.GRPOTrainer``, ``trl.trainer.GRPOTrainer`` and
``trl.trainer.grpo_trainer.GRPOTrainer`` (and ``GRPOConfig``) to the generated classes. The generated class
does not inherit from TRL's: a class that subclassed ``trl.GRPOTrainer`` before that import keeps TRL's
unpatched loop (no Unsloth loss, no left-pad packing, no optimizer parking) under an Unsloth model.

So the subclass must be created after Unsloth is imported, from the name ``trl.GRPOTrainer`` as it is then.
``medix_r1.train.grpo`` binds ``GRPOTrainer`` from ``trl`` at import; :func:`trainer_class` re-executes that
module when its class was built on a base that is no longer ``trl.GRPOTrainer``.

What our two overrides rely on in Unsloth's rewritten trainer (tests/test_bench_gpu.py pins the TRL side, and
Unsloth's side when its wheel is at hand):

- ``_generate_and_score_completions(self, inputs)`` keeps TRL's signature and returns TRL's output dict with
  per-row ``advantages``, which Unsloth's ``compute_loss`` reads; we replace that tensor (same shape). Unsloth
  wraps the method (optimizer parking, ``for_inference`` restore), which our override reaches through
  ``super()`` once per generation round.
- It calls ``self._calculate_rewards(inputs, prompts, completions, completion_ids_list)`` positionally, so our
  override is the one called. For vision batches it passes decoded text (``prompts_text``,
  ``completions_text``) where TRL passes chat messages; ``completion_text`` reads both.
- It adds ``max_left_pad`` (one row per completion, the batch's largest prompt left padding) and
  ``sampling_per_token_logps`` (None without vLLM) to the output. A None value is not per-row, so DAPO's
  refill keeps zero-variance groups at advantage 0 under Unsloth (with a warning) instead of merging rounds;
  and a merged batch would need ``max_left_pad`` recomputed from the merged ``prompt_ids``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["is_unsloth_trainer", "trainer_class"]


def is_unsloth_trainer(cls: type) -> bool:
    """Whether ``cls`` is (or derives from) a trainer Unsloth generated."""
    return any(c.__name__.startswith(("Unsloth", "_Unsloth")) for c in cls.__mro__)


def trainer_class() -> Any:
    """``MedixGRPOTrainer`` on the current ``trl.GRPOTrainer`` (Unsloth's once Unsloth is imported)."""
    import trl

    from medix_r1.train import grpo

    if trl.GRPOTrainer not in grpo.MedixGRPOTrainer.__mro__:
        grpo = importlib.reload(grpo)
    return grpo.MedixGRPOTrainer
