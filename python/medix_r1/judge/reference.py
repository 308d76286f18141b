"""The authors' verdict rule for ``mode="reference"``: their request to the judge, their reading of it.

The MediX-R1 authors' reward (training/examples/reward_function/medical.py of mbzuai-oryx/MediX-R1) sends one
user message (a prompt with the predicted answer and the ground truth's answer filled in, as they are: no
sanitising, no trimming) and asks for at most :data:`MAX_TOKENS` tokens at temperature 0 and
top-p 1 with thinking disabled; the verdict is YES iff ``"YES"`` occurs anywhere in the upper-cased reply
(:func:`reply_says_yes`): a reply that repeats the answer without a YES is a NO, however likely YES was.
:class:`ReferenceJudge` asks exactly that, in-process (greedy decoding of the same tokens ``medix judge
serve`` would feed the model) or from a server (their request body; ``logprobs`` are added only when the soft
score is wanted). ``P(YES)`` of the first reply token stays available as the soft score.

The prompt's wording is not shipped here: :data:`REFERENCE_PROMPT` is this project's own wording of the same
request. Their exact text can be supplied as a template file (``judge.reference_prompt``, ``--judge-reference-
prompt FILE``, ``MEDIX_REFERENCE_PROMPT``; :func:`load_reference_prompt`), and only then are their numbers
reproduced exactly (the judge's reply depends on every character of the prompt).

What stays ours on purpose: in-process, the answer is still tokenized with special-token parsing off (text
that looks like a control token stays text); a pair the backend cannot judge (an outage, a context overflow,
an HTTP error) is unscorable, where their code scores 0.0.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any

from medix_r1.errors import BackendError, ConfigError
from medix_r1.judge.core import CachingJudge, Verdict, checked_pair, p_yes_from_alternatives
from medix_r1.llm import LlamaCppChat, OpenAIChat

__all__ = [
    "MAX_TOKENS",
    "REFERENCE_PROMPT",
    "ReferenceJudge",
    "fill_prompt",
    "load_reference_prompt",
    "reference_messages",
    "reply_says_yes",
]

log = logging.getLogger("medix_r1.judge")

# This project's own wording of the authors' request (one user message, a bare YES or NO wanted). Their exact
# text comes from a template file (load_reference_prompt); the rest of their rule below is theirs.
REFERENCE_PROMPT = (
    "Decide whether two answers to a medical question say the same thing.\n"
    "Reply with the single word YES when they agree and with the single word NO when they do not; "
    "write nothing else.\n"
    "\n"
    "Answer to check: {predicted}\n"
    "Correct answer: {ground_truth}\n"
)
PLACEHOLDERS = ("{predicted}", "{ground_truth}")
MAX_TOKENS = 4
TEMPERATURE = 0.0
TOP_P = 1.0
TOP_LOGPROBS = 20  # alternatives read for P(YES) (the most OpenAI-compatible servers allow)


_PLACEHOLDER = re.compile(r"\{predicted\}|\{ground_truth\}")


def check_reference_prompt(template: str, where: str = "judge.reference_prompt") -> str:
    """``template`` itself when it holds ``{predicted}`` and ``{ground_truth}`` exactly once each (any other
    braces are kept as text); a ConfigError naming ``where`` otherwise (its message kept whole when a
    config section prefixes it: no ``allowed``)."""
    for ph in PLACEHOLDERS:
        n = template.count(ph)
        if n != 1:
            raise ConfigError(
                f"{where}: the template must contain {ph} exactly once, found it {n} times",
                key="judge.reference_prompt",
                value=where,
            )
    return template


def load_reference_prompt(path: str | Path) -> str:
    """The judge prompt template in the UTF-8 text file ``path`` (kept exactly: no stripping, no newline
    translation), checked by :func:`check_reference_prompt`; a ConfigError says what is wrong and where."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"judge.reference_prompt: {path}: no such file (give a text file holding the judge prompt "
            "template, e.g. a copy of the prompt in the authors' medical.py)",
            key="judge.reference_prompt",
            value=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"judge.reference_prompt: {path}: cannot read it as UTF-8 text: {e}",
            key="judge.reference_prompt",
            value=str(path),
        ) from None
    return check_reference_prompt(text, f"judge.reference_prompt {path}")


def fill_prompt(template: str, predicted: str, ground_truth: str) -> str:
    """``template`` with its two placeholders replaced in one pass: braces elsewhere stay as they are, and a
    placeholder inside an answer is text, never substituted again."""
    values = {"{predicted}": predicted, "{ground_truth}": ground_truth}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], template)


_warned = False
_warn_lock = threading.Lock()


def warn_own_wording() -> None:
    """Once per process: reference mode is judging with this project's wording, not the authors' text."""
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    line = (
        "reference mode: the judge's verdicts follow the MediX-R1 authors' rule but with this project's own "
        "prompt wording; their numbers are reproduced exactly only with --judge-reference-prompt FILE "
        "(judge.reference_prompt, MEDIX_REFERENCE_PROMPT), FILE holding a copy of the prompt in their "
        "medical.py"
    )
    if log.hasHandlers():
        log.warning(line)
    else:  # no logging configured (the CLI): one line on stderr, in the CLI's own form
        print(f"medix: {line}", file=sys.stderr, flush=True)


def reference_messages(predicted: str, ground_truth: str, template: str = REFERENCE_PROMPT) -> list[dict]:
    """Their chat messages for one pair: a single user message, the texts as given."""
    return [{"role": "user", "content": fill_prompt(template, predicted, ground_truth)}]


def reply_says_yes(reply: str) -> bool:
    """Their reading of the judge's reply: ``"YES"`` anywhere in it, case-insensitively."""
    return "YES" in reply.strip().upper()


def request_body(
    predicted: str, ground_truth: str, *, logprobs: bool = False, template: str = REFERENCE_PROMPT
) -> dict:
    """Their request body (less ``model``, which the client fills in); ``logprobs`` adds the first token's
    alternatives, for P(YES), without changing what is generated."""
    body: dict[str, Any] = {
        "messages": reference_messages(predicted, ground_truth, template),
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
        "chat_template_kwargs": {"enable_thinking": False},
        "top_p": TOP_P,
    }
    if logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = TOP_LOGPROBS
    return body


class ReferenceJudge(CachingJudge):
    """The authors' verdict rule on an in-process llama.cpp model or an OpenAI-compatible server.

    ``match`` is :func:`reply_says_yes` of the reply to :func:`request_body`; ``p_yes`` is P(YES) against NO
    for the first reply token (in-process always; from a server only with ``logprobs=True``, which adds
    ``logprobs``/``top_logprobs`` to the request). Pairs are sent exactly as given: no trimming, no
    exact-match short-circuit, an empty ground truth included (the composite reward decides exact matches and
    invalid answers before asking, as their code does). Identical pairs are asked once per batch and cached.
    ``prompt``: the template (``{predicted}``, ``{ground_truth}``; default :data:`REFERENCE_PROMPT`, this
    project's wording, with a one-time warning that only their own text reproduces their numbers exactly).
    """

    def __init__(
        self,
        backend: LlamaCppChat | OpenAIChat,
        *,
        cache_size: int = 65536,
        logprobs: bool = False,
        prompt: str | None = None,
    ) -> None:
        super().__init__(cache_size)
        if prompt is None:
            warn_own_wording()
            prompt = REFERENCE_PROMPT
        self.prompt = check_reference_prompt(prompt, "ReferenceJudge prompt")
        if not isinstance(backend, (LlamaCppChat, OpenAIChat)):
            raise TypeError(f"backend must be a LlamaCppChat or an OpenAIChat, got {type(backend).__name__}")
        self.backend = backend
        self.logprobs = logprobs
        self.name = f"{backend.name} (reference verdict rule)"

    def _key(self, i: int, pair: Any) -> Verdict | tuple[str, str]:
        """Pairs exactly as given (no trimming, no exact-match short-circuit): only a malformed pair is
        decided without the model."""
        return checked_pair(i, pair)

    def _judge_unique(self, keys: list[tuple[str, str]]) -> list[Verdict]:
        if isinstance(self.backend, LlamaCppChat):
            return [self._local(p, g) for p, g in keys]
        return self._remote(keys)

    def reply(self, predicted: str, ground_truth: str) -> tuple[str, float | None]:
        """The in-process judge's reply text and P(YES) for one pair (no cache)."""
        from medix_r1.llm.server import generate

        chat = self.backend
        assert isinstance(chat, LlamaCppChat)
        tokens, _ = chat.chat_tokens(reference_messages(predicted, ground_truth, self.prompt))
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
        return gen.text, p_yes_from_alternatives(gen.logprobs)

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

        bodies = [request_body(p, g, logprobs=self.logprobs, template=self.prompt) for p, g in keys]
        client.request_many(bodies, on_result=done)
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
        p = p_yes_from_alternatives(lp.get("content")) if isinstance(lp, dict) else None
        return Verdict(reply_says_yes(text), p, source="judge")

    def close(self) -> None:
        if isinstance(self.backend, LlamaCppChat):
            self.backend.close()
