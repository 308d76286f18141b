"""The reward components, each declared once: its name (the key in score dicts, the column of `medix reward
score`, the ``reward/<name>`` metric), its short label (``--weights NAME=...``, the trainer's per-step line),
its weight field and default weight, its role in ``overall``, when it applies, and how it scores a batch.

The composite reward, the TRL and EasyR1 adapters, the trainer's monitors, per-step line and chart, and the
score file's columns and resume fingerprint all read this module; custom components (``file.py:function``,
:mod:`medix_r1.rewards.extra`) join the same columns after the built-ins.

Roles: ``format`` (one component, weight ``fw``) and ``content`` (rescaled over those that apply) make the
paper's ``overall = fw * format + (1 - fw) * content``. A new built-in content component is one module that
declares a :class:`Component` and a scorer, listed in :data:`BUILTINS` (its weight is a ``RewardConfig``
field named by ``weight_field``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from medix_r1.rewards.composite import CompositeReward
    from medix_r1.rewards.structure import StructureScores

__all__ = [
    "BUILTINS",
    "COMPONENTS",
    "CONTENT",
    "OVERALL",
    "Batch",
    "Component",
    "by_label",
    "by_name",
    "default_weights_spec",
    "reward_columns_of_row",
    "step_line",
]

OVERALL = "overall"


@dataclass
class Batch:
    """What every component of one scored batch may read; built once by the composite."""

    responses: list[str]
    ground_truths: list[str]
    columns: dict[str, list[Any]]
    """Other per-item columns (dataset columns under TRL, other input fields under `reward score`)."""
    mode: str
    structure: StructureScores
    """format, modality, parsed answers and invalid flags from the Rust core."""
    gt_answers: list[str]
    notes: list[str | None]
    """Per item: why its accuracy was decided without a model (a data problem), else None."""
    decided: list[float | None]
    """Per item: the accuracy decided without a model (exact match, invalid answer, ...), else None."""
    ask: list[int]
    """Items whose accuracy a model decides."""
    errors: list[list[str]] = field(default_factory=list)
    """Per item: the errors recorded so far (components append theirs)."""


Scorer = Callable[["CompositeReward", Batch], list[float | None]]
Enabled = Callable[["CompositeReward"], bool]


@dataclass(frozen=True)
class Component:
    """One built-in reward component."""

    name: str
    """Key in score dicts and output columns; ``reward/<name>`` in metrics.jsonl."""
    label: str
    """Short name: ``--weights LABEL=W`` and the trainer's per-step line."""
    role: Literal["format", "content"]
    weight_field: str
    """The RewardConfig field holding its weight."""
    default_weight: float
    applies: str
    """When it applies, in words (for docs and --help)."""
    score: Scorer
    """Scores one batch: one float, or None (not applicable / unscorable), per item."""
    enabled: Enabled = lambda reward: True
    """Whether it applies at all for this reward (a model configured); when not, it is None everywhere."""

    @property
    def trl_name(self) -> str:
        """``__name__`` of its TRL split reward function (TRL logs ``rewards/<trl_name>/mean``)."""
        return f"medix_{self.name}"


# -- the paper's four components ---------------------------------------------------------------------------


def _score_format(reward: CompositeReward, b: Batch) -> list[float | None]:
    return [float(v) for v in b.structure.format.tolist()]


def _score_modality(reward: CompositeReward, b: Batch) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in b.structure.modality.tolist()]


ModelScorer = Callable[["CompositeReward", list[str], list[str]], list[tuple[float | None, str | None]]]


def _model_accuracy(
    name: str,
    by_model: ModelScorer,
    *,
    label: str,
    weight_field: str,
    default_weight: float,
    applies: str,
    enabled: Enabled,
) -> Component:
    """A content component whose accuracy a model decides: the items in ``b.ask`` go to ``by_model`` (their
    answers and ground-truth answers; one score and error, or None, each), every other item keeps the value
    decided without a model; a data problem noted for an item and the model's errors are recorded under
    ``name``."""

    def score(reward: CompositeReward, b: Batch) -> list[float | None]:
        vals: list[float | None] = list(b.decided)
        for i, e in enumerate(b.notes):
            if e is not None:
                b.errors[i].append(f"{name}: {e}")
        if not b.ask:
            return vals
        answers = b.structure.answers
        scored = by_model(reward, [answers[i] for i in b.ask], [b.gt_answers[i] for i in b.ask])
        for i, (v, err) in zip(b.ask, scored):
            vals[i] = v
            if err is not None:
                b.errors[i].append(f"{name}: {err}")
        return vals

    return Component(name, label, "content", weight_field, default_weight, applies, score, enabled)


FORMAT = Component(
    name="format",
    label="format",
    role="format",
    weight_field="format_weight",
    default_weight=0.1,
    applies="always: 1.0 for a well-formed <TAG><think>..</think><answer>..</answer> completion, else 0.0",
    score=_score_format,
)
ACCURACY_LLM = _model_accuracy(
    "accuracy_llm",
    lambda reward, answers, gts: reward._llm(answers, gts),
    label="llm",
    weight_field="llm_weight",
    default_weight=0.575,
    applies="when a judge is configured: 1.0/0.0 (or P(YES)) from the YES/NO judge",
    enabled=lambda reward: reward.has_judge,
)
ACCURACY_EMBED = _model_accuracy(
    "accuracy_embed",
    lambda reward, answers, gts: reward._embed(answers, gts),
    label="embed",
    weight_field="embed_weight",
    default_weight=0.375,
    applies="when an embedding model is configured: cosine(answer, ground truth) >= threshold",
    enabled=lambda reward: reward.has_embedder,
)
MODALITY = Component(
    name="modality",
    label="modality",
    role="content",
    weight_field="modality_weight",
    default_weight=0.05,
    applies="when the ground truth has a modality tag: 1.0 when the completion opens with it, else 0.0",
    score=_score_modality,
)

BUILTINS: tuple[Component, ...] = (FORMAT, ACCURACY_LLM, ACCURACY_EMBED, MODALITY)
"""The built-in components in column order; the content ones in the order of the authors' expression."""

CONTENT: tuple[Component, ...] = tuple(c for c in BUILTINS if c.role == "content")
COMPONENTS: tuple[str, ...] = (OVERALL, *(c.name for c in BUILTINS))
"""The built-in columns: ``overall`` then each component (custom components follow these)."""

_BY_NAME = {c.name: c for c in BUILTINS}
_BY_LABEL = {c.label: c for c in BUILTINS}
assert [c.role for c in BUILTINS].count("format") == 1


def by_name(name: str) -> Component | None:
    return _BY_NAME.get(name)


def by_label(label: str) -> Component | None:
    return _BY_LABEL.get(label)


def default_weights_spec() -> str:
    """The default weights as ``--weights`` spells them (format=0.1,llm=0.575,...)."""
    return ",".join(f"{c.label}={c.default_weight:g}" for c in BUILTINS)


def step_line(row: dict[str, Any], fmt: Callable[[Any], str], columns: Sequence[str] | None = None) -> str:
    """The reward part of the trainer's per-step line: ``overall X  format X  llm X ...`` then each custom
    component by its name; ``columns`` defaults to the built-ins plus every other ``reward/`` key of
    ``row``."""
    if columns is None:
        columns = reward_columns_of_row(row)
    parts = []
    for name in columns:
        c = _BY_NAME.get(name)
        parts.append(f"{c.label if c else name} {fmt(row.get(f'reward/{name}'))}")
    return "  ".join(parts)


def reward_columns_of_row(row: dict[str, Any]) -> list[str]:
    """The reward columns of a metrics row: the built-ins, then any other ``reward/<name>`` (custom
    components) in the row's order."""
    extra = [
        k.removeprefix("reward/")
        for k in row
        if k.startswith("reward/") and k.removeprefix("reward/") not in COMPONENTS
    ]
    return [*COMPONENTS, *extra]
