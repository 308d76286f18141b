"""YES/NO judges: in-process llama.cpp (one-token decision from logits) and OpenAI-compatible servers.

Both share the exact-match short-circuit, de-duplication within a batch and an LRU cache across batches;
an item the backend cannot judge (a :class:`~medix_r1.errors.BackendError`: an outage, a context overflow) is
a Verdict with ``match=None`` and the reason, never False. Any other exception is a bug and propagates.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medix_r1.config import check_fields, option
from medix_r1.errors import BackendError
from medix_r1.judge.prompt import (
    build_messages,
    classify_reply_token,
    parse_reply,
    sanitize,
)
from medix_r1.llm import BackendConfig, Choice, LlamaCppChat, OpenAIChat, open_backend, open_local

__all__ = [
    "Judge",
    "JudgeConfig",
    "LocalJudge",
    "RemoteJudge",
    "Verdict",
    "VerdictCache",
    "make_judge",
]


@dataclass(frozen=True)
class Verdict:
    """Whether a predicted answer matches the ground truth.

    ``match`` is None when the pair could not be judged (``error`` says why). ``p_yes`` is the judge's
    probability of YES against NO when known. ``source``: ``exact`` (decided by rule, no model call),
    ``cache`` (an earlier verdict) or ``judge`` (the model was asked now).
    """

    match: bool | None
    p_yes: float | None = None
    error: str | None = None
    source: str = "judge"


def checked_pair(i: int, pair: Any) -> tuple[str, str] | Verdict:
    """Item ``i`` of a judge's input as (predicted, ground truth) strings, or the Verdict saying why not."""
    try:
        pred, gt = pair
    except (TypeError, ValueError):
        return Verdict(None, error=f"item {i} is not a (predicted, ground truth) pair: {pair!r}")
    if not isinstance(pred, str) or not isinstance(gt, str):
        return Verdict(
            None, error=f"item {i}: answers must be strings, got {type(pred).__name__}, {type(gt).__name__}"
        )
    return pred, gt


@dataclass
class JudgeConfig(BackendConfig):
    """Which judge to use and how to talk to it (exactly one of ``model`` / ``url``): a
    :class:`~medix_r1.llm.BackendConfig` (its options and their one default each) plus the verdict cache."""

    cache_size: int = option(65536, "verdicts kept in the LRU cache across batches (0: no cache)", ge=0)
    reference_prompt: str | None = option(
        None,
        "reference mode: UTF-8 file holding the judge prompt template ({predicted}, {ground_truth} once "
        "each), e.g. a copy of the authors' prompt (default: this project's own wording)",
    )

    _section = "judge"

    def __post_init__(self) -> None:
        check_fields(self, self._section)
        super().__post_init__()
        if self.reference_prompt is not None:
            from medix_r1.judge.reference import load_reference_prompt

            load_reference_prompt(self.reference_prompt)  # checked on load: a clear error now, not mid-run


@runtime_checkable
class Judge(Protocol):
    """Judges (predicted answer, ground-truth answer) pairs; one Verdict per pair, in order."""

    name: str

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]: ...


class VerdictCache:
    """A thread-safe LRU map from (predicted, ground truth) to a decided Verdict."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._d: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Verdict | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: tuple[str, str], verdict: Verdict) -> None:
        if verdict.match is None or self.size == 0:
            return  # an unscorable pair is asked again next time
        with self._lock:
            self._d[key] = verdict
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d


class CachingJudge:
    """Exact-match short-circuit (:meth:`_key`), de-duplication and the cache; subclasses judge the unique
    rest (:meth:`_judge_unique`) and may decide differently what needs no model (:meth:`_key`)."""

    name: str

    def __init__(self, cache_size: int) -> None:
        self.cache = VerdictCache(cache_size)
        self.model_calls = 0  # unique pairs sent to the model, for tests and benchmarks

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, pair in enumerate(pairs):
            key = self._key(i, pair)
            if isinstance(key, Verdict):
                out[i] = key
            elif key in todo:
                todo[key].append(i)
            elif (hit := self.cache.get(key)) is not None:
                out[i] = Verdict(hit.match, hit.p_yes, source="cache")
            else:
                todo[key] = [i]
        if todo:
            keys = list(todo)
            self.model_calls += len(keys)
            for key, verdict in zip(keys, self._judge_unique(keys)):
                for i in todo[key]:
                    out[i] = verdict
        return [v if v is not None else Verdict(None, error="internal: not judged") for v in out]

    def _key(self, i: int, pair: Any) -> Verdict | tuple[str, str]:
        """The verdict of pair ``i`` when it needs no model (bad, empty, exact match), else its cache key.

        Keyed on what the judge will see: answers that differ only in spacing, invisible or control
        characters make the same prompt, so they are judged once."""
        checked = checked_pair(i, pair)
        if isinstance(checked, Verdict):
            return checked
        pred, gt = checked
        pred, gt = pred.strip(), gt.strip()
        if not gt:
            return Verdict(None, error="empty ground truth: nothing to compare with")
        if pred == gt:
            return Verdict(True, 1.0, source="exact")
        if not pred:
            return Verdict(False, 0.0, source="exact")  # an empty answer never matches a non-empty one
        key = (sanitize(pred), sanitize(gt))
        if not key[1]:
            return Verdict(None, error="the ground truth is empty once control text is removed")
        if not key[0]:
            return Verdict(False, 0.0, source="exact")  # nothing but control text: no answer
        return key

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for distinct, non-trivial pairs; must put decided verdicts in ``self.cache``."""
        raise NotImplementedError


# Every spelling of the two words whose first token may start the reply.
_YES = ("YES", "Yes", "yes", " YES", " Yes", " yes")
_NO = ("NO", "No", "no", " NO", " No", " no")


def p_yes_from_alternatives(entries: Any) -> float | None:
    """P(YES) among {YES, NO} from the first generated token's ``top_logprobs`` (OpenAI's layout of a reply's
    ``logprobs.content``); None when they name neither word."""
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    alts = entries[0].get("top_logprobs") or [entries[0]]
    yes: list[float] = []
    no: list[float] = []
    for a in alts if isinstance(alts, list) else []:
        if not isinstance(a, dict) or not isinstance(a.get("logprob"), (int, float)):
            continue
        c = classify_reply_token(str(a.get("token", "")))
        if c is not None:
            (yes if c else no).append(float(a["logprob"]))
    return _p_yes(yes, no)


def _p_yes(yes_logps: Sequence[float], no_logps: Sequence[float]) -> float | None:
    """P(YES) among {YES, NO}, summing the mass of every token spelling each word."""
    if not yes_logps and not no_logps:
        return None
    ly = float(np.logaddexp.reduce(yes_logps)) if len(yes_logps) else -math.inf
    ln = float(np.logaddexp.reduce(no_logps)) if len(no_logps) else -math.inf
    return Choice({"yes": ly, "no": ln}).prob("yes")


class LocalJudge(CachingJudge):
    """The judge model in-process (llama.cpp). One forward pass per unique pair, no sampling: the verdict is
    the backend's :meth:`~medix_r1.llm.LlamaCppChat.choose` between the YES and NO tokens.

    The prompt is :meth:`~medix_r1.llm.LlamaCppChat.chat_tokens` of :func:`build_messages` with the user
    text split into fixed instruction / ground truth / fixed tag / answer pieces: no answer can become a
    control token, and the fixed prefix tokenizes the same for every pair. Pairs are evaluated sorted by
    ground truth, so a group of completions for one question also shares the ground truth's KV cache.

    ``model`` is a GGUF path (``backend_kw``: :class:`~medix_r1.llm.BackendConfig` fields such as ``n_ctx``)
    or an open backend.
    """

    def __init__(
        self, model: str | Path | LlamaCppChat, *, cache_size: int = 65536, **backend_kw: Any
    ) -> None:
        super().__init__(cache_size)
        if isinstance(model, LlamaCppChat) and backend_kw:
            raise TypeError(f"backend options {sorted(backend_kw)} go with a model path, not a backend")
        self.chat = open_local(model, **backend_kw)
        self.name = self.chat.name
        self.options = {"yes": self._first_tokens(_YES, True), "no": self._first_tokens(_NO, False)}
        self.yes_ids, self.no_ids = self.options["yes"], self.options["no"]
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise BackendError(f"{self.name}: cannot find distinct YES/NO tokens in this model's vocabulary")
        self.prompt_tokens("x", "y")  # a template we cannot splice into fails here, not on the first batch

    def _first_tokens(self, spellings: Sequence[str], want: bool) -> list[int]:
        ids: list[int] = []
        for s in spellings:
            toks = self.chat.tokenize(s, special=False)
            if toks and classify_reply_token(self.chat.token_text(toks[0])) is want and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    def prompt_tokens(self, predicted: str, ground_truth: str) -> list[int]:
        """The token ids the model sees for this pair (the fixed prefix first)."""
        return self._tokens_and_cuts(predicted, ground_truth)[0]

    def _tokens_and_cuts(self, predicted: str, ground_truth: str) -> tuple[list[int], list[int]]:
        # Cuts at the ground truth and at the answer: the KV cache is reused (and the prompt split) only
        # there, so a pair gets the same logits whatever was judged before it.
        tokens, starts = self.chat.chat_tokens(build_messages(predicted, ground_truth, pieces=True))
        return tokens, [starts[-3], starts[-1]]  # pieces: ..., ground truth, closing tag + answer tag, answer

    def p_yes(self, predicted: str, ground_truth: str) -> float:
        """P(YES) among {YES, NO} for one pair (no cache, no short-circuit)."""
        tokens, cuts = self._tokens_and_cuts(predicted, ground_truth)
        p = self.chat.choose(tokens, self.options, cuts=cuts).prob("yes")
        if p is None:
            raise BackendError(f"{self.name}: the model produced no usable YES/NO logits (NaN)")
        return p

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        verdicts: dict[tuple[str, str], Verdict] = {}
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            try:
                p = self.p_yes(*key)
            except BackendError as e:  # this pair cannot be judged (context overflow, decode failure)
                verdicts[key] = Verdict(None, error=str(e))
                continue
            verdicts[key] = v = Verdict(p > 0.5, p, source="judge")
            self.cache.put(key, v)
        return [verdicts[k] for k in keys]

    def close(self) -> None:
        self.chat.close()


class RemoteJudge(CachingJudge):
    """The judge behind an OpenAI-compatible server (vLLM, llama.cpp's server, ``medix judge serve``).

    Asks for one token at temperature 0 with ``logprobs``/``top_logprobs=10`` and reads P(YES) from the first
    token's alternatives; servers without log-probs are read from the text (it must start with YES or NO).
    Requests run concurrently; each verdict is cached as soon as it arrives, so a server that dies mid-batch
    loses nothing already judged. ``url`` may also be an open :class:`~medix_r1.llm.OpenAIChat`.
    """

    def __init__(
        self,
        url: str | OpenAIChat,
        model: str | None = None,
        *,
        concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 2,
        cache_size: int = 65536,
        backoff: float = 0.5,
        api_key_env: str | None = None,
        batch_timeout: float | None = None,
    ) -> None:
        super().__init__(cache_size)
        if isinstance(url, OpenAIChat):
            self.client = url
        else:
            config = BackendConfig(
                url=url,
                name=model,
                timeout=timeout,
                max_retries=max_retries,
                concurrency=concurrency,
                api_key_env=api_key_env,
                batch_timeout=batch_timeout,
            )
            client = open_backend(config, backoff=backoff)  # checked as every backend option is
            assert isinstance(client, OpenAIChat)
            self.client = client
        self.name = self.client.name

    @staticmethod
    def request_body(predicted: str, ground_truth: str) -> dict:
        return {
            "messages": build_messages(predicted, ground_truth),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 10,
            # Qwen3-style templates would otherwise open a thinking block; ignored by servers without it.
            "chat_template_kwargs": {"enable_thinking": False},
        }

    def verdict_from_reply(self, reply: dict) -> Verdict:
        try:
            choice = reply["choices"][0]
        except (KeyError, IndexError, TypeError):
            return Verdict(None, error=f"{self.client.url}: reply without choices: {str(reply)[:300]}")
        lp = choice.get("logprobs") if isinstance(choice, dict) else None
        content = lp.get("content") if isinstance(lp, dict) else None
        if (p := p_yes_from_alternatives(content)) is not None:
            return Verdict(p > 0.5, p, source="judge")
        message = choice.get("message") if isinstance(choice, dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        decision = parse_reply(text if isinstance(text, str) else "")
        if decision is None:
            return Verdict(None, error=f"{self.client.url}: the judge replied neither YES nor NO: {text!r}")
        return Verdict(decision, None, source="judge")

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(keys)

        def done(i: int, r: dict | BackendError) -> None:
            v = Verdict(None, error=str(r)) if isinstance(r, BackendError) else self.verdict_from_reply(r)
            out[i] = v
            self.cache.put(keys[i], v)

        self.client.request_many([self.request_body(p, g) for p, g in keys], on_result=done)
        return [v if v is not None else Verdict(None, error=f"{self.client.url}: no reply") for v in out]


def make_judge(
    config: JudgeConfig, *, supervised: bool = False, rule: str = "strict", logprobs: bool = False
) -> Judge:
    """The judge ``config`` describes, on the backend :func:`~medix_r1.llm.open_backend` builds from it (a
    missing GGUF raises MissingModelError). ``supervised``: a local GGUF judge runs in a worker process
    (:class:`~medix_r1.judge.supervised.SupervisedJudge`), so a native crash is an outage, not the end of
    the caller; same verdicts. ``MEDIX_JUDGE_IN_PROCESS=1`` keeps it in-process anyway (debugging).
    ``rule="reference"``: the authors' verdict rule (:class:`~medix_r1.judge.reference.ReferenceJudge`;
    ``logprobs`` asks a server for P(YES) too; ``config.reference_prompt`` is the prompt template it asks
    with). A server judge's model name is
    checked against the server's ``/models`` list here, once."""
    if rule not in ("strict", "reference"):
        raise ValueError(f"rule must be 'strict' or 'reference', got {rule!r}")
    if supervised and config.model and not config.url and _may_supervise():
        from medix_r1.judge.supervised import SupervisedJudge

        return SupervisedJudge(config, rule=rule)
    backend = open_backend(config)
    if isinstance(backend, OpenAIChat):
        backend.check_model()
    if rule == "reference":
        from medix_r1.judge.reference import ReferenceJudge, load_reference_prompt

        prompt = load_reference_prompt(config.reference_prompt) if config.reference_prompt else None
        return ReferenceJudge(backend, cache_size=config.cache_size, logprobs=logprobs, prompt=prompt)
    if isinstance(backend, LlamaCppChat):
        return LocalJudge(backend, cache_size=config.cache_size)
    return RemoteJudge(backend, cache_size=config.cache_size)


def _may_supervise() -> bool:
    import os

    return os.name == "posix" and os.environ.get("MEDIX_JUDGE_IN_PROCESS", "") not in ("1", "true", "yes")
