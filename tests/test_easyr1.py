"""EasyR1/verl adapter: batch signature, environment configuration, no None in its output."""

from __future__ import annotations

import importlib.util
import math
import socket

import numpy as np
import pytest
from medix_r1.errors import JudgeFailedError
from medix_r1.integrations import easyr1
from medix_r1.rewards.composite import COMPONENTS
from oracle import (
    EASYR1_REWARD_CONFIG_KEYS,
    easyr1_compute_reward,
    easyr1_load_reward,
    easyr1_online_filter,
)

GOOD = "<X_RAY><thinking>Consolidation.</thinking>\n<answer>{}</answer>"
GT = "<X_RAY> Right lower lobe pneumonia"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in (
        "MEDIX_JUDGE_MODEL",
        "MEDIX_JUDGE_URL",
        "MEDIX_JUDGE_NAME",
        "MEDIX_EMBED_MODEL",
        "MEDIX_REWARD_MODE",
    ):
        monkeypatch.delenv(k, raising=False)
    easyr1._REWARDS.clear()
    yield
    easyr1._REWARDS.clear()


def _inputs(pairs):
    return [{"response": r, "response_length": len(r), "ground_truth": g} for r, g in pairs]


def test_structure_only_from_env_every_key_for_every_item(monkeypatch, capsys):
    thinking = "<X_RAY><thinking>Consolidation.</thinking>\n<answer>{}</answer>"
    batch = _inputs(
        [(thinking.format("x y"), GT), ("no tags", GT), ("<think>a</think><answer>b c</answer>", "b c")]
    )
    out = easyr1.compute_score(batch)  # reference mode by default
    assert easyr1.get_reward().config.mode == "reference"
    assert [d["overall"] for d in out] == [1.0, 0.0, 0.0]
    assert all(set(d) == set(COMPONENTS) for d in out)  # every key, for every item
    assert all(isinstance(v, float) for d in out for v in d.values())
    assert all(
        math.isnan(d["accuracy_llm"]) and math.isnan(d["accuracy_embed"]) for d in out
    )  # not configured
    assert "only format and modality" in capsys.readouterr().err
    monkeypatch.setenv("MEDIX_REWARD_MODE", "strict")
    strict = easyr1.compute_score(batch)
    assert [d["overall"] for d in strict] == [1.0, 0.0, 1.0]
    assert math.isnan(strict[2]["modality"])  # strict: no tag in the ground truth, modality does not apply
    omit = easyr1.compute_score(batch, missing="omit")
    assert "accuracy_llm" not in omit[0] and "modality" not in omit[2]
    with pytest.raises(ValueError, match="missing"):
        easyr1.compute_score(batch, missing="zero")


def test_format_weight_and_mode(monkeypatch):
    monkeypatch.setenv("MEDIX_REWARD_MODE", "reference")
    [d] = easyr1.compute_score(
        _inputs([("<CT_SCAN><thinking>a</thinking><answer>b c</answer>", GT)]), format_weight=0.3
    )
    assert d["format"] == 1.0 and d["modality"] == 0.0 and d["overall"] == pytest.approx(0.3)
    assert easyr1.get_reward(0.3).config.mode == "reference"


def test_loadable_by_file_path():
    # EasyR1 loads `path/to/easyr1.py:compute_score` from the file, not the package
    spec = importlib.util.spec_from_file_location("user_reward", easyr1.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.compute_score(_inputs([(GOOD.format("Right lower lobe pneumonia"), GT)]))[0]["overall"] == 1.0


def test_unscorable_items_get_group_mean_and_threshold_raises(monkeypatch, capsys):
    monkeypatch.setenv("MEDIX_REWARD_MODE", "strict")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("MEDIX_JUDGE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("MEDIX_JUDGE_NAME", "dead-judge")
    text_gt = "Central diabetes insipidus"
    batch = _inputs(
        [
            ("<think>a</think><answer>Central diabetes insipidus</answer>", text_gt),  # exact: 1.0
            ("<think>a</think><answer>DI</answer>", text_gt),  # judge down, no embedder: nothing to score
        ]
    )
    with pytest.raises(JudgeFailedError, match="dead-judge"):
        easyr1.compute_score(batch)
    monkeypatch.setenv("MEDIX_MAX_UNSCORABLE", "1.0")
    easyr1._REWARDS.clear()
    exact, dead = easyr1.compute_score(batch)
    assert exact["overall"] == 1.0
    assert dead["overall"] == 1.0 and math.isnan(dead["accuracy_llm"])  # its group's mean, so advantage 0
    assert "no scorable content" in capsys.readouterr().err


@pytest.mark.slow
def test_real_models_from_env(monkeypatch, gguf_path, minilm_onnx_dir):
    monkeypatch.setenv("MEDIX_REWARD_MODE", "strict")
    monkeypatch.setenv("MEDIX_JUDGE_MODEL", str(gguf_path))
    monkeypatch.setenv("MEDIX_EMBED_MODEL", str(minilm_onnx_dir))
    out = easyr1.compute_score(
        _inputs([(GOOD.format("Right lower lobe pneumonia"), GT), (GOOD.format("lobar pneumonia"), GT)])
    )
    assert out[0] == {
        "overall": 1.0,
        "format": 1.0,
        "accuracy_llm": 1.0,
        "accuracy_embed": 1.0,
        "modality": 1.0,
    }
    assert set(out[1]) == set(out[0]) and 0.0 <= out[1]["overall"] <= 1.0
    easyr1.get_reward().close()


class _NoJudge:
    """A scripted judge that says NO (for the arithmetic only)."""

    name = "scripted-no"

    def judge(self, pairs):
        from medix_r1.judge import Verdict

        return [Verdict(False, 0.0) for _ in pairs]


def test_reference_mode_gives_the_authors_zero_and_says_why(monkeypatch, capsys):
    monkeypatch.setenv("MEDIX_REWARD_MODE", "reference")
    cfg = easyr1.config_from_env(0.1)
    easyr1._REWARDS[(repr(cfg),)] = easyr1.CompositeReward(cfg, judge=_NoJudge())
    good = "<X_RAY><thinking>a{}</thinking><answer>Right lower lobe pneumonia</answer>"
    exact, no_tag, surrogate = easyr1.compute_score(
        _inputs([(good.format(""), GT + "."), (good.format(""), "pneumonia"), (good.format("\ud800"), GT)])
    )
    assert exact["overall"] == 1.0  # their ground truth loses its period: an exact match, no judge
    # their code raises on a ground truth without ">": 0.0, not left out
    assert no_tag["accuracy_llm"] == 0.0 and no_tag["modality"] == 0.0
    assert no_tag["overall"] == pytest.approx(0.1)
    assert surrogate["overall"] == 1.0  # a stray surrogate in the reasoning costs nothing
    assert "1 item(s) with errors recorded" in capsys.readouterr().err


# -- through the authors' EasyR1 loader ------------------------------------------------------------------


def test_docstring_sets_only_options_their_fork_has():
    import re

    doc = easyr1.__doc__ or ""
    example = doc.split("::", 1)[1].split("\n\n", 2)[1]  # the indented command
    keys = re.findall(r"worker\.reward\.(\w+)=", example)
    assert keys and set(keys) <= set(EASYR1_REWARD_CONFIG_KEYS), keys
    assert easyr1.REWARD_TYPE == "batch"


@pytest.mark.parametrize("mode", ["reference", "strict"])
def test_their_loader_gets_full_length_lists_for_every_key(monkeypatch, mode):
    if mode == "strict":
        monkeypatch.setenv("MEDIX_REWARD_MODE", mode)
    fn, reward_type = easyr1_load_reward(f"{easyr1.__file__}:compute_score", {"format_weight": 0.1})
    assert reward_type == "batch"
    thinking = "<X_RAY><thinking>r</thinking><answer>{}</answer>"
    # Groups of 3 (rollout n), interleaved as EasyR1 repeats prompts; text-only ground truths (no tag) in
    # group "b", whose modality does not apply in strict mode.
    rows = [
        ("a", thinking.format("Right lower lobe pneumonia"), GT),
        ("a", "no tags", GT),
        ("a", thinking.format("lobar pneumonia"), GT),
        ("b", "<think>r</think><answer>Insulinoma</answer>", "Insulinoma"),
        ("b", "<thinking>r</thinking><answer>Gastrinoma</answer>", "Insulinoma"),
        ("b", "Insulinoma", "Insulinoma"),
        ("c", thinking.format("x y"), "<CT_SCAN> Appendicitis"),
        ("c", "<CT_SCAN><thinking>r</thinking><answer>ab</answer>", "<CT_SCAN> Appendicitis"),
        ("c", "junk", "<CT_SCAN> Appendicitis"),
    ]
    uids = [u for u, _, _ in rows]
    overall, metrics = easyr1_compute_reward(
        fn, reward_type, [r for _, r, _ in rows], [g for _, _, g in rows]
    )
    assert set(metrics) == set(COMPONENTS)
    assert all(len(v) == len(rows) for v in metrics.values()), {k: len(v) for k, v in metrics.items()}
    assert overall == metrics["overall"] and not any(math.isnan(v) for v in overall)
    want = fn([{"response": r, "ground_truth": g} for _, r, g in rows])
    for key in COMPONENTS:  # online filtering on any key pairs each value with its own group
        means, _ = easyr1_online_filter(uids, metrics, filter_key=key)
        for uid in "abc":
            expect = np.mean([d[key] for u, d in zip(uids, want) if u == uid])
            assert means[uid] == pytest.approx(expect, nan_ok=True)
    # their logged metrics: the mean of each list (NaN where a component did not apply anywhere in it)
    assert {k: float(np.mean(v)) for k, v in metrics.items()}["overall"] == pytest.approx(np.mean(overall))
