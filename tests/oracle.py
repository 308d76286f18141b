"""A small pure-Python oracle of both parsing modes, written with `re`, for the property tests.

The reference half is the authors' released reward code restated; the strict half restates the README's rules.
"""

from __future__ import annotations

import math
import re

TAGS = [
    "X_RAY",
    "MICROSCOPY",
    "CLINICAL_PHOTOGRAPHY",
    "CT_SCAN",
    "GRAPHICS",
    "ANGIOGRAPHY",
    "PET_SCAN",
    "ULTRASOUND",
    "MRI_SCAN",
    "FUNDUS_PHOTOGRAPHY",
    "OCT_SCAN",
    "ENDOSCOPY",
    "MAMMOGRAPHY",
    "FLUOROSCOPY",
    "OTHER",
    "SPECT",
]

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z_]+)\s*>")
_STRUCT = {"think", "thinking", "answer"}


def _clean(s: str) -> str:
    return s.lstrip().rstrip(
        ". \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
        "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    )


def _struct_tags(r: str):
    out = []
    for m in _TAG.finditer(r):
        name = m.group(2).lower()
        if name in _STRUCT:
            out.append((m.start(), m.end(), m.group(1) == "/", name))
    return out


def _leading_modality(r: str):
    pos = len(r) - len(r.lstrip())
    m = _TAG.match(r, pos)
    if m and not m.group(1) and m.group(2).upper() in TAGS:
        return m.group(2).upper(), m.end()
    return None, pos


def strict_format(r: str) -> float:
    _, pos = _leading_modality(r)
    pos = len(r) - len(r[pos:].lstrip())
    tags = _struct_tags(r)
    if len(tags) != 4:
        return 0.0
    (s0, e0, c0, n0), (s1, e1, c1, n1), (s2, e2, c2, n2), (s3, e3, c3, n3) = tags
    ok = (
        s0 == pos
        and not c0
        and n0 in ("think", "thinking")
        and c1
        and n1 == n0
        and r[e0:s1].strip() != ""
        and r[e1:s2].strip() == ""
        and not c2
        and n2 == "answer"
        and c3
        and n3 == "answer"
        and _clean(r[e2:s3]) != ""
        and r[e3:].strip() == ""
    )
    return 1.0 if ok else 0.0


def strict_answer(r: str) -> str:
    ans = [t for t in _struct_tags(r) if t[3] == "answer"]
    opens = [t for t in ans if not t[2]]
    closes = [t for t in ans if t[2]]
    if len(opens) != 1 or len(closes) != 1 or opens[0][1] > closes[0][0]:
        return ""
    return _clean(r[opens[0][1] : closes[0][0]])


def parse_gt(gt: str):
    tag, end = _leading_modality(gt)
    if tag is None:
        return None, _clean(gt)
    return tag, _clean(gt[end:])


def strict_modality(r: str, gt: str) -> float:
    tag, _ = parse_gt(gt)
    if tag is None:
        return math.nan
    got, _ = _leading_modality(r)
    return 1.0 if got == tag else 0.0


def strict_invalid(a: str) -> bool:
    return a.strip() == ""


# --- reference mode: the authors' code -------------------------------------------------------------------
_FMT = re.compile(r"<thinking>.*?</thinking>\s*<answer>.*?</answer>", re.DOTALL)


def collapse(r: str) -> str:
    return re.sub(r"\s*(<|>|/)\s*", r"\1", r)


def reference_format(r: str) -> float:
    p = collapse(r)
    idx = p.find("<thinking>")
    if idx == -1:
        return 0.0
    return 1.0 if re.fullmatch(_FMT, p[idx:].strip()) else 0.0


def reference_answer(r: str) -> str:
    p = collapse(r)
    m = re.search(r"<answer>(.*?)</answer>", p, re.DOTALL)
    given = m.group(1).strip() if m else p.strip()
    return given.strip(".")


def reference_modality(r: str, gt: str) -> float:
    p = collapse(r)
    idx = p.find("<thinking>")
    if idx == -1:
        return 0.0
    return 1.0 if p[:idx].strip().upper() == (gt.split(">", maxsplit=1)[0] + ">").upper() else 0.0


def reference_invalid(a: str) -> bool:
    if a == "" or len(a) == 1:
        return True
    return any(s in a for s in ("__", ":", "?"))


# --- reference mode, the whole reward: the authors' compute_score restated, models passed in -------------
def _reference_accuracy(collapsed: str, gt: str, model) -> tuple[float, bool]:
    """One accuracy component as their code computes it; the flag says their code raised (and scored 0.0)."""
    try:
        given = reference_answer(collapsed)
        truth = gt.split(">", maxsplit=1)[1].strip().strip(".")  # IndexError without a ">"
        if reference_invalid(given):
            return 0.0, False
        if given == truth:
            return 1.0, False
        return model(given, truth), False
    except Exception:
        return 0.0, True


def reference_compute_score(
    response: str,
    ground_truth: str,
    ask_judge,
    embed,
    *,
    format_weight: float = 0.1,
    threshold: float = 0.8,
    weights: tuple[float, float, float] = (0.575, 0.375, 0.05),
) -> tuple[dict[str, float], bool]:
    """The authors' per-item scores for one (response, ground truth). ``ask_judge(given, truth)`` returns the
    reply text and ``embed(list[str])`` vectors; both may raise, as their model calls may. Also returns
    whether any part of their code failed on this input (so that ours must have recorded an error)."""
    p = collapse(response)

    def llm(given: str, truth: str) -> float:
        return 1.0 if "YES" in ask_judge(given, truth).strip().upper() else 0.0

    def emb(given: str, truth: str) -> float:
        import numpy as np

        a, b = (np.asarray(v, dtype=np.float64) for v in embed([given, truth]))
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        return float(cos >= threshold)

    fmt = reference_format(p)
    acc_llm, failed_llm = _reference_accuracy(p, ground_truth, llm)
    acc_emb, failed_emb = _reference_accuracy(p, ground_truth, emb)
    mod = reference_modality(p, ground_truth)
    cw = 1 - format_weight
    w_llm, w_emb, w_mod = weights
    overall = cw * w_llm * acc_llm + cw * w_emb * acc_emb + cw * w_mod * mod + format_weight * fmt
    scores = {
        "overall": overall,
        "format": fmt,
        "accuracy_llm": acc_llm,
        "accuracy_embed": acc_emb,
        "modality": mod,
    }
    return scores, failed_llm or failed_emb


# --- reference mode, the judge call: the authors' request and their reading of the reply, restated ---------
# (their create_prompt / chat_with_vllm / llm_answer_match; written here independently of
# medix_r1.judge.reference so that a slip in either shows up as a difference)
def reference_judge_prompt(predict: str, ground_truth: str) -> str:
    return (
        "You are a helpful assistant.\n"
        'Given a predicted answer and the ground truth answer, respond with exactly "YES" if the content '
        'matches, otherwise respond with "NO".\n'
        'Start your response with "YES" or "NO" in uppercase.\n\n'
        f"Predicted:{predict}\n"
        f"Ground Truth:{ground_truth}\n"
    )


def reference_judge_request(predict: str, ground_truth: str, model: str) -> dict:
    """The JSON body their code POSTs to ``/v1/chat/completions``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": reference_judge_prompt(predict, ground_truth)}],
        "max_tokens": 4,
        "temperature": 0.0,
        "chat_template_kwargs": {"enable_thinking": False},
        "top_p": 1.0,
    }


def reference_ask_server(url: str, model: str):
    """``ask_judge`` for :func:`reference_compute_score`: their HTTP call (``requests``, raise on an HTTP
    error) against an OpenAI-compatible ``url`` ending in ``/chat/completions``."""
    import requests

    def ask(predict: str, ground_truth: str) -> str:
        r = requests.post(
            url,
            headers={"Content-Type": "application/json"},
            json=reference_judge_request(predict, ground_truth, model),
            timeout=120,
        )
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    return ask
