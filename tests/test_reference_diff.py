"""Differential tests: reference mode against an oracle of the authors' reward (tests/oracle.py).

Random input, fake models: this checks the parsing and the arithmetic. Both sides get the same FAKE
deterministic judge and embedder (a hash of the pair decides YES/NO; a hash of the text picks a unit vector at
a multiple of 30 degrees, so no cosine lies near the 0.8 threshold). Their model calls fail, and score 0.0, on
text a model cannot read (a lone surrogate: llama.cpp's and the tokenizers' encoders raise on it, and
``medix judge serve`` answers HTTP 400, as the real-model test below shows); an empty ground truth (one that
is only a tag) is sent and embedded like any other text. The default run checks MEDIX_DIFF_N pairs (default
5,000); ``MEDIX_DIFF_N=100000`` is the full check.

Realistic input, real models (``slow``): the oracle runs their verdict rule (their request over HTTP to
``medix judge serve`` with the tiny GGUF judge, "YES" in the reply) and their embedding rule on the test
embedder; reference mode runs with the same judge in-process and behind the server. Both sides use the same
prompt template: this project's default wording, and the tests' own template given as a file
(``judge.reference_prompt``), as a user's copy of the authors' prompt would be.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import zlib

import numpy as np
import pytest
from medix_r1.judge import JudgeConfig, Verdict, make_judge
from medix_r1.rewards import CompositeReward, RewardConfig
from medix_r1.rewards.structure import has_lone_surrogate
from oracle import TAGS, reference_compute_score

N = int(os.environ.get("MEDIX_DIFF_N", "5000"))
SEED = int(os.environ.get("MEDIX_DIFF_SEED", "20261127"))
BATCH = 500


# ---------------------------------------------------------------------------------------------------------
# fake deterministic models (the same on both sides)
# ---------------------------------------------------------------------------------------------------------


def _h(*texts: str) -> int:
    return zlib.crc32("\x00".join(texts).encode("utf-8", "surrogatepass"))


def _unreadable(text: str) -> bool:
    return has_lone_surrogate(text)


class FakeHashJudge:
    """Deterministic YES/NO from a hash of the pair; refuses what our real judges refuse."""

    name = "fake-hash-judge"

    def judge(self, pairs):
        out = []
        for a, g in pairs:
            assert not _unreadable(a) and not _unreadable(g), "the reward must not send this"
            out.append(Verdict(_h(a, g) % 2 == 0, None))
        return out


def fake_ask(given: str, truth: str) -> str:
    if _unreadable(given) or _unreadable(truth):
        raise ValueError("the model call fails on this text")
    return ["NO", " yes."][_h(given, truth) % 2 == 0]


class FakeHashEmbedder:
    """Deterministic unit vectors at multiples of 30 degrees; raises on text a tokenizer cannot take."""

    name = "fake-hash-embedder"

    def embed(self, texts):
        out = np.zeros((len(texts), 2), dtype=np.float32)
        for i, t in enumerate(texts):
            if _unreadable(t):
                raise ValueError("the tokenizer fails on this text")
            angle = np.deg2rad(30 * (_h(t) % 12))
            out[i] = (np.cos(angle), np.sin(angle))
        return out


# ---------------------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------------------

# Spaces CPython's str.isspace() accepts (some that Rust's char::is_whitespace does not), and look-alikes.
SPACES = [" ", "  ", "\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2009", "\u3000"]
NOT_SPACES = ["\u200b", "\ufeff", "\u180e", "\x00"]
# Letters whose upper case is special: longer (ß, ŉ, ligatures), title case, dotless i, and code points that
# only newer Unicode tables (Rust's) give a case mapping (Cyrillic TJE, Garay, Latin Extended-D additions).
CASEY = [*"ßŉǅǈǰΐΰﬀﬁﬃﬅſıİẞꭓᏸ", "\u1c8a", "\u1c89", "\U00010d70", "\U00010d50", "\ua7cb", "\ua7cd"]
# The 55 code points whose upper case Rust 1.95 (Unicode 16) and CPython 3.11 (Unicode 14) disagree on:
# (lower, Rust's upper). CPython leaves the lower one unchanged until its tables catch up.
NEWER_CASE = (
    [("\u019b", "\ua7dc"), ("\u0264", "\ua7cb"), ("\u1c8a", "\u1c89")]
    + [(chr(lo), chr(lo - 1)) for lo in (0xA7CD, 0xA7CF, 0xA7D3, 0xA7D5, 0xA7DB)]
    + [(chr(0x10D70 + i), chr(0x10D50 + i)) for i in range(22)]
    + [(chr(0x16EBB + i), chr(0x16EA0 + i)) for i in range(25)]
)
SURROGATES = ["\ud800", "\udfff", "\udc00", "\ud83d"]
WORDS = [
    "Pneumonia",
    "pneumonia",
    "Right lower lobe pneumonia",
    "HCC",
    "a / b",
    "a/b",
    "5 mg",
    "0.5mg",
    "T2 < T1",
    "x > y",
    "Myocardial infarction",
    "ok",
    "no",
    "é",
    "Ωmega",
]


def _case_variant(rng: random.Random, s: str) -> str:
    return rng.choice([s, s.upper(), s.lower(), s.swapcase(), s.title(), s.casefold()])


def _ws(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return ""
    if r < 0.9:
        return rng.choice(SPACES)
    return rng.choice(NOT_SPACES)


def _word(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        w = rng.choice(WORDS)
    elif r < 0.8:
        w = "".join(rng.choice(CASEY + list("abcXYZ_ ")) for _ in range(rng.randint(1, 6)))
    else:
        w = "".join(rng.choice("ab.: ?_<>/é\u00dfA1") for _ in range(rng.randint(0, 5)))
    return w


def _sprinkle(rng: random.Random, s: str, p: float) -> str:
    """Now and then insert a surrogate, a period or odd space somewhere in s."""
    if rng.random() >= p:
        return s
    i = rng.randint(0, len(s))
    ins = rng.choice(
        [*SURROGATES, ".", "..", " . ", rng.choice(SPACES), rng.choice(NOT_SPACES), "<", ">", "/"]
    )
    return s[:i] + ins + s[i:]


def _tag_name(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        return _case_variant(rng, rng.choice(TAGS))
    if r < 0.8:
        return rng.choice(["BRAIN", "x-ray", "CT SCAN", "", "thinking"])
    return "".join(rng.choice(CASEY + list("XR_")) for _ in range(rng.randint(1, 5)))


def gen_ground_truth(rng: random.Random, answer: str, name: str) -> str:
    r = rng.random()
    if r < 0.08:
        return _sprinkle(rng, answer, 0.2)  # no ">" at all (usually)
    if r < 0.12:
        return rng.choice(
            ["<X_RAY>", "<X_RAY> ", "<X_RAY> . ", "<CT_SCAN>...", "<>"]
        )  # nothing after the tag
    dots = rng.choice(["", ".", "..", " .", ". "])
    lead = rng.choice(["", "", ".", " "])
    # Their code does not collapse the ground truth: spaces inside its tag usually cost the modality point.
    inner = [_ws(rng) if rng.random() < 0.15 else "" for _ in range(3)]
    gt = f"{inner[0]}<{inner[1]}{name}{inner[2]}>{_ws(rng)}{lead}{answer}{dots}{_ws(rng)}"
    return _sprinkle(rng, gt, 0.1)


def gen_response(rng: random.Random, answer: str, name: str) -> str:
    def tag(word: str, closing: bool = False) -> str:
        if rng.random() < 0.05:
            word = rng.choice(["think", "thinkin", "answers", "Answer", "THINKING"])
        slash = "/" if closing else ""
        if rng.random() < 0.3:
            slash = f"{_ws(rng)}{slash}{_ws(rng)}" if closing else _ws(rng)
        return f"<{slash}{word}{_ws(rng)}>" if rng.random() < 0.3 else f"<{slash}{word}>"

    given = rng.choice(
        [
            answer,
            answer,
            answer + ".",
            "." + answer + ". ",
            f" {answer} ",
            _case_variant(rng, answer),
            _word(rng),
            _word(rng),
            "",
            "a",
            "x: y",
            "why?",
            "a__b",
        ]
    )
    prefix_tag = ""
    r = rng.random()
    if r < 0.7:
        prefix_tag = (
            f"<{_ws(rng)}{_case_variant(rng, name) if rng.random() < 0.7 else _tag_name(rng)}{_ws(rng)}>"
        )
    elif r < 0.8:
        prefix_tag = rng.choice(["X_RAY", "<X_RAY", "hello <X_RAY>", "<X_RAY><X_RAY>"])
    parts = [_ws(rng), prefix_tag, _ws(rng)]
    shape = rng.random()
    think = _sprinkle(rng, _word(rng), 0.2)
    ans_block = f"{tag('answer')}{_ws(rng)}{given}{_ws(rng)}{tag('answer', True)}"
    if shape < 0.65:
        parts += [tag("thinking"), think, tag("thinking", True), _ws(rng), ans_block]
    elif shape < 0.75:
        parts += [ans_block, tag("thinking"), think, tag("thinking", True)]  # blocks swapped
    elif shape < 0.82:
        parts += [tag("thinking"), think, ans_block]  # no closing thinking tag
    elif shape < 0.88:
        parts += [tag("thinking"), think, tag("thinking", True), _word(rng), ans_block]  # text between
    elif shape < 0.94:
        parts += [given]  # no tags at all
    else:
        parts += [
            tag("thinking"),
            think,
            tag("thinking", True),
            ans_block,
            rng.choice(["", ans_block, "</answer>", "tail"]),
        ]
    parts.append(_ws(rng))
    return _sprinkle(rng, "".join(parts), 0.05)


def gen_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        answer = _sprinkle(rng, _word(rng), 0.03)
        name = _tag_name(rng)
        if rng.random() < 0.08:
            # A tag with a letter only newer Unicode tables upper-case, spelt one way in the ground truth and
            # the other in the response: equal for Rust's to_uppercase, not for CPython's str.upper.
            lower, upper = rng.choice(NEWER_CASE)
            k = rng.randint(0, len(name))
            gt_name, resp_name = name[:k] + lower + name[k:], name[:k] + upper + name[k:]
            if rng.random() < 0.5:
                gt_name, resp_name = resp_name, gt_name
            response = gen_response(rng, answer, resp_name)
            out.append((response, gen_ground_truth(rng, answer, gt_name)))
            continue
        out.append((gen_response(rng, answer, name), gen_ground_truth(rng, answer, name)))
    return out


# ---------------------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------------------

KEYS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")


def _oracle(pairs, format_weight=0.1):
    return [
        reference_compute_score(r, g, fake_ask, FakeHashEmbedder().embed, format_weight=format_weight)
        for r, g in pairs
    ]


def _ours(pairs, format_weight=0.1):
    reward = CompositeReward(
        RewardConfig(mode="reference", format_weight=format_weight, max_unscorable_fraction=0.0),
        judge=FakeHashJudge(),
        embedder=FakeHashEmbedder(),
    )
    out = []
    for k in range(0, len(pairs), BATCH):
        chunk = pairs[k : k + BATCH]
        out += reward.score([r for r, _ in chunk], [g for _, g in chunk])
    return out


def _mismatches(pairs, ours, oracle):
    bad = []
    for (r, g), mine, (theirs, failed) in zip(pairs, ours, oracle):
        same = all(mine[k] == theirs[k] and type(mine[k]) is float for k in KEYS)
        if not same or (failed and not mine["errors"]):
            bad.append(
                {"response": r, "ground_truth": g, "ours": mine, "oracle": theirs, "oracle_failed": failed}
            )
    return bad


def _report(bad):
    return json.dumps(bad[:3], ensure_ascii=True, indent=1)


def test_fake_judge_reference_mode_equals_oracle_on_random_pairs():
    pairs = gen_pairs(N, SEED)
    t0 = time.perf_counter()
    ours = _ours(pairs)
    t1 = time.perf_counter()
    oracle = _oracle(pairs)
    t2 = time.perf_counter()
    bad = _mismatches(pairs, ours, oracle)
    print(
        f"\nreference diff: {N} pairs, {len(bad)} mismatches; ours {t1 - t0:.2f} s, oracle {t2 - t1:.2f} s",
        file=sys.stderr,
    )
    assert not bad, f"{len(bad)} of {N} differ; first: {_report(bad)}"
    # The generator reaches the cases that matter (else this test would prove little).
    failed = sum(f for _, f in oracle)
    assert failed > N * 0.05
    assert sum(s["accuracy_llm"] == 1.0 and s["format"] == 1.0 for s in ours) > N * 0.05
    assert sum(s["modality"] == 1.0 for s in ours) > N * 0.1
    assert sum(any(has_lone_surrogate(x) for x in p) for p in pairs) > N * 0.02
    assert sum(not p[0].isascii() or not p[1].isascii() for p in pairs) > N * 0.2


def test_fake_judge_other_format_weight_and_entry_points(tmp_path, monkeypatch):
    """The same numbers through integrations.easyr1:compute_score and `medix reward score --mode reference`
    (its score_file)."""
    from medix_r1.integrations import easyr1
    from medix_r1.rewards.score_file import score_file

    pairs = gen_pairs(600, SEED + 1)
    oracle = _oracle(pairs, format_weight=0.25)
    assert not _mismatches(pairs, _ours(pairs, format_weight=0.25), oracle)

    for k in ("MEDIX_JUDGE_MODEL", "MEDIX_JUDGE_URL", "MEDIX_EMBED_MODEL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MEDIX_REWARD_MODE", "reference")
    easyr1._REWARDS.clear()
    key = (repr(easyr1.config_from_env(0.25)),)
    easyr1._REWARDS[key] = CompositeReward(
        easyr1.config_from_env(0.25), judge=FakeHashJudge(), embedder=FakeHashEmbedder()
    )
    try:
        got = easyr1.compute_score([{"response": r, "ground_truth": g} for r, g in pairs], format_weight=0.25)
    finally:
        easyr1._REWARDS.clear()
    assert got == [theirs for theirs, _ in oracle]

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"response": r, "ground_truth": g}) + "\n" for r, g in pairs))
    reward = CompositeReward(
        RewardConfig(mode="reference", format_weight=0.25), judge=FakeHashJudge(), embedder=FakeHashEmbedder()
    )
    score_file(inp, tmp_path / "out.jsonl", reward=reward, progress=False, batch_size=97)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().split("\n") if line]
    assert len(rows) == len(pairs)
    for row, (theirs, failed) in zip(rows, oracle):
        assert {k: row[k] for k in KEYS} == theirs
        assert bool(row["errors"]) >= failed


@pytest.mark.parametrize("mode", ["strict", "reference"])
def test_lone_surrogate_affects_its_row_only(mode):
    good = "<X_RAY><thinking>r</thinking><answer>Pneumonia</answer>"
    bad = "<X_RAY><thinking>r</thinking><answer>Pneumo\ud800nia</answer>"
    reward = CompositeReward(RewardConfig(mode=mode), judge=FakeHashJudge(), embedder=FakeHashEmbedder())
    g, b, g2 = reward.score(
        [good, bad, good], ["<X_RAY> Pneumonia.", "<X_RAY> Pneumonia", "<X_RAY> Pneumonia\udfff"]
    )
    assert g["overall"] == 1.0 and g["errors"] == []
    assert b["format"] == 1.0 and b["modality"] == 1.0
    assert any("surrogate" in e for e in b["errors"])
    if mode == "reference":
        assert (b["accuracy_llm"], b["accuracy_embed"]) == (0.0, 0.0)
    else:
        assert (b["accuracy_llm"], b["accuracy_embed"]) == (None, None) and b["overall"] is not None
    assert any("surrogate" in e for e in g2["errors"])


def test_modality_upper_cases_like_cpython():
    from medix_r1.rewards.structure import analyze, modality_rewards
    from oracle import reference_modality

    responses, gts = [], []
    for lower, upper in [*NEWER_CASE, ("ß", "SS"), ("ﬀ", "FF"), ("ı", "I"), ("ſ", "S")]:
        for a, b in ((lower, upper), (upper, lower), (lower, lower)):
            responses.append(f" < X_{a}RAY >\n<thinking>r</thinking><answer>ab</answer>")
            gts.append(f"<x_{b}ray> ab")
    want = [reference_modality(r, g) for r, g in zip(responses, gts)]
    assert analyze(responses, gts, "reference").modality.tolist() == want
    assert modality_rewards(responses, gts, "reference").tolist() == want
    assert 0.0 in want and 1.0 in want


def test_python_collapse_equals_the_authors_regex_and_is_linear():
    from medix_r1.rewards.structure import _collapse, modality_rewards
    from oracle import collapse

    rng = random.Random(SEED)
    alphabet = [" ", "\u3000", "\x1c", "\u200b", "<", ">", "/", "a", "é", "\n"]
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert _collapse(s) == collapse(s), repr(s)
    # A quadratic scan (the regex itself backtracks over long space runs) would not finish this.
    big = "é" + " " * 2_000_000 + "x" + " " * 2_000_000 + "<thinking>r</thinking><answer>ab</answer>"
    assert modality_rewards([big], ["<é x> ab"], "reference").tolist() == [0.0]


# ---------------------------------------------------------------------------------------------------------
# real models: the authors' verdict rule on the tiny GGUF judge and the test embedder
# ---------------------------------------------------------------------------------------------------------

# (modality tag or None for a ground truth without one, ground-truth answer ("" = the tag alone), answers)
REAL_CASES = [
    (
        "X_RAY",
        "Right lower lobe pneumonia",
        ["Right lower lobe pneumonia", "lobar pneumonia", "RLL pneumonia"],
    ),
    ("X_RAY", "Right lower lobe pneumonia", ["Pleural effusion", "pneumonia."]),
    ("MRI_SCAN", "Meningioma", ["Glioblastoma", "meningioma", "Extra-axial meningioma", "Pituitary adenoma"]),
    ("MRI_SCAN", "Glioblastoma", ["Meningioma", "GBM", "High-grade glioma"]),
    ("OCT_SCAN", "Macular edema", ["Macular oedema", "Macular hole", "Cystoid macular edema"]),
    ("CT_SCAN", "Acute appendicitis.", ["Appendicitis", "Diverticulitis", "acute appendicitis ."]),
    ("MICROSCOPY", "Squamous cell carcinoma", ["SCC", "Adenocarcinoma", "Squamous cell carcinoma"]),
    ("FUNDUS_PHOTOGRAPHY", "Diabetic retinopathy", ["Proliferative diabetic retinopathy", "Glaucoma"]),
    ("ULTRASOUND", "Gallstones", ["Cholelithiasis", "Acute cholecystitis"]),
    ("ENDOSCOPY", "Barrett esophagus", ["Barrett's oesophagus", "Esophageal varices"]),
    ("OTHER", "Yes", ["No", "yes"]),
    ("PET_SCAN", "Lymphoma", ["Hodgkin lymphoma", "Metastatic disease"]),
    ("MAMMOGRAPHY", "Invasive ductal carcinoma", ["IDC", "Fibroadenoma"]),
    ("MRI_SCAN", "T2/FLAIR hyperintense lesion", ["T2 / FLAIR hyperintensity"]),  # spaces around "/" collapse
    ("X_RAY", "", ["Pneumonia", "Normal chest radiograph"]),  # a ground truth that is only a tag
    ("CT_SCAN", "", ["Subdural hematoma"]),
    (None, "Myocardial infarction", ["Myocardial infarction", "Heart attack"]),  # no ">": their code raises
]
REAL_FORMS = [
    "<{tag}><thinking>{r}</thinking>\n<answer>{a}</answer>",
    "<{tag}>\n<think>{r}</think>\n<answer>{a}</answer>",
    "< {tag} >\n< thinking > {r} < / thinking > < answer > {a} < /answer >",
    "<{tag}><thinking>{r}</thinking><answer>{a}</answer>",
    "<OTHER><thinking>{r}</thinking>\n<answer>{a}</answer>",
    "{a}",
]


def real_pairs() -> list[tuple[str, str]]:
    out, k = [], 0
    for tag, answer, candidates in REAL_CASES:
        gt = answer if tag is None else (f"<{tag}> {answer}" if answer else f"<{tag}>")
        for a in candidates:
            out.append(
                (REAL_FORMS[k % len(REAL_FORMS)].format(tag=tag or "X_RAY", r="Findings reviewed.", a=a), gt)
            )
            k += 1
    r = "<X_RAY><thinking>Reviewed.</thinking><answer>{}</answer>"
    out += [
        (r.format(a), "<X_RAY> Pneumonia")
        for a in ("A", "Answer: pneumonia", "pneumonia?", "Pneumo\ud800nia")
    ]
    return out


@pytest.fixture(scope="module", params=["default", "file"])
def real_oracle(request, gguf_path, minilm_onnx_dir, tmp_path_factory):
    """The judge served by `medix judge serve`, the test embedder, and the oracle's scores of real_pairs()
    (their HTTP request for the judge), with every (predicted, ground truth, reply) the judge gave. Each
    template in turn: the default wording (None) and the tests' own template in a file (its path)."""
    from medix_r1.embed.backends import FastEmbedEmbedder
    from medix_r1.judge.reference import REFERENCE_PROMPT
    from medix_r1.llm.server import serve
    from oracle import TEST_TEMPLATE, reference_ask_server

    prompt_file = None
    template = REFERENCE_PROMPT
    if request.param == "file":
        template = TEST_TEMPLATE
        prompt_file = tmp_path_factory.mktemp("prompt") / "template.txt"
        prompt_file.write_bytes(TEST_TEMPLATE.encode("utf-8"))
    srv = serve(gguf_path, port=0, block=False, n_ctx=2048, name="tiny-judge")
    embedder = FastEmbedEmbedder(minilm_onnx_dir)
    ask = reference_ask_server(srv.url + "/chat/completions", "tiny-judge", template)
    replies: list[tuple[str, str, str]] = []

    def logged(predict: str, truth: str) -> str:
        reply = ask(predict, truth)
        replies.append((predict, truth, reply))
        return reply

    pairs = real_pairs()
    scores = [reference_compute_score(r, g, logged, embedder.embed) for r, g in pairs]
    try:
        yield srv, embedder, pairs, scores, replies, None if prompt_file is None else str(prompt_file)
    finally:
        srv.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in-process", "server"])
def test_real_models_reference_mode_equals_their_rule(real_oracle, gguf_path, where):
    srv, embedder, pairs, oracle, replies, prompt_file = real_oracle
    judge: dict = (
        {"model": str(gguf_path), "n_ctx": 2048}
        if where == "in-process"
        else {"url": srv.url, "name": "tiny-judge"}
    )
    if prompt_file is not None:
        judge["reference_prompt"] = prompt_file
    reward = CompositeReward(RewardConfig(mode="reference", judge=judge), embedder=embedder)
    try:
        ours = reward.score([r for r, _ in pairs], [g for _, g in pairs])
    finally:
        reward.close()
    # The same judge with P(YES) (a server is asked for log-probs too): the verdicts the oracle saw.
    soft = make_judge(JudgeConfig(**judge), rule="reference", logprobs=True)
    try:
        verdicts = soft.judge([(p, g) for p, g, _ in replies])
    finally:
        soft.close()
    assert [v.match for v in verdicts] == ["YES" in reply.upper() for _, _, reply in replies]
    bad = _mismatches(pairs, ours, oracle)
    assert not bad, f"{len(bad)} of {len(pairs)} differ; first: {_report(bad)}"
    # The set reaches what matters: replies without YES that P(YES) would have read as YES (their rule gives
    # 0 there), ground truths that are only a tag (sent to the judge empty), and inputs their code fails on.
    no_yes = [i for i, (_, _, reply) in enumerate(replies) if "YES" not in reply.upper()]
    assert any(verdicts[i].p_yes is not None and verdicts[i].p_yes > 0.5 for i in no_yes), replies
    assert all(verdicts[i].match is False for i in no_yes)
    assert any(truth == "" for _, truth, _ in replies)
    tag_only = [s for (_, g), s in zip(pairs, ours) if g in ("<X_RAY>", "<CT_SCAN>")]
    assert tag_only and all(s["errors"] == [] for s in tag_only)
    assert sum(failed for _, failed in oracle) >= 3
    assert len(pairs) >= 40


@pytest.mark.slow
def test_real_models_easyr1_through_their_loader_equals_their_rule(real_oracle, minilm_onnx_dir, monkeypatch):
    """The EasyR1 adapter as their fork runs it (loaded from its file, called with the batch), configured
    only by the environment (the default mode), against the oracle: every key of every item equal."""
    from medix_r1.integrations import easyr1
    from oracle import easyr1_compute_reward, easyr1_load_reward

    srv, _, pairs, oracle, _, prompt_file = real_oracle
    monkeypatch.delenv("MEDIX_REWARD_MODE", raising=False)
    if prompt_file is None:
        monkeypatch.delenv("MEDIX_REFERENCE_PROMPT", raising=False)
    else:
        monkeypatch.setenv("MEDIX_REFERENCE_PROMPT", prompt_file)
    monkeypatch.delenv("MEDIX_JUDGE_MODEL", raising=False)
    monkeypatch.setenv("MEDIX_JUDGE_URL", srv.url)
    monkeypatch.setenv("MEDIX_JUDGE_NAME", "tiny-judge")
    monkeypatch.setenv("MEDIX_EMBED_MODEL", str(minilm_onnx_dir))
    easyr1._REWARDS.clear()
    try:
        fn, reward_type = easyr1_load_reward(f"{easyr1.__file__}:compute_score", {"format_weight": 0.1})
        overall, metrics = easyr1_compute_reward(
            fn, reward_type, [r for r, _ in pairs], [g for _, g in pairs]
        )
    finally:
        easyr1._REWARDS.clear()
    assert overall == [theirs["overall"] for theirs, _ in oracle]
    assert metrics == {k: [theirs[k] for theirs, _ in oracle] for k in KEYS}
