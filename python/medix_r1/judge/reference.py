"""The authors' verdict rule for ``mode="reference"``: their request to the judge, their reading of it.

The MediX-R1 authors' reward (training/examples/reward_function/medical.py of mbzuai-oryx/MediX-R1) sends one
user message (:data:`REFERENCE_PROMPT` with the predicted answer and the ground truth's answer filled in, as
they are: no sanitising, no trimming) and asks for at most :data:`MAX_TOKENS` tokens at temperature 0 and
top-p 1 with thinking disabled; the verdict is YES iff ``"YES"`` occurs anywhere in the upper-cased reply
(:func:`reply_says_yes`): a reply that repeats the answer without a YES is a NO, however likely YES was.
:class:`ReferenceJudge` asks exactly that, in-process (greedy decoding of the same tokens ``medix judge
serve`` would feed the model) or from a server (their request body; ``logprobs`` are added only when the soft
score is wanted). ``P(YES)`` of the first reply token stays available as the soft score.

What stays ours on purpose: in-process, the answer is still tokenized with special-token parsing off (text
that looks like a control token stays text); a pair the backend cannot judge (an outage, a context overflow,
an HTTP error) is unscorable, where their code scores 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medix_r1.errors import BackendError
from medix_r1.judge.core import Verdict, _CachingJudge, _p_yes
from medix_r1.judge.prompt import classify_reply_token
from medix_r1.llm import LlamaCppChat, OpenAIChat

__all__ = ["MAX_TOKENS", "REFERENCE_PROMPT", "ReferenceJudge", "reference_messages", "reply_says_yes"]

# The authors' judge prompt, reproduced verbatim: reference mode exists to reproduce their numbers, and the
# judge's reply depends on every character of it (the line breaks, no space after the colons, the final
# newline).
REFERENCE_PROMPT = (
    "You are a helpful assistant.\n"
    'Given a predicted answer and the ground truth answer, respond with exactly "YES" if the content '
    'matches, otherwise respond with "NO".\n'
    'Start your response with "YES" or "NO" in uppercase.\n'
    "\n"
    "Predicted:{predicted}\n"
    "Ground Truth:{ground_truth}\n"
)
MAX_TOKENS = 4
TEMPERATURE = 0.0
TOP_P = 1.0
TOP_LOGPROBS = 20  # alternatives read for P(YES) (the most OpenAI-compatible servers allow)


def reference_messages(predicted: str, ground_truth: str) -> list[dict]:
    """Their chat messages for one pair: a single user message, the texts as given."""
    text = REFERENCE_PROMPT.format(predicted=predicted, ground_truth=ground_truth)
    return [{"role": "user", "content": text}]


def reply_says_yes(reply: str) -> bool:
    """Their reading of the judge's reply: ``"YES"`` anywhere in it, case-insensitively."""
    return "YES" in reply.strip().upper()


def request_body(predicted: str, ground_truth: str, *, logprobs: bool = False) -> dict:
    """Their request body (less ``model``, which the client fills in); ``logprobs`` adds the first token's
    alternatives, for P(YES), without changing what is generated."""
    body: dict[str, Any] = {
        "messages": reference_messages(predicted, ground_truth),
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
        "chat_template_kwargs": {"enable_thinking": False},
        "top_p": TOP_P,
    }
    if logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = TOP_LOGPROBS
    return body


def _p_yes_from_alternatives(entries: Any) -> float | None:
    """P(YES) among {YES, NO} from the first generated token's ``top_logprobs`` (OpenAI's layout)."""
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


class ReferenceJudge(_CachingJudge):
    """The authors' verdict rule on an in-process llama.cpp model or an OpenAI-compatible server.

    ``match`` is :func:`reply_says_yes` of the reply to :func:`request_body`; ``p_yes`` is P(YES) against NO
    for the first reply token (in-process always; from a server only with ``logprobs=True``, which adds
    ``logprobs``/``top_logprobs`` to the request). Pairs are sent exactly as given: no trimming, no
    exact-match short-circuit, an empty ground truth included (the composite reward decides exact matches and
    invalid answers before asking, as their code does). Identical pairs are asked once per batch and cached.
    """

    def __init__(
        self, backend: LlamaCppChat | OpenAIChat, *, cache_size: int = 65536, logprobs: bool = False
    ) -> None:
        super().__init__(cache_size)
        if not isinstance(backend, (LlamaCppChat, OpenAIChat)):
            raise TypeError(f"backend must be a LlamaCppChat or an OpenAIChat, got {type(backend).__name__}")
        self.backend = backend
        self.logprobs = logprobs
        self.name = f"{backend.name} (reference verdict rule)"

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
            key = (pred, gt)
            if key in todo:
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

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        if isinstance(self.backend, LlamaCppChat):
            return [self._local(p, g) for p, g in keys]
        return self._remote(keys)

    def reply(self, predicted: str, ground_truth: str) -> tuple[str, float | None]:
        """The in-process judge's reply text and P(YES) for one pair (no cache)."""
        from medix_r1.judge.server import generate

        chat = self.backend
        assert isinstance(chat, LlamaCppChat)
        tokens, _ = chat.chat_tokens(reference_messages(predicted, ground_truth))
        # The same tokens and greedy decoding as `medix judge serve` answering their request, so the
        # in-process and served verdicts are the same.
        gen = generate(
            chat,
            tokens=tokens,
            max_tokens=MAX_TOKENS,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            top_logprobs=TOP_LOGPROBS,
        )
        return gen.text, _p_yes_from_alternatives(gen.logprobs)

    def _local(self, predicted: str, ground_truth: str) -> Verdict:
        try:
            text, p = self.reply(predicted, ground_truth)
        except BackendError as e:  # this pair cannot be judged (context overflow, decode failure)
            return Verdict(None, error=str(e))
        v = Verdict(reply_says_yes(text), p, source="judge")
        self.cache.put((predicted, ground_truth), v)
        return v

    def _remote(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        client = self.backend
        assert isinstance(client, OpenAIChat)
        out: list[Verdict | None] = [None] * len(keys)

        def done(i: int, r: dict | BackendError) -> None:
            v = Verdict(None, error=str(r)) if isinstance(r, BackendError) else self._from_reply(r)
            out[i] = v
            self.cache.put(keys[i], v)

        client.request_many([request_body(p, g, logprobs=self.logprobs) for p, g in keys], on_result=done)
        return [v if v is not None else Verdict(None, error=f"{client.url}: no reply") for v in out]

    def _from_reply(self, reply: dict) -> Verdict:
        url = self.backend.url if isinstance(self.backend, OpenAIChat) else self.name
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Verdict(None, error=f"{url}: reply without choices[0].message.content: {str(reply)[:300]}")
        if text is None:
            text = ""
        if not isinstance(text, str):
            return Verdict(None, error=f"{url}: choices[0].message.content is not text: {str(text)[:300]}")
        lp = choice.get("logprobs") if isinstance(choice, dict) else None
        p = _p_yes_from_alternatives(lp.get("content")) if isinstance(lp, dict) else None
        return Verdict(reply_says_yes(text), p, source="judge")

    def close(self) -> None:
        if isinstance(self.backend, LlamaCppChat):
            self.backend.close()
