"""YES/NO judges: in-process llama.cpp (one-token decision from logits) and OpenAI-compatible servers.

Both share the exact-match short-circuit, de-duplication within a batch and an LRU cache across batches;
an item that cannot be judged is a Verdict with ``match=None`` and the reason, never an exception or False.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from medix_r1.errors import BackendError
from medix_r1.judge.prompt import (
    SYSTEM,
    USER_TEMPLATE,
    build_messages,
    classify_reply_token,
    parse_reply,
    sanitize,
)

__all__ = [
    "Judge",
    "JudgeConfig",
    "LocalJudge",
    "RemoteJudge",
    "Verdict",
    "VerdictCache",
    "make_judge",
]

SOURCES = ("exact", "cache", "judge")


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


@dataclass
class JudgeConfig:
    """Which judge to use and how to talk to it (exactly one of ``model`` / ``url``)."""

    model: str | None = field(
        default=None, metadata={"help": "GGUF file of the judge model, run in-process with llama.cpp"}
    )
    url: str | None = field(
        default=None,
        metadata={"help": "base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8085/v1"},
    )
    name: str | None = field(default=None, metadata={"help": "model id on that server (required with url)"})
    n_ctx: int = field(
        default=1024, metadata={"help": "llama.cpp context size in tokens for the in-process judge"}
    )
    n_gpu_layers: int = field(
        default=0, metadata={"help": "layers to offload to the GPU for the in-process judge (-1: all)"}
    )
    n_threads: int | None = field(
        default=None, metadata={"help": "CPU threads for the in-process judge (default: llama.cpp's choice)"}
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once against the server"})
    timeout: float = field(default=30.0, metadata={"help": "seconds to wait for one server reply"})
    max_retries: int = field(
        default=2, metadata={"help": "retries of a failed server request (exponential backoff)"}
    )
    cache_size: int = field(
        default=65536, metadata={"help": "verdicts kept in the LRU cache across batches (0: no cache)"}
    )

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.url):
            raise ValueError("judge: give exactly one of judge.model (a local .gguf) or judge.url (a server)")
        if self.url and not self.name:
            raise ValueError("judge.url needs judge.name, the model id served there (see GET <url>/models)")
        if self.n_ctx < 256:
            raise ValueError(f"judge.n_ctx must be >= 256, got {self.n_ctx}")
        if self.n_threads is not None and self.n_threads < 1:
            raise ValueError(f"judge.n_threads must be >= 1, got {self.n_threads}")
        if self.concurrency < 1:
            raise ValueError(f"judge.concurrency must be >= 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise ValueError(f"judge.timeout must be > 0, got {self.timeout}")
        if self.max_retries < 0 or self.cache_size < 0:
            raise ValueError("judge.max_retries and judge.cache_size must be >= 0")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help string (for CLIs and generated docs)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


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


class _CachingJudge:
    """Exact-match short-circuit, de-duplication and the cache; subclasses judge the unique rest."""

    name: str

    def __init__(self, cache_size: int) -> None:
        self.cache = VerdictCache(cache_size)
        self.model_calls = 0  # unique pairs sent to the model, for tests and benchmarks

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, pair in enumerate(pairs):
            try:
                pred, gt = pair
            except (TypeError, ValueError):
                out[i] = Verdict(None, error=f"item {i} is not a (predicted, ground truth) pair: {pair!r}")
                continue
            if not isinstance(pred, str) or not isinstance(gt, str):
                out[i] = Verdict(
                    None,
                    error=f"item {i}: answers must be strings, got {type(pred).__name__}, "
                    f"{type(gt).__name__}",
                )
                continue
            pred, gt = pred.strip(), gt.strip()
            if not gt:
                out[i] = Verdict(None, error="empty ground truth: nothing to compare with")
            elif pred == gt:
                out[i] = Verdict(True, 1.0, source="exact")
            elif not pred:
                out[i] = Verdict(False, 0.0, source="exact")  # an empty answer never matches a non-empty one
            elif not (key := (sanitize(pred), sanitize(gt)))[1]:
                out[i] = Verdict(None, error="the ground truth is empty once control text is removed")
            elif not key[0]:
                out[i] = Verdict(False, 0.0, source="exact")  # nothing but control text: no answer
            elif key in todo:
                todo[key].append(i)
            elif (hit := self.cache.get(key)) is not None:
                out[i] = Verdict(hit.match, hit.p_yes, source="cache")
            else:
                # Keyed on what the judge will see: answers that differ only in spacing, invisible or control
                # characters make the same prompt, so they are judged once.
                todo[key] = [i]
        if todo:
            keys = list(todo)
            self.model_calls += len(keys)
            for key, verdict in zip(keys, self._judge_unique(keys)):
                for i in todo[key]:
                    out[i] = verdict
        return [v if v is not None else Verdict(None, error="internal: not judged") for v in out]

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for distinct, non-trivial pairs; must put decided verdicts in ``self.cache``."""
        raise NotImplementedError


def _p_yes(yes_logps: Sequence[float], no_logps: Sequence[float]) -> float | None:
    """P(YES) among {YES, NO}, summing the mass of every token spelling each word."""
    if not yes_logps and not no_logps:
        return None
    ly = float(np.logaddexp.reduce(yes_logps)) if len(yes_logps) else -math.inf
    ln = float(np.logaddexp.reduce(no_logps)) if len(no_logps) else -math.inf
    if math.isnan(ly) or math.isnan(ln) or (ly == -math.inf and ln == -math.inf):
        return None
    return 1.0 / (1.0 + math.exp(min(700.0, ln - ly))) if ly != -math.inf else 0.0


# Sentinels for the answer slots; sanitize() removes control characters, so answers cannot contain them.
_GT_SLOT, _PRED_SLOT = "\x00GT\x00", "\x00PRED\x00"
_YES = ("YES", "Yes", "yes", " YES", " Yes", " yes")
_NO = ("NO", "No", "no", " NO", " No", " no")


class LocalJudge(_CachingJudge):
    """The judge model in-process (llama.cpp). One forward pass per unique pair, no sampling: the verdict is
    read from the next-token logits of the YES vs NO tokens.

    The prompt's fixed part is tokenized once; answers are tokenized with special-token parsing off, so even
    a ``<|im_start|>`` that survived sanitising would stay plain text. Pairs are evaluated sorted by ground
    truth, so a group of completions for one question also shares the ground truth's KV cache.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 1024,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        cache_size: int = 65536,
    ) -> None:
        from medix_r1.llm import LlamaCppChat

        super().__init__(cache_size)
        self.chat = LlamaCppChat(model_path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
        self.name = self.chat.name
        self.yes_ids = self._first_tokens(_YES, True)
        self.no_ids = self._first_tokens(_NO, False)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise BackendError(f"{self.name}: cannot find distinct YES/NO tokens in this model's vocabulary")
        user = USER_TEMPLATE.format(ground_truth=_GT_SLOT, predicted=_PRED_SLOT)
        rendered = self.chat.format_prompt(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        )
        if rendered.count(_GT_SLOT) == 1 and rendered.count(_PRED_SLOT) == 1:
            head, rest = rendered.split(_GT_SLOT)
            mid, tail = rest.split(_PRED_SLOT)
            self._parts = tuple(self.chat.tokenize(p, special=True) for p in (head, mid, tail))
        else:  # a template that rewrites message text: render each prompt whole (sanitising still applies)
            self._parts = None

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

    def _tokens_and_cuts(self, predicted: str, ground_truth: str) -> tuple[list[int], list[int] | None]:
        # Cuts after the fixed head and after the ground truth: the KV cache is reused (and the prompt split)
        # only there, so a pair gets the same logits whatever was judged before it.
        if self._parts is None:
            prompt = self.chat.format_prompt(build_messages(predicted, ground_truth))
            return self.chat.tokenize(prompt, special=True), None
        head, mid, tail = self._parts
        gt = self.chat.tokenize(sanitize(ground_truth), special=False)
        pred = self.chat.tokenize(sanitize(predicted), special=False)
        return head + gt + mid + pred + tail, [len(head), len(head) + len(gt) + len(mid)]

    def prompt_text(self, predicted: str, ground_truth: str) -> str:
        """The prompt as text (for inspection; special tokens appear as their text)."""
        return self.chat.format_prompt(build_messages(predicted, ground_truth))

    def p_yes(self, predicted: str, ground_truth: str) -> float:
        """P(YES) among {YES, NO} for one pair (no cache, no short-circuit)."""
        tokens, cuts = self._tokens_and_cuts(predicted, ground_truth)
        logits = self.chat.eval_prompt(tokens, cuts=cuts)
        p = _p_yes(logits[self.yes_ids].tolist(), logits[self.no_ids].tolist())
        if p is None:
            raise BackendError(f"{self.name}: the model produced no usable YES/NO logits (NaN)")
        return p

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        verdicts: dict[tuple[str, str], Verdict] = {}
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            try:
                p = self.p_yes(*key)
            except BackendError as e:
                verdicts[key] = Verdict(None, error=str(e))
                continue
            except Exception as e:  # one bad item must not sink the batch
                verdicts[key] = Verdict(None, error=f"{self.name}: {type(e).__name__}: {e}")
                continue
            verdicts[key] = v = Verdict(p > 0.5, p, source="judge")
            self.cache.put(key, v)
        return [verdicts[k] for k in keys]

    def close(self) -> None:
        self.chat.close()


class RemoteJudge(_CachingJudge):
    """The judge behind an OpenAI-compatible server (vLLM, llama.cpp's server, ``medix judge serve``).

    Asks for one token at temperature 0 with ``logprobs``/``top_logprobs=10`` and reads P(YES) from the first
    token's alternatives; servers without log-probs are read from the text (it must start with YES or NO).
    Requests run concurrently; each verdict is cached as soon as it arrives, so a server that dies mid-batch
    loses nothing already judged.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 2,
        cache_size: int = 65536,
        backoff: float = 0.5,
    ) -> None:
        from medix_r1.llm import OpenAIChat

        super().__init__(cache_size)
        self.client = OpenAIChat(
            url, model, timeout=timeout, max_retries=max_retries, backoff=backoff, concurrency=concurrency
        )
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
        if isinstance(content, list) and content and isinstance(content[0], dict):
            first = content[0]
            alts = first.get("top_logprobs") or [first]
            yes, no = [], []
            for a in alts:
                if not isinstance(a, dict) or not isinstance(a.get("logprob"), (int, float)):
                    continue
                c = classify_reply_token(str(a.get("token", "")))
                if c is not None:
                    (yes if c else no).append(float(a["logprob"]))
            p = _p_yes(yes, no)
            if p is not None:
                return Verdict(p > 0.5, p, source="judge")
        text = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        decision = parse_reply(text or "")
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


def make_judge(config: JudgeConfig) -> Judge:
    """The judge ``config`` describes (a missing GGUF raises MissingModelError)."""
    if config.model:
        return LocalJudge(
            config.model,
            n_ctx=config.n_ctx,
            n_gpu_layers=config.n_gpu_layers,
            n_threads=config.n_threads,
            cache_size=config.cache_size,
        )
    assert config.url is not None and config.name is not None
    return RemoteJudge(
        config.url,
        config.name,
        concurrency=config.concurrency,
        timeout=config.timeout,
        max_retries=config.max_retries,
        cache_size=config.cache_size,
    )
