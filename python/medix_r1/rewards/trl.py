"""The MediX-R1 reward components as separate TRL reward functions, plus a registry of the built-ins.

``GRPOTrainer(reward_funcs=[FormatReward(), LLMJudgeReward(judge), EmbeddingReward(embed), ModalityReward()],
args=GRPOConfig(reward_weights=[0.1, 0.5175, 0.3375, 0.045]))`` reproduces the paper's weights
(0.9 x 0.575 = 0.5175, ...). Each is a picklable callable class named for TRL's logs; each returns one float
per completion, or None where its component does not apply or could not be scored.

How TRL 1.15 treats None (``trl/trainer/grpo_trainer.py``): a None becomes NaN, the weighted rewards are
summed with ``nansum`` over the reward functions, so a None contributes nothing **and the other weights are
not rescaled** (a text-only item without a modality tag then scores at most 0.95 instead of 1.0); a row
where every function returned None is unscorable (NaN reward, advantage 0). When the rescaling matters, use
the single :class:`~medix_r1.rewards.composite.CompositeReward`, which rescales per item; its components
are logged from ``last_scores``.

Each split function's ``component`` names its column in the registry (:mod:`medix_r1.rewards.components`),
and its ``__name__`` is that component's ``trl_name``. :class:`CustomReward` wraps a custom component
(``path/to/file.py:function``) the same way; under TRL's split rewards its weight is TRL's
``reward_weights`` entry, with TRL's None rule above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medix_r1.embed.config import EmbedConfig
from medix_r1.judge import JudgeConfig
from medix_r1.rewards import components as _c
from medix_r1.rewards.composite import (
    CompositeReward,
    RewardConfig,
    _trl_columns,
    completion_texts,
    ground_truth_column,
)
from medix_r1.rewards.extra import ExtraComponent
from medix_r1.rewards.structure import analyze, format_rewards

__all__ = [
    "REWARD_FUNCS",
    "CustomReward",
    "EmbeddingReward",
    "FormatReward",
    "LLMJudgeReward",
    "ModalityReward",
    "SplitReward",
    "resolve_reward",
]


def _mode(mode: str) -> Literal["strict", "reference"]:
    if mode == "strict":
        return "strict"
    if mode == "reference":
        return "reference"
    raise ValueError(f"mode must be 'strict' or 'reference', got {mode!r}")


class SplitReward:
    """A TRL reward function that returns one component; ``component`` is its column name."""

    component = ""
    __name__ = "medix_component"


class FormatReward(SplitReward):
    """1.0 for a well-formed ``<TAG><think>..</think><answer>..</answer>`` completion, else 0.0."""

    component = _c.FORMAT.name
    __name__ = _c.FORMAT.trl_name

    def __init__(self, mode: str = "strict") -> None:
        self.mode = _mode(mode)

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        return format_rewards(completion_texts(completions), self.mode).tolist()


class ModalityReward(SplitReward):
    """1.0 when the completion opens with the ground truth's modality tag, 0.0 when not, None when the
    ground truth has no tag (not applicable)."""

    component = _c.MODALITY.name
    __name__ = _c.MODALITY.trl_name

    def __init__(self, mode: str = "strict") -> None:
        self.mode = _mode(mode)

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        texts = completion_texts(completions)
        mod = analyze(texts, ground_truth_column(kwargs, len(texts)), self.mode).modality
        return [None if v != v else float(v) for v in mod.tolist()]


class _ComponentReward(SplitReward):
    """One accuracy component of a CompositeReward configured with that component only."""

    def __init__(self, reward: CompositeReward) -> None:
        self.reward = reward

    @property
    def last_scores(self) -> list[dict[str, Any]]:
        return self.reward.last_scores

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        texts = completion_texts(completions)
        scores = self.reward.score(texts, ground_truth_column(kwargs, len(texts)))
        return [s[self.component] for s in scores]


class LLMJudgeReward(_ComponentReward):
    """LLM-judge accuracy: 1.0 / 0.0 (or P(YES) with ``soft=True``); exact match 1.0 without asking; an
    invalid answer 0.0; None where the judge failed (JudgeFailedError above ``max_unscorable_fraction``)."""

    component = _c.ACCURACY_LLM.name
    __name__ = _c.ACCURACY_LLM.trl_name

    def __init__(
        self,
        judge_config: JudgeConfig | Mapping[str, Any],
        *,
        mode: str = "strict",
        soft: bool = False,
        max_unscorable_fraction: float = 0.5,
        judge: Any = None,
    ) -> None:
        cfg = RewardConfig(
            mode=_mode(mode),
            judge=judge_config,  # type: ignore[arg-type]  # a mapping is converted
            soft_judge=soft,
            max_unscorable_fraction=max_unscorable_fraction,
        )
        super().__init__(CompositeReward(cfg, judge=judge))


class EmbeddingReward(_ComponentReward):
    """Embedding accuracy: cosine(answer, ground truth) >= threshold (or the cosine with ``soft``); exact
    match 1.0 without embedding; an invalid answer 0.0."""

    component = _c.ACCURACY_EMBED.name
    __name__ = _c.ACCURACY_EMBED.trl_name

    def __init__(
        self,
        embed_config: EmbedConfig | Mapping[str, Any],
        *,
        mode: str = "strict",
        embedder: Any = None,
    ) -> None:
        if isinstance(embed_config, Mapping):
            embed_config = EmbedConfig.from_dict(dict(embed_config))
        if embed_config.model is None and embedder is None:
            raise ValueError("EmbeddingReward needs embed_config.model (an exported ONNX directory)")
        cfg = RewardConfig(mode=_mode(mode), embed=embed_config)
        super().__init__(CompositeReward(cfg, embedder=embedder))


class CustomReward(SplitReward):
    """A custom component (``path/to/file.py:function``, the function of a batch) as a TRL reward function:
    its scores, checked (one finite float or None per completion); ``__name__`` and ``component`` are the
    function's name."""

    def __init__(self, function: str) -> None:
        self.extra = ExtraComponent(function, 0.0)
        self.component = self.__name__ = self.extra.name

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        texts = completion_texts(completions)
        gts = ground_truth_column(kwargs, len(texts))
        return self.extra.score(texts, gts, _trl_columns(prompts, kwargs))


REWARD_FUNCS: dict[str, type] = {
    "medix_composite": CompositeReward,
    _c.FORMAT.trl_name: FormatReward,
    _c.MODALITY.trl_name: ModalityReward,
    _c.ACCURACY_LLM.trl_name: LLMJudgeReward,
    _c.ACCURACY_EMBED.trl_name: EmbeddingReward,
}


def resolve_reward(spec: str) -> Any:
    """A built-in name from ``REWARD_FUNCS`` (the class) or ``package.module:attribute`` (anyone's own)."""
    if spec in REWARD_FUNCS:
        return REWARD_FUNCS[spec]
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"unknown reward {spec!r}: use one of {sorted(REWARD_FUNCS)} or 'package.module:function'"
        )
    import importlib

    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
