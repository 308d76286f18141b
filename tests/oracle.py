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
# medix_r1.judge.reference so that a slip in either shows up as a difference). The prompt's text is a
# parameter: their wording is not copied here; both sides are run with the same template (this project's
# default, or TEST_TEMPLATE below, or a user's copy of theirs).

# A template of the tests' own, with text that str.format would choke on and a marker to look for.
TEST_TEMPLATE_MARKER = "zq-test-template-7F3A"
TEST_TEMPLATE = (
    f"[{TEST_TEMPLATE_MARKER}] Same finding? {{0}} {{predicted_x}} {{}} }}{{ Say YES or NO.\n"
    "first={predicted}\n"
    "second={ground_truth}\n"
    "YES/NO:"
)


def reference_judge_prompt(predict: str, ground_truth: str, template: str) -> str:
    """``template`` with its one ``{predicted}`` and one ``{ground_truth}`` filled in, by slicing."""
    i, j = template.index("{predicted}"), template.index("{ground_truth}")
    assert template.count("{predicted}") == 1 and template.count("{ground_truth}") == 1
    if i < j:
        return template[:i] + predict + template[i + 11 : j] + ground_truth + template[j + 14 :]
    return template[:j] + ground_truth + template[j + 14 : i] + predict + template[i + 11 :]


def reference_judge_request(predict: str, ground_truth: str, model: str, template: str) -> dict:
    """The JSON body their code POSTs to ``/v1/chat/completions``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": reference_judge_prompt(predict, ground_truth, template)}],
        "max_tokens": 4,
        "temperature": 0.0,
        "chat_template_kwargs": {"enable_thinking": False},
        "top_p": 1.0,
    }


def reference_ask_server(url: str, model: str, template: str):
    """``ask_judge`` for :func:`reference_compute_score`: their HTTP call (``requests``, raise on an HTTP
    error) against an OpenAI-compatible ``url`` ending in ``/chat/completions``."""
    import requests

    def ask(predict: str, ground_truth: str) -> str:
        r = requests.post(
            url,
            headers={"Content-Type": "application/json"},
            json=reference_judge_request(predict, ground_truth, model, template),
            timeout=120,
        )
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    return ask


# --- EasyR1 as the authors' fork runs a reward function (verl/workers/reward/{config,function}.py and the
# online filtering of verl/trainer/ray_trainer.py), restated -----------------------------------------------
EASYR1_REWARD_CONFIG_KEYS = ("reward_function", "reward_function_kwargs", "skip_special_tokens", "num_cpus")


def easyr1_load_reward(reward_function: str, reward_function_kwargs: dict | None = None):
    """``worker.reward.reward_function=path[:name]`` (name "main" when absent) loaded their way: the file
    executed as module ``custom_reward_fn``, the call type from its ``REWARD_TYPE`` (default "batch"), the
    kwargs bound. Returns (function, reward type)."""
    import functools
    import importlib.util
    import os
    import sys

    if ":" in reward_function:
        path, name = reward_function.rsplit(":", maxsplit=1)
    else:
        path, name = reward_function, "main"
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    spec = importlib.util.spec_from_file_location("custom_reward_fn", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_reward_fn"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, name)
    return functools.partial(fn, **(reward_function_kwargs or {})), getattr(module, "REWARD_TYPE", "batch")


def easyr1_compute_reward(reward_fn, reward_type: str, responses, ground_truths):
    """One batch through their reward manager: the score written at each item's last token (``overall``) and
    ``reward_metrics``, every key's values appended item by item."""
    from collections import defaultdict

    inputs = [
        {"response": r, "response_length": len(r), "ground_truth": g}
        for r, g in zip(responses, ground_truths)
    ]
    if reward_type == "batch":
        scores = reward_fn(inputs)
    elif reward_type == "sequential":
        scores = [reward_fn(x) for x in inputs]
    else:
        raise ValueError(f"Unsupported reward type: {reward_type}.")
    token_scores = [None] * len(inputs)
    metrics: dict[str, list] = defaultdict(list)
    for i, score in enumerate(scores):
        token_scores[i] = score["overall"]
        for key, value in score.items():
            metrics[key].append(value)
    return token_scores, dict(metrics)


def easyr1_online_filter(uids, reward_metrics, filter_key="overall", low=0.01, high=0.99):
    """Their online filtering: each group's mean of ``reward_metrics[filter_key]`` (paired with the items'
    group ids by position) and the groups kept (mean strictly between the bounds)."""
    from collections import defaultdict

    import numpy as np

    uid2scores = defaultdict(list)
    for uid, score in zip(uids, reward_metrics[filter_key]):
        uid2scores[uid].append(score)
    means = {uid: np.mean(scores) for uid, scores in uid2scores.items()}
    return means, [uid for uid, m in means.items() if m > low and m < high]
