"""EasyR1/verl adapter: batch signature, environment configuration, no None in its output."""

from __future__ import annotations

import importlib.util
import math
import socket

import pytest
from medix_r1.errors import JudgeFailedError
from medix_r1.integrations import easyr1

GOOD = "<X_RAY><think>Consolidation.</think>\n<answer>{}</answer>"
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


def test_structure_only_from_env(capsys):
    out = easyr1.compute_score(
        _inputs([(GOOD.format("x y"), GT), ("no tags", GT), ("<think>a</think><answer>b c</answer>", "b c")])
    )
    assert [d["overall"] for d in out] == [1.0, 0.0, 1.0]
    assert all(isinstance(v, float) for d in out for v in d.values())
    assert "accuracy_llm" not in out[0] and "modality" not in out[2]  # not applicable: omitted, not 0.0
    assert "only format and modality" in capsys.readouterr().err
    nan = easyr1.compute_score(_inputs([("<think>a</think><answer>b c</answer>", "b c")]), missing="nan")
    assert set(nan[0]) == {"overall", "format", "accuracy_llm", "accuracy_embed", "modality"}
    assert math.isnan(nan[0]["modality"])


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
    assert dead["overall"] == 1.0 and "accuracy_llm" not in dead  # its group's mean, so advantage 0
    assert "no scorable content" in capsys.readouterr().err


@pytest.mark.slow
def test_real_models_from_env(monkeypatch, gguf_path, minilm_onnx_dir):
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
