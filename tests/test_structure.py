"""Format, modality and answer parsing: fixed cases, property tests against tests/oracle.py, bad input."""

from __future__ import annotations

import math

import numpy as np
import oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medix_r1 import MODALITY_TAGS, MedixInputError
from medix_r1.rewards import (
    analyze,
    extract_answers,
    format_rewards,
    is_invalid_answers,
    modality_rewards,
    parse_ground_truths,
)

GOOD = (
    "<CT_SCAN>\n<think>Arterial enhancement with washout.</think>\n"
    "<answer>Hepatocellular carcinoma.</answer>\n"
)


def test_modality_tags_are_the_papers_16():
    assert tuple(oracle.TAGS) == MODALITY_TAGS


def test_strict_examples():
    responses = [
        GOOD,
        "<think>x</think><answer>y</answer>",
        "< THINKING >x</ thinking ><ANSWER>y.</ answer >",
        "<think>x</thinking><answer>y</answer>",
        "<think>x</think><answer>y</answer> trailing",
        "<think>x</think><answer>..</answer>",
        "<think><think>x</think></think><answer>y</answer>",
    ]
    assert format_rewards(responses).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert extract_answers(responses)[:3] == ["Hepatocellular carcinoma", "y", "y"]
    mod = modality_rewards([GOOD, GOOD, GOOD], ["<ct_scan> HCC", "<MRI_SCAN> HCC", "HCC"])
    assert mod[:2].tolist() == [1.0, 0.0] and math.isnan(mod[2])
    assert parse_ground_truths(["<X_RAY> Right lower lobe pneumonia.", "no tag."]) == [
        ("X_RAY", "Right lower lobe pneumonia"),
        (None, "no tag"),
    ]
    assert is_invalid_answers(["", "  ", "a"]).tolist() == [True, True, False]


def test_reference_examples():
    r = "<CT_SCAN> <thinking> because </thinking>\n <answer> HCC. </answer>\n"
    assert format_rewards([r], mode="reference").tolist() == [1.0]
    assert modality_rewards([r], ["<ct_scan> HCC"], mode="reference").tolist() == [1.0]
    assert extract_answers([r], mode="reference") == ["HCC"]
    assert is_invalid_answers(["a", "ab", "a:b", "a?", "a__b"], mode="reference").tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]


def test_outputs_are_float64_arrays_in_order():
    out = format_rewards([GOOD, "x"] * 3)
    assert out.dtype == np.float64 and out.shape == (6,) and out.tolist() == [1.0, 0.0] * 3
    assert format_rewards([]).shape == (0,)


def test_analyze_matches_individual_calls():
    rs = [GOOD, "<X_RAY><thinking>a</thinking><answer>b</answer>", "junk"]
    gts = ["<CT_SCAN> HCC", "<X_RAY> b", "plain"]
    for mode in ("strict", "reference"):
        s = analyze(rs, gts, mode=mode)
        np.testing.assert_array_equal(s.format, format_rewards(rs, mode))
        np.testing.assert_array_equal(s.modality, modality_rewards(rs, gts, mode))
        assert s.answers == extract_answers(rs, mode)
        np.testing.assert_array_equal(s.invalid, is_invalid_answers(s.answers, mode))


# --- property tests against the oracle -------------------------------------------------------------------
PIECES = [
    "<think>",
    "</think>",
    "<thinking>",
    "</thinking>",
    "<answer>",
    "</answer>",
    "< think >",
    "</ANSWER >",
    "< / answer>",
    "<Thinking >",
    "<X_RAY>",
    "<ct_scan>",
    "< MRI_SCAN >",
    "<BRAIN>",
    "</X_RAY>",
    " ",
    "\n",
    "\u3000",
    "\x1c",
    "\xa0",
    ".",
    "..",
    "a",
    "abc",
    "/",
    "<",
    ">",
    "?",
    ":",
    "__",
    "ß",
    "é",
    "x y",
    "< ",
]
responses = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=14).map("".join)
ground_truths = st.one_of(
    st.tuples(
        st.sampled_from(["<X_RAY>", "< ct_scan >", "<OTHER>", "<BRAIN>", "", "X_RAY>"]), st.text(max_size=6)
    ).map(lambda t: t[0] + " " + t[1]),
    responses,
)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(responses, ground_truths), min_size=1, max_size=6))
def test_matches_oracle(pairs):
    rs = [p[0] for p in pairs]
    gts = [p[1] for p in pairs]
    assert format_rewards(rs).tolist() == [oracle.strict_format(r) for r in rs]
    assert format_rewards(rs, "reference").tolist() == [oracle.reference_format(r) for r in rs]
    assert extract_answers(rs) == [oracle.strict_answer(r) for r in rs]
    assert extract_answers(rs, "reference") == [oracle.reference_answer(r) for r in rs]
    got = modality_rewards(rs, gts).tolist()
    assert all(_same(g, oracle.strict_modality(r, t)) for g, r, t in zip(got, rs, gts))
    assert modality_rewards(rs, gts, "reference").tolist() == [
        oracle.reference_modality(r, t) for r, t in zip(rs, gts)
    ]
    assert parse_ground_truths(gts) == [oracle.parse_gt(t) for t in gts]
    assert is_invalid_answers(rs).tolist() == [oracle.strict_invalid(r) for r in rs]
    assert is_invalid_answers(rs, "reference").tolist() == [oracle.reference_invalid(r) for r in rs]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=5))
def test_never_crashes_on_arbitrary_text(rs):
    s = analyze(rs, rs, mode="strict")
    assert len(s.answers) == len(rs)
    s = analyze(rs, rs, mode="reference")
    assert len(s.answers) == len(rs)


def test_adversarial_megabytes_parse():
    big = "<think " * 500_000 + "<thinking><answer>" * 200_000
    for mode in ("strict", "reference"):
        assert format_rewards([big], mode).tolist() == [0.0]


# --- bad input -------------------------------------------------------------------------------------------
def test_non_str_item_names_argument_and_index():
    with pytest.raises(TypeError, match=r"responses\[1\] must be str, got int"):
        format_rewards(["ok", 3])
    with pytest.raises(TypeError, match=r"ground_truths\[0\] must be str, got NoneType"):
        modality_rewards(["a"], [None])
    with pytest.raises(TypeError, match="not a single str"):
        format_rewards("a response")


def test_length_mismatch_and_unknown_mode():
    with pytest.raises(MedixInputError, match="same length, got 2 and 1"):
        modality_rewards(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="mode must be 'strict' or 'reference'"):
        format_rewards(["a"], mode="loose")


def test_lone_surrogate_affects_its_row_only():
    # Valid Python text that Rust cannot take: parsed as if it were any other non-space character.
    rows = ["<think>a</think><answer>x\ud800y.</answer>", "<think>a</think><answer>ok</answer>", "\udfff"]
    for mode in ("strict", "reference"):
        assert extract_answers(rows, mode) == ["x\ud800y", "ok", "" if mode == "strict" else "\udfff"]
    assert format_rewards(rows).tolist() == [1.0, 1.0, 0.0]
