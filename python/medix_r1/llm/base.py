"""What every chat backend offers, and the result of the "most likely allowed next token" primitive."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ChatBackend", "Choice"]


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that turns a list of chat messages into the assistant's reply.

    ``grammar`` (a GBNF grammar) constrains the reply where the backend supports it (llama.cpp in-process,
    llama.cpp's server); message text is always data, never chat-control tokens.
    """

    name: str

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> str: ...


@dataclass(frozen=True)
class Choice:
    """Which of a few allowed next tokens the model prefers.

    ``scores``: option -> log-sum-exp of the logits of the option's tokens (every spelling of one answer);
    ``best``: the option with the highest score (the first one on a tie, as greedy decoding under a grammar
    allowing exactly these tokens would pick).
    """

    scores: dict[str, float]

    @property
    def best(self) -> str:
        return max(self.scores, key=lambda k: self.scores[k])

    def prob(self, option: str) -> float | None:
        """P(option) among the options (None when the scores are unusable, e.g. NaN)."""
        vals = list(self.scores.values())
        if any(math.isnan(v) for v in vals) or all(v == -math.inf for v in vals):
            return None
        mine = self.scores[option]
        if mine == -math.inf:
            return 0.0
        # sum over others of exp(other - mine), overflow-safe: the same formula as 1 / (1 + e^(ln - ly)).
        rest = sum(math.exp(min(700.0, v - mine)) for k, v in self.scores.items() if k != option)
        return 1.0 / (1.0 + rest)
