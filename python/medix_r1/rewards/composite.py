"""The MediX-R1 composite reward: format, modality, LLM-judge accuracy and embedding accuracy, per completion.

``overall = fw * format + (1 - fw) * (w_llm * llm + w_embed * embed + w_mod * modality)`` with the paper's
weights by default (fw = 0.1; 0.575 / 0.375 / 0.05). A content component that does not apply (modality for a
ground truth without a tag, a judge or embedder that is not configured) or that could not be scored (the
judge failed for that item) is left out and the remaining content weights are rescaled to the same total;
an unscorable one is also recorded in ``errors``. Nothing unscorable is ever a silent 0.0.

The components are declared once in :mod:`medix_r1.rewards.components`; custom ones (``extra:``, functions
named ``path/to/file.py:function``) are added to ``overall`` as shares of it, as described in
:mod:`medix_r1.rewards.extra`; without them every number is the paper's.

``mode="reference"`` gives the authors' numbers (training/examples/reward_function/medical.py of
mbzuai-oryx/MediX-R1) for every input, in their floating-point order: the ground truth's answer is the text
after its first ``>``, stripped of whitespace and then of periods, and the judge is asked their question and
read their way (:mod:`medix_r1.judge.reference`: their request, worded as ``judge.reference_prompt`` gives it
or in our words, at most 4 tokens at temperature 0, YES iff the reply contains "YES"; ``soft_judge`` still
gives P(YES)). A ground truth that is only a tag (``<X_RAY>``)
has an empty answer, which their code sends to the judge and embeds like any other (so does reference mode).
Where their code raises (a ground truth without ``>``; an answer or ground truth with a lone surrogate, which
neither the judge's nor the embedder's tokenizer takes) both accuracies are their 0.0, with the reason
recorded in ``errors``. A judge that fails for an item (outage, HTTP error, context overflow) stays
unscorable in both modes: their 0.0 there is a flaw, not a rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medix_r1.config import bad_value, build, check_fields, option
from medix_r1.embed.config import EmbedConfig
from medix_r1.errors import JudgeFailedError
from medix_r1.judge import JudgeConfig
from medix_r1.rewards.components import BUILTINS, COMPONENTS, CONTENT, OVERALL, Batch
from medix_r1.rewards.extra import ExtraComponent, check_specs, load_extras
from medix_r1.rewards.structure import analyze, has_lone_surrogate, parse_ground_truths

__all__ = [
    "COMPONENTS",
    "CompositeReward",
    "RewardConfig",
    "completion_texts",
    "ground_truth_column",
    "parse_weights",
]

MODES = ("strict", "reference")
_WEIGHT_KEYS = {c.label: c.weight_field for c in BUILTINS}


def parse_weights(spec: str | Mapping[str, float]) -> dict[str, float]:
    """``"format=0.1,llm=0.575,embed=0.375,modality=0.05"`` (any subset) -> RewardConfig weight fields."""
    items: list[tuple[Any, Any]] = list(spec.items()) if isinstance(spec, Mapping) else []
    if not isinstance(spec, Mapping):
        for part in str(spec).split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"--weights: expected NAME=NUMBER, got {part.strip()!r}")
            items.append((key, value))
    out: dict[str, float] = {}
    for key, value in items:
        k = str(key).strip().lower().removesuffix("_weight")
        if k not in _WEIGHT_KEYS:
            raise ValueError(f"--weights: unknown component {key!r}; known: {', '.join(_WEIGHT_KEYS)}")
        try:
            out[_WEIGHT_KEYS[k]] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--weights: {key} must be a number, got {value!r}") from None
    return out


MAX_WEIGHT = 1000.0  # a content weight above this is refused (their sum must stay finite)


def weights_shorthand(d: dict[str, Any]) -> dict[str, Any]:
    """``weights: "format=0.1,llm=0.575,..."`` (or a mapping) in a reward mapping -> the weight fields."""
    weights = d.pop("weights", None)
    if weights is not None:
        try:
            d.update(parse_weights(weights))
        except ValueError as e:
            raise bad_value(
                "reward.weights", weights, f"NAME=NUMBER pairs of {', '.join(_WEIGHT_KEYS)}"
            ) from e
    return d


@dataclass
class RewardConfig:
    """How the composite reward is computed; ``RewardConfig.from_dict`` reads the YAML form."""

    mode: Literal["strict", "reference"] = option(
        "strict",
        "strict (this project's parser and judge question) or reference (the authors' reward code: their "
        "parsing, judge request and reading of the judge's reply; judge.reference_prompt: their prompt)",
    )
    format_weight: float = option(0.1, "weight of the format reward (paper: 0.1)", ge=0, le=1)
    llm_weight: float = option(
        0.575, "content weight of the LLM-judge accuracy (paper: 0.575)", ge=0, le=MAX_WEIGHT
    )
    embed_weight: float = option(
        0.375, "content weight of the embedding accuracy (paper: 0.375)", ge=0, le=MAX_WEIGHT
    )
    modality_weight: float = option(
        0.05, "content weight of the modality reward (paper: 0.05)", ge=0, le=MAX_WEIGHT
    )
    judge: JudgeConfig | None = option(None, "the YES/NO judge (None: LLM accuracy not applicable)")  # noqa: RUF009
    embed: EmbedConfig | None = option(None, "the embedding model (None: embedding accuracy not applicable)")  # noqa: RUF009
    judge_report: str | None = option(
        None,
        "report.json written by `medix judge validate` for this judge; without a passing one for the same "
        "judge, `medix train` and `medix demo` print a warning",
    )
    soft_judge: bool = option(
        False, "use the judge's P(YES) (of its first reply token) instead of its 0/1 decision"
    )
    max_unscorable_fraction: float = option(
        0.5, "raise JudgeFailedError when more than this share of a batch's judged items fail", ge=0, le=1
    )
    extra: list[dict[str, Any]] = option(  # noqa: RUF009
        help="custom components [{function: path/to/file.py:function, weight: W}], each W a share of "
        "overall (README: Custom reward components)",
        factory=list,
    )

    def __post_init__(self) -> None:
        check_fields(self, "reward")
        if isinstance(self.judge, Mapping):
            self.judge = build(JudgeConfig, self.judge, "reward.judge")
        if isinstance(self.embed, Mapping):
            self.embed = EmbedConfig.from_dict(dict(self.embed))
        if self.embed is not None and self.embed.model is None:
            self.embed = None  # an embed section without a model configures nothing
        if self.judge_report is not None:
            self.judge_report = str(self.judge_report)
        self.extra = check_specs(self.extra)
        if self.format_weight < 1 and self.llm_weight + self.embed_weight + self.modality_weight <= 0:
            raise bad_value(
                "reward.llm_weight",
                self.llm_weight,
                "> 0 for at least one of llm_weight, embed_weight, modality_weight (format_weight < 1)",
            )

    @property
    def content_weights(self) -> dict[str, float]:
        return {c.name: getattr(self, c.weight_field) for c in CONTENT}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RewardConfig:
        """From a (YAML) mapping: nested ``judge:`` / ``embed:`` sections, and ``weights:`` either as a
        mapping or as the CLI string ``"format=0.1,llm=0.575,embed=0.375,modality=0.05"``."""
        cfg: RewardConfig = build(cls, d, "reward", prepare={"reward": weights_shorthand})
        return cfg


# --------------------------------------------------------------------------------------------------------
# TRL inputs
# --------------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            str(p.get("text", "")) if isinstance(p, Mapping) else str(p)
            for p in content
            if not isinstance(p, Mapping) or p.get("type", "text") == "text"
        )
    return str(content)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """TRL completions -> strings: plain strings stay; a conversation gives its last assistant message
    (its last message if none is marked assistant), with content parts ``{"type": "text"}`` joined."""
    out = []
    for c in completions:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, Mapping):
            out.append(_content_text(c.get("content")))
        elif isinstance(c, Sequence) and c:
            msgs = [m for m in c if isinstance(m, Mapping)]
            mine = [m for m in msgs if m.get("role") == "assistant"] or msgs
            out.append(_content_text(mine[-1].get("content")) if mine else "")
        else:
            out.append("" if c is None or (isinstance(c, Sequence) and not c) else str(c))
    return out


def ground_truth_column(kwargs: Mapping[str, Any], n: int) -> list[str]:
    """The ground truths TRL passes as a dataset column: ``ground_truth`` or ``solution``."""
    for key in ("ground_truth", "solution"):
        if key in kwargs and kwargs[key] is not None:
            col = list(kwargs[key])
            if len(col) != n:
                raise ValueError(f"column {key!r} has {len(col)} rows for {n} completions")
            return ["" if g is None else str(g) for g in col]
    raise ValueError(
        "the MediX-R1 reward needs the ground truth as a dataset column named `ground_truth` or `solution` "
        f"(got columns {sorted(kwargs)})"
    )


# --------------------------------------------------------------------------------------------------------
# The reward
# --------------------------------------------------------------------------------------------------------


def _gt_answers(ground_truths: Sequence[str], mode: str) -> tuple[list[str], list[str | None]]:
    """The answer part of each ground truth, and why it cannot be used (None when it can)."""
    if mode == "reference":
        # The authors' code: the text after the first ">", stripped, then stripped of periods; without a ">"
        # their code raises and scores both accuracies 0.0. An empty answer (a ground truth that is only a
        # tag) is not an error there: it goes to the judge and the embedder like any other.
        answers: list[str] = []
        errs: list[str | None] = []
        for g in ground_truths:
            _, sep, rest = g.partition(">")
            answers.append(rest.strip().strip("."))
            errs.append(
                None
                if sep
                else "ground truth has no '>' (reference mode expects '<TAG> answer'; scored 0.0 as the "
                "authors' code does)"
            )
        return answers, errs
    parsed = parse_ground_truths(ground_truths)
    answers = [text for _, text in parsed]
    return answers, [None if a.strip() else "ground truth has no answer text" for a in answers]


def _rescaled(
    fw: float,
    fmt: float,
    weights: Mapping[str, float],
    comps: Mapping[str, float | None],
    applicable: Mapping[str, bool],
) -> float | None:
    """``overall`` over the content components that apply and were scored, their weights rescaled to the
    same total; None when content applies but none of it could be scored."""
    total = sum(weights.values())
    num = den = 0.0
    unscorable = False
    for k, w in weights.items():
        if w <= 0 or not applicable[k]:
            continue
        v = comps[k]
        if v is None:
            unscorable = True
            continue
        num += w * v
        den += w
    if den > 0:
        return fw * fmt + (1 - fw) * total * num / den
    if unscorable and fw < 1:
        return None
    return fmt  # nothing but the format applies to this item


_FORMAT = next(c for c in BUILTINS if c.role == "format")
_MODALITY = "modality"


def _with_extras(overall: float | None, scored: Sequence[tuple[float, float | None]]) -> float | None:
    """``overall`` with the custom components that apply to this item: ``(1 - W) * overall + sum(w * s)``,
    ``W`` the sum of their weights. None (an extra not applicable) is left out of both; with none applying,
    or an unscorable ``overall``, it is returned as it is."""
    applied = [(w, v) for w, v in scored if v is not None]
    if overall is None or not applied:
        return overall
    total = sum(w for w, _ in applied)
    return (1 - total) * overall + sum(w * v for w, v in applied)


def _other_columns(columns: Mapping[str, Sequence[Any]] | None, n: int) -> dict[str, list[Any]]:
    """Per-item columns for custom components: lists of ``n``; anything else (TRL's ``trainer_state``,
    ...) is passed as it is."""
    out: dict[str, Any] = {}
    for k, v in (columns or {}).items():
        if k in ("completions", "ground_truths"):
            continue
        out[k] = list(v) if isinstance(v, Sequence) and not isinstance(v, (str, bytes)) else v
    return out


def _trl_columns(prompts: Sequence[Any] | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The columns TRL passes a reward function, for custom components: ``prompts`` and every dataset
    column except the ground truth (passed as ``ground_truths``)."""
    out = {k: v for k, v in kwargs.items() if k not in ("ground_truth", "solution")}
    if prompts is not None:
        out["prompts"] = prompts
    return out


class CompositeReward:
    """The MediX-R1 reward for batches of completions; also a TRL reward function (``__call__``).

    Picklable: the judge and embedder are built from the config on first use and left out of the pickle
    (ones passed in explicitly are pickled as they are). ``last_scores`` keeps the per-component dicts of
    the last call and ``counters`` running totals, for the trainer's logs.
    """

    __name__ = "medix_composite"

    def __init__(
        self,
        config: RewardConfig | Mapping[str, Any] | None = None,
        *,
        judge: Any = None,
        embedder: Any = None,
    ) -> None:
        if config is None:
            config = RewardConfig()
        elif isinstance(config, Mapping):
            config = RewardConfig.from_dict(config)
        elif not isinstance(config, RewardConfig):
            raise TypeError(f"config must be a RewardConfig or a mapping, got {type(config).__name__}")
        self.config = config
        self.extras: list[ExtraComponent] = load_extras(config.extra)
        for x in self.extras:
            _ = x.function  # load now: a broken file fails before any model loads or output is written
        self._judge, self._own_judge = judge, judge is None
        self._embedder, self._own_embedder = embedder, embedder is None
        self.last_scores: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "items",
                "judge_calls",
                "judge_items",
                "judge_cache_hits",
                "judge_unscorable",
                "exact_matches",
                "unscorable",
            ),
            0,
        )

    # -- pickling: no model handles in the pickle ----------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._own_judge:
            state["_judge"] = None
        if self._own_embedder:
            state["_embedder"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- components --------------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """The score columns: ``overall``, the built-in components, then each custom one by its name."""
        return (*COMPONENTS, *(x.name for x in self.extras))

    @property
    def has_judge(self) -> bool:
        return self._judge is not None or self.config.judge is not None

    @property
    def has_embedder(self) -> bool:
        return self._embedder is not None or self.config.embed is not None

    @property
    def judge(self) -> Any:
        """The judge, built on first use (None when not configured). A local GGUF judge runs in a supervised
        worker process: a native crash there is a judge outage, not the end of the run."""
        if self._judge is None and self.config.judge is not None:
            from medix_r1.judge import make_judge

            # Reference mode asks the authors' question and reads the reply their way; a local strict-mode
            # judge runs supervised (a native crash is an outage, not the end of the run).
            self._judge = make_judge(
                self.config.judge,
                supervised=True,
                rule=self.config.mode,
                logprobs=self.config.soft_judge,
            )
        return self._judge

    @property
    def embedder(self) -> Any:
        """The embedder, built on first use (None when not configured)."""
        if self._embedder is None and self.config.embed is not None:
            from medix_r1.embed.backends import make_embedder

            self._embedder = make_embedder(self.config.embed)
        return self._embedder

    # -- scoring -----------------------------------------------------------------------------------------
    def score(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        columns: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per response: ``overall``, ``format``, ``accuracy_llm``, ``accuracy_embed``,
        ``modality``, each custom component by name (float, or None when not applicable or unscorable) and
        ``errors`` (list of str); and ``truncated`` (the components scored on a prefix of a text longer than
        their model takes: ``"accuracy_llm"`` for an answer or ground truth the strict judge saw cut to
        ``MAX_ANSWER_CHARS``, ``"accuracy_embed"`` for one over ``MAX_EMBED_CHARS``) only when there are
        any. ``columns``: other per-item columns, passed to custom components."""
        responses = [str(r) for r in responses]
        ground_truths = [str(g) for g in ground_truths]
        n = len(responses)
        if len(ground_truths) != n:
            raise ValueError(f"{n} responses but {len(ground_truths)} ground truths")
        cfg = self.config
        reference = cfg.mode == "reference"
        st = analyze(responses, ground_truths, cfg.mode)
        gt_answers, gt_errors = _gt_answers(ground_truths, cfg.mode)
        errors: list[list[str]] = [[] for _ in range(n)]

        # Items whose accuracy the models decide: a usable ground truth, a valid answer, no exact match.
        # Every other item is decided here; `notes` says why when the reason is a problem with the data.
        decided: list[float | None] = [None] * n
        notes: list[str | None] = [None] * n
        ask: list[int] = []
        for i in range(n):
            if gt_errors[i] is not None:
                notes[i] = gt_errors[i]
                if reference:
                    decided[i] = 0.0
            elif bool(st.invalid[i]):
                decided[i] = 0.0  # the authors' rule: an invalid answer is wrong, not unscorable
            elif st.answers[i] == gt_answers[i]:
                decided[i] = 1.0
                self.counters["exact_matches"] += 1
            elif has_lone_surrogate(st.answers[i]) or has_lone_surrogate(gt_answers[i]):
                # Not text a model can read; in the authors' code the model call raises and scores 0.0.
                notes[i] = "the answer or ground truth contains a lone surrogate (not valid Unicode text)" + (
                    "; scored 0.0 as the authors' code does" if reference else ""
                )
                decided[i] = 0.0 if reference else None
            else:
                ask.append(i)

        other = _other_columns(columns, n)
        batch = Batch(responses, ground_truths, other, cfg.mode, st, gt_answers, notes, decided, ask, errors)
        # Each built-in component that applies scores the batch; one that does not is None everywhere.
        vals: dict[str, list[float | None] | None] = {
            c.name: c.score(self, batch) if c.enabled(self) else None for c in BUILTINS
        }
        extra_vals = [x.score(responses, ground_truths, other) for x in self.extras]
        truncated: list[list[str]] = [[] for _ in range(n)]  # components scored on a prefix of the text
        if vals.get("accuracy_llm") is not None and not reference:  # reference mode sends the whole text
            from medix_r1.judge.prompt import was_cut as judge_cut

            for i in ask:
                if judge_cut(st.answers[i], gt_answers[i]):
                    truncated[i].append("accuracy_llm")
        if vals.get("accuracy_embed") is not None:
            from medix_r1.embed.accuracy import was_cut

            for i in ask:
                if was_cut(st.answers[i], gt_answers[i]):
                    truncated[i].append("accuracy_embed")

        fmt_name = _FORMAT.name
        weights = cfg.content_weights
        fw = cfg.format_weight
        out: list[dict[str, Any]] = []
        for i in range(n):
            fv = vals[fmt_name]
            f_i = None if fv is None else fv[i]
            fmt = 0.0 if f_i is None else float(f_i)  # the format always applies
            comps: dict[str, float | None] = {}
            applicable: dict[str, bool] = {}
            for c in CONTENT:
                cv = vals[c.name]
                comps[c.name] = None if cv is None else cv[i]
                # A component applies when it is configured; modality also needs a tagged ground truth.
                applicable[c.name] = cv is not None and (c.name != _MODALITY or cv[i] is not None)
            overall: float | None
            if reference and all(v is not None for v in comps.values()):
                # Every component scored: the authors' expression, term by term in their order, so the float
                # result is theirs to the last bit.
                cw = 1 - fw
                terms = [cw * weights[k] * v for k, v in comps.items() if v is not None]
                acc = terms[0]
                for t in terms[1:]:
                    acc = acc + t
                overall = acc + fw * fmt
            else:
                overall = _rescaled(fw, fmt, weights, comps, applicable)
            if any(v is None and applicable[k] for k, v in comps.items()):
                self.counters["unscorable"] += 1
            row: dict[str, Any] = {OVERALL: overall, fmt_name: fmt, **comps}
            if self.extras:
                scored = [(x.weight, ev[i]) for x, ev in zip(self.extras, extra_vals)]
                row[OVERALL] = _with_extras(overall, scored)
                for x, ev in zip(self.extras, extra_vals):
                    row[x.name] = ev[i]
            row["errors"] = errors[i]
            out.append({k: row[k] for k in (*self.columns, "errors")})
            if truncated[i]:  # scored on a prefix of a text too long for the component's model
                out[-1]["truncated"] = truncated[i]
        self.counters["items"] += n
        self.last_scores = out
        return out

    def _llm(self, answers: list[str], gt_answers: list[str]) -> list[tuple[float | None, str | None]]:
        """The judge's accuracy of each (answer, ground truth) pair, with the reason when it gave none."""
        judge = self.judge
        verdicts = judge.judge(list(zip(answers, gt_answers)))
        self.counters["judge_calls"] += 1
        self.counters["judge_items"] += len(answers)
        out: list[tuple[float | None, str | None]] = []
        failed: list[str] = []
        for v in verdicts:
            if v.source == "cache":
                self.counters["judge_cache_hits"] += 1
            if v.match is None:
                msg = v.error or "no verdict"
                failed.append(msg)
                out.append((None, f"judge {judge.name}: {msg}"))
            elif self.config.soft_judge and v.p_yes is not None:
                out.append((float(v.p_yes), None))
            else:
                out.append((1.0 if v.match else 0.0, None))
        self.counters["judge_unscorable"] += len(failed)
        if failed and len(failed) / len(answers) > self.config.max_unscorable_fraction:
            raise JudgeFailedError(
                f"judge {judge.name}: {len(failed)} of {len(answers)} answers in this batch could not be "
                f"judged (more than max_unscorable_fraction={self.config.max_unscorable_fraction:g}); "
                f"first error: {failed[0]}"
            )
        return out

    def _embed(self, answers: list[str], gt_answers: list[str]) -> list[tuple[float | None, str | None]]:
        """The embedding accuracy of each (answer, ground truth) pair."""
        from medix_r1.embed.accuracy import embedding_accuracy

        ecfg = self.config.embed or EmbedConfig()
        acc = embedding_accuracy(self.embedder, answers, gt_answers, threshold=ecfg.threshold, soft=ecfg.soft)
        return [(float(a), None) for a in acc.tolist()]

    # -- TRL ---------------------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        """TRL's reward-function contract: ``overall`` per completion (None when unscorable)."""
        texts = completion_texts(completions)
        gts = ground_truth_column(kwargs, len(texts))
        columns = _trl_columns(prompts, kwargs) if self.extras else None
        return [s["overall"] for s in self.score(texts, gts, columns)]

    def summary(self) -> dict[str, float]:
        """Mean of each component over the last batch (items where it was scored), for logging."""
        out: dict[str, float] = {}
        for k in self.columns:
            vals = [s[k] for s in self.last_scores if s[k] is not None]
            if vals:
                out[k] = float(np.mean(vals))
        return out

    def close(self) -> None:
        """Release the judge's model (when it has one)."""
        j = self._judge
        if j is not None and self._own_judge and hasattr(j, "close"):
            j.close()
        if self._own_judge:
            self._judge = None
