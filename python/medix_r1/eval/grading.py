"""Stage 2 (grading): the paper's reference-based LLM-as-judge, three rounds in one conversation.

The answer is cut to what follows the closing reasoning tag, then the judge scores it with the BASE template
(binary, QA and MCQ) or the MIMIC template (0-5, reports and summaries) and replies ``{"score": n}``. Twice
more in the same conversation it is asked to re-evaluate. Binary: majority of the three; 0-5: their mean.
A reply that cannot be read is retried a bounded number of times, then the sample is recorded as an error
(score null, raw replies kept), never as 0. The in-process llama.cpp judge can only answer ``{"score": n}``
(the best allowed digit after a forced prefix, or decoding under a GBNF grammar), so its replies always
parse; remote judges go through the free-text parser. The evaluated model's answer is data: on our backends
it is tokenized with special-token parsing off, so it cannot add a turn or forge a verdict.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medix_r1.errors import BackendError, ConfigError
from medix_r1.eval.io import append_row, check_meta, open_append, read_rows
from medix_r1.llm import LlamaCppChat, OpenAIChat

__all__ = [
    "REEVALUATE",
    "Grader",
    "JudgeResult",
    "aggregate",
    "build_first_messages",
    "judge_conversations",
    "judge_task",
    "parse_score",
    "strip_reasoning",
]

ROUNDS = 3
SYSTEM = (
    "You are a medical expert who grades answers to medical questions by comparing them with a reference. "
    "You are strict, fair and consistent, and you reply only with the requested JSON."
)
BASE_TEMPLATE = """Grade the predicted answer to this medical question.

Question:
{question}

Correct answer:
{reference}{explanation}

Predicted answer:
{prediction}

Give score 1 if the predicted answer fully matches the correct answer: in its text (a paraphrase with the \
same medical meaning counts), or by naming the correct option, whether by its label ({label}) or by words \
that clearly identify that option. Give score 0 otherwise: a different, incomplete, vague or hedged answer, \
several answers at once, or no answer.

Reply with JSON only: {{"score": 1}} or {{"score": 0}}."""
MIMIC_TEMPLATE = """Grade a generated radiology text against the reference written by a radiologist.

Task given to the model:
{question}

Reference:
{reference}

Generated:
{prediction}

Judge clinical accuracy (are the findings and conclusions right?), completeness (are the important \
findings there?) and relevance (nothing wrong or invented added). Use this scale:
0 = completely incorrect, 1 = poor, 2 = weak, 3 = fair, 4 = good, 5 = perfect or near perfect.

Reply with JSON only: {{"score": n}} where n is an integer from 0 to 5."""
REEVALUATE = (
    "Please re-evaluate the predicted answer against the reference and make sure your judgement is "
    'correct. Reply with JSON only: {"score": n}.'
)
RETRY = (
    'I could not read a score in your reply. Reply with JSON only, exactly {{"score": n}} with n {allowed}.'
)
ALLOWED = {"base": "0 or 1", "mimic": "an integer from 0 to 5"}
GRAMMARS = {
    "base": 'root ::= "{\\"score\\": " [01] "}"',
    "mimic": 'root ::= "{\\"score\\": " [0-5] "}"',
}
MAX_PREDICTION_CHARS = 8000  # a runaway generation is cut (and marked) so the conversation fits the judge

_CLOSE = re.compile(r"</\s*think(?:ing)?\s*>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """What follows the last closing ``</think>`` / ``</thinking>`` tag (all of it when there is none)."""
    parts = _CLOSE.split(text or "")
    return parts[-1].strip()


def template_of(kind: str) -> str:
    return "mimic" if kind in ("report", "summary") else "base"


def _valid(v: Any, template: str) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if not isinstance(v, int | float) or v != v:
        return None
    if template == "base":
        return int(v) if v in (0, 1) else None
    if 0 <= v <= 5:
        return int(v) if float(v).is_integer() else float(v)
    return None


_OBJ = re.compile(r"\{[^{}]*\}")
_LOOSE = re.compile(r"""["']?score["']?\s*[:=]\s*["']?(-?\d+(?:\.\d+)?)""", re.IGNORECASE)


def parse_score(reply: str, template: str) -> float | int | None:
    """The score in a judge reply (``{"score": n}``, also inside prose or a code fence), or None when
    there is no valid one (wrong range, no number, several different scores)."""
    text = strip_reasoning(reply)
    found: list[float | int] = []
    for m in _OBJ.finditer(text):
        raw = m.group(0)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            try:
                obj = json.loads(raw.replace("'", '"'))
            except json.JSONDecodeError:
                continue
        if isinstance(obj, dict) and "score" in obj:
            v = _valid(obj["score"], template)
            if v is None:
                return None
            found.append(v)
    if not found:
        found = [v for v in (_valid(x, template) for x in _LOOSE.findall(text)) if v is not None]
        if not found and _LOOSE.search(text):
            return None
    if not found or len(set(found)) > 1:
        return None
    return found[0]


def aggregate(votes: Sequence[float | int], template: str) -> float | int:
    """Binary: 1 when at least two of the three votes are 1 (a strict majority in general). 0-5: the mean."""
    if not votes:
        raise ValueError("no votes")
    if template == "base":
        return int(sum(1 for v in votes if v == 1) * 2 > len(votes))
    return sum(votes) / len(votes)


def build_first_messages(row: dict) -> list[dict]:
    """System + the first user turn of the judge conversation for one generated answer."""
    template = template_of(row.get("type", "qa"))
    pred = strip_reasoning(row.get("response") or "")
    if len(pred) > MAX_PREDICTION_CHARS:
        pred = pred[:MAX_PREDICTION_CHARS] + " [... cut]"
    if template == "base":
        label = row.get("answer_label")
        expl = row.get("explanation")
        text = BASE_TEMPLATE.format(
            question=row.get("prompt") or row.get("question") or "",
            reference=row.get("reference", ""),
            explanation=f"\n(Explanation of the correct answer: {expl})" if expl else "",
            label=f'here "{label}"' if label else "when there are options",
            prediction=pred or "(no answer)",
        )
    else:
        text = MIMIC_TEMPLATE.format(
            question=row.get("question") or row.get("prompt") or "",
            reference=row.get("reference", ""),
            prediction=pred or "(no answer)",
        )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


# -- the grader's model -----------------------------------------------------------------------------


class Grader:
    """The model that grades: replies to the grading conversations, on any chat backend.

    In-process llama.cpp (:class:`~medix_r1.llm.LlamaCppChat`) can only answer ``{"score": n}``:
    ``mode="logits"`` (default) extends the prompt with the fixed ``{"score": `` prefix and takes the allowed
    digit the backend's :meth:`~medix_r1.llm.LlamaCppChat.choose` finds most likely (what greedy decoding
    under the GBNF grammar returns, reusing the KV cache of the earlier rounds); ``mode="grammar"`` decodes
    under the
    GBNF grammar in :data:`GRAMMARS` (about 3x slower for a tiny model). A server
    (:class:`~medix_r1.llm.OpenAIChat`) answers in free text, up to ``max_tokens``, read by
    :func:`parse_score`;
    many conversations are in flight at once. Either way the conversation's text is never parsed for
    control tokens on our own backends (llama.cpp in-process, ``medix judge serve``).

    ``name`` (recorded with every judgement): the GGUF file name as given, or the model id on the server.
    """

    def __init__(
        self, backend: LlamaCppChat | OpenAIChat, *, mode: str = "logits", max_tokens: int = 64
    ) -> None:
        if mode not in ("logits", "grammar"):
            raise ConfigError(
                f"grader mode must be logits or grammar, got {mode!r}",
                key="judge_mode",
                value=mode,
                allowed="logits, grammar",
            )
        self.chat = backend
        self.remote = isinstance(backend, OpenAIChat)
        self.concurrency = backend.concurrency if isinstance(backend, OpenAIChat) else 1
        self.name = backend.model if isinstance(backend, OpenAIChat) else backend.file_name
        self.mode = mode
        self.max_tokens = max_tokens
        self._digits: dict[str, dict[str, list[int]]] = {}
        if isinstance(backend, LlamaCppChat):
            for template, hi in (("base", 1), ("mimic", 5)):
                options = {}
                for d in range(hi + 1):
                    toks = backend.tokenize(str(d), special=False)
                    if len(toks) != 1:  # a tokenizer without single-token digits: decode under the grammar
                        self.mode = "grammar"
                    options[str(d)] = toks[:1]
                self._digits[template] = options

    def prompt_tokens(self, messages: list[dict], template: str = "base") -> list[int]:
        """What the in-process model is given for ``messages`` in logits mode (for inspection)."""
        assert isinstance(self.chat, LlamaCppChat)
        tokens, _ = self.chat.chat_tokens(messages)
        return tokens + self.chat.tokenize('{"score": ', special=False)

    def _reply(self, chat: LlamaCppChat, msgs: list[dict], template: str) -> str:
        if self.mode == "logits":
            choice = chat.choose(self.prompt_tokens(msgs, template), self._digits[template])
            return f'{{"score": {choice.best}}}'
        return chat.chat(msgs, max_tokens=16, temperature=0.0, grammar=GRAMMARS[template])

    def reply_many(self, conversations: Sequence[list[dict]], template: str) -> list[str | BackendError]:
        """One reply per conversation, in order; a conversation the backend cannot answer (a context
        overflow, a server outage) gets its BackendError in place."""
        if isinstance(self.chat, OpenAIChat):
            return list(self.chat.chat_many(list(conversations), max_tokens=self.max_tokens, temperature=0.0))
        out: list[str | BackendError] = []
        for msgs in conversations:
            try:
                out.append(self._reply(self.chat, msgs, template))
            except BackendError as e:  # deterministic for this conversation: recorded as its error
                out.append(e)
        return out


# -- the protocol --------------------------------------------------------------------------------


@dataclass
class _Conv:
    row: dict
    template: str
    messages: list[dict]
    rounds: list[dict]
    error: str | None = None
    transient: bool = False  # a server failure: not recorded, the next run retries the sample


def judge_conversations(rows: Sequence[dict], backend: Any, *, max_parse_retries: int = 2) -> list[_Conv]:
    """Run the three-round protocol for ``rows`` (generation rows); all conversations advance round by round
    so that a remote judge sees ``len(rows)`` requests at a time."""
    convs = [_Conv(r, template_of(r.get("type", "qa")), build_first_messages(r), []) for r in rows]
    for rnd in range(ROUNDS):
        need = [c for c in convs if c.error is None]
        attempts = {id(c): 0 for c in need}
        while need:
            by_template: dict[str, list[_Conv]] = {}
            for c in need:
                by_template.setdefault(c.template, []).append(c)
            nxt: list[_Conv] = []
            for template, group in by_template.items():
                replies = backend.reply_many([c.messages for c in group], template)
                for c, rep in zip(group, replies):
                    attempts[id(c)] += 1
                    if isinstance(rep, Exception):
                        c.error = f"judge backend failed in round {rnd + 1}: {rep}"
                        c.transient = bool(getattr(backend, "remote", False))
                        continue
                    c.messages.append({"role": "assistant", "content": rep})
                    score = parse_score(rep, template)
                    if score is not None:
                        c.rounds.append({"reply": rep, "score": score, "attempts": attempts[id(c)]})
                        if rnd + 1 < ROUNDS:
                            c.messages.append({"role": "user", "content": REEVALUATE})
                    elif attempts[id(c)] > max_parse_retries:
                        c.rounds.append({"reply": rep, "score": None, "attempts": attempts[id(c)]})
                        c.error = (
                            f"unparseable judge reply in round {rnd + 1} after {attempts[id(c)]} attempts: "
                            f"{rep[:200]!r}"
                        )
                    else:
                        c.messages.append(
                            {"role": "user", "content": RETRY.format(allowed=ALLOWED[template])}
                        )
                        nxt.append(c)
            need = nxt
    return convs


def _judgement_row(c: _Conv, judge_name: str) -> dict:
    votes = [r["score"] for r in c.rounds if r["score"] is not None]
    score = aggregate(votes, c.template) if c.error is None else None
    return {
        "id": c.row.get("id"),
        "task": c.row.get("task"),
        "type": c.row.get("type"),
        "template": c.template,
        "score": score,
        "votes": votes,
        "error": c.error,
        "prediction": strip_reasoning(c.row.get("response") or ""),
        "reference": c.row.get("reference"),
        "rounds": c.rounds,
        "conversation": c.messages,
        "judge": judge_name,
    }


@dataclass
class JudgeResult:
    task: str
    generated: int
    done_before: int
    judged: int
    errors: int  # recorded with score null (unparseable replies and the like)
    failed: int  # not recorded (server failures); a rerun retries them
    messages: list[str]


def judge_task(
    out_dir: str | Path,
    task: str,
    backend: Any,
    *,
    max_parse_retries: int = 2,
    retry_errors: bool = False,
    progress: bool = True,
) -> JudgeResult:
    """Judge every answer of ``out_dir/<task>/generations.jsonl`` not yet in ``judgements.jsonl``."""
    d = Path(out_dir) / task
    gens = read_rows(d / "generations.jsonl")
    path = d / "judgements.jsonl"
    check_meta(d / "judge.json", {"judge": backend.name}, "judgements")
    latest: dict[Any, dict] = {}
    for r in read_rows(path):
        latest[r.get("id")] = r
    done = {k for k, r in latest.items() if not (retry_errors and r.get("score") is None)}
    todo = [g for g in gens if g.get("id") not in done]
    unique: dict[Any, dict] = {}
    for g in todo:
        unique.setdefault(g.get("id"), g)  # the first generation of an id
    todo = list(unique.values())
    judged = errors = failed = 0
    msgs: list[str] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(gens), initial=len(gens) - len(todo), desc=f"judge {task}", file=sys.stderr)
    step = max(1, int(getattr(backend, "concurrency", 1)) * 2) if getattr(backend, "remote", False) else 1
    with open_append(path) as f:
        for start in range(0, len(todo), step):
            for c in judge_conversations(
                todo[start : start + step], backend, max_parse_retries=max_parse_retries
            ):
                if c.error is not None and c.transient:
                    failed += 1
                    msgs.append(f"{c.row.get('id')}: {c.error}")
                    continue
                row = _judgement_row(c, backend.name)
                append_row(f, row)
                judged += 1
                if row["error"]:
                    errors += 1
                    msgs.append(f"{row['id']}: {row['error']}")
            if bar is not None:
                bar.update(len(todo[start : start + step]))
    if bar is not None:
        bar.close()
    return JudgeResult(task, len(gens), len(gens) - len(todo), judged, errors, failed, msgs)
