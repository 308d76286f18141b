"""The composite reward: the paper's arithmetic, rescaling, modes, TRL contract, pickling, unscorable items.

Arithmetic tests that need a judge decision other than an exact match use ``TableJudge``, a scripted judge
that returns fixed verdicts: it checks the composite's bookkeeping, not that a judge works. Tests that
claim the models work use the real SmolLM2 GGUF judge and the real all-MiniLM-L6-v2 ONNX embedder.
"""

from __future__ import annotations

import math
import pickle
import socket
import sys

import numpy as np
import pytest
from medix_r1.embed import EmbedConfig, FastEmbedEmbedder
from medix_r1.errors import JudgeFailedError
from medix_r1.judge import JudgeConfig, LocalJudge, Verdict
from medix_r1.rewards import CompositeReward, RewardConfig, parse_weights
from medix_r1.rewards.trl import (
    EmbeddingReward,
    FormatReward,
    LLMJudgeReward,
    ModalityReward,
)

GOOD = "<X_RAY><think>Consolidation at the right base.</think>\n<answer>{}</answer>"
TEXT = "<think>Reasoning.</think><answer>{}</answer>"
GT = "<X_RAY> Right lower lobe pneumonia"


class TableJudge:
    """Scripted verdicts by predicted answer (for arithmetic only); records every call."""

    name = "table-judge"

    def __init__(self, table: dict[str, bool | None]):
        self.table, self.calls = table, []

    def judge(self, pairs):
        self.calls.append(list(pairs))
        out = []
        for pred, _gt in pairs:
            m = self.table.get(pred)
            out.append(
                Verdict(None, error="scripted failure") if m is None else Verdict(m, 0.9 if m else 0.2)
            )
        return out


class TableEmbedder:
    """Scripted embeddings (for arithmetic only): the texts in ``close`` share one unit vector, every other
    text gets its own orthogonal one."""

    name = "table-embedder"

    def __init__(self, close: set[str]):
        self.close, self.calls, self.index = close, [], {}

    def embed(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, t in enumerate(texts):
            out[row, 0 if t in self.close else self.index.setdefault(t, len(self.index) + 1)] = 1.0
        return out


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _unbuilt(gguf_path, minilm_onnx_dir, **kw) -> CompositeReward:
    """A reward configured with the real models, which are only built if something needs them."""
    cfg = RewardConfig(
        judge=JudgeConfig(model=str(gguf_path), n_threads=1),
        embed=EmbedConfig(model=str(minilm_onnx_dir), threads=1),
        **kw,
    )
    return CompositeReward(cfg)


# ---------------------------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------------------------


def test_perfect_answer_is_one_without_calling_models(gguf_path, minilm_onnx_dir):
    r = _unbuilt(gguf_path, minilm_onnx_dir)
    [s] = r.score([GOOD.format("Right lower lobe pneumonia")], [GT])
    assert s == {
        "overall": 1.0,
        "format": 1.0,
        "accuracy_llm": 1.0,
        "accuracy_embed": 1.0,
        "modality": 1.0,
        "errors": [],
    }
    assert r._judge is None and r._embedder is None  # exact match: neither model was even loaded
    assert r.counters["judge_calls"] == 0 and r.counters["exact_matches"] == 1


def test_format_only_is_point_one(gguf_path, minilm_onnx_dir):
    # reference mode: "?" is an invalid answer (0 for both accuracies, a real zero); wrong modality tag
    r = _unbuilt(gguf_path, minilm_onnx_dir, mode="reference")
    [s] = r.score(["<CT_SCAN><thinking>hmm</thinking><answer>?</answer>"], [GT])
    assert (s["format"], s["accuracy_llm"], s["accuracy_embed"], s["modality"]) == (1.0, 0.0, 0.0, 0.0)
    assert s["overall"] == pytest.approx(0.1) and s["errors"] == []
    assert r._judge is None


def test_paper_weights_mixed():
    r = CompositeReward(judge=TableJudge({"lung infection": True}), embedder=TableEmbedder(set()))
    [s] = r.score([GOOD.format("lung infection")], [GT])
    assert (s["accuracy_llm"], s["accuracy_embed"], s["modality"]) == (1.0, 0.0, 1.0)
    assert s["overall"] == pytest.approx(0.1 + 0.9 * (0.575 + 0.05))


def test_text_only_rescales_content_weights():
    r = CompositeReward(judge=TableJudge({"DI": True}), embedder=TableEmbedder(set()))
    s1, s2 = r.score(
        [TEXT.format("DI"), TEXT.format("Central diabetes insipidus")], ["Central diabetes insipidus"] * 2
    )
    assert s1["modality"] is None and s1["errors"] == []
    assert s1["overall"] == pytest.approx(0.1 + 0.9 * 0.575 / 0.95)
    assert s2["overall"] == 1.0  # text-only and perfect is still 1.0


def test_not_configured_components_are_left_out():
    r = CompositeReward()  # no judge, no embedder: format and modality only
    good, wrong_tag, text = r.score(
        [GOOD.format("x y"), "<CT_SCAN>" + TEXT.format("x y"), TEXT.format("x y")], [GT, GT, "answer"]
    )
    assert good["accuracy_llm"] is None and good["accuracy_embed"] is None and good["errors"] == []
    assert good["overall"] == 1.0
    assert wrong_tag["overall"] == pytest.approx(0.1)
    assert text["overall"] == 1.0 and text["modality"] is None  # only the format applies
    r2 = CompositeReward(embedder=TableEmbedder({"x y", "Right lower lobe pneumonia"}))
    [s] = r2.score([GOOD.format("x y")], [GT])
    assert s["accuracy_llm"] is None and s["overall"] == pytest.approx(1.0)


def test_custom_weights_and_parsing():
    cfg = RewardConfig.from_dict(
        {"weights": "format=0.2,llm=0.5,embed=0.5,modality=0", "judge": None, "mode": "strict"}
    )
    assert (cfg.format_weight, cfg.llm_weight, cfg.embed_weight, cfg.modality_weight) == (0.2, 0.5, 0.5, 0.0)
    r = CompositeReward(cfg, judge=TableJudge({"a b": False}), embedder=TableEmbedder({"a b", "c d"}))
    [s] = r.score([GOOD.format("a b")], ["<X_RAY> c d"])
    assert s["overall"] == pytest.approx(0.2 + 0.8 * (0.5 * 0 + 0.5 * 1))
    assert parse_weights({"llm_weight": 1}) == {"llm_weight": 1.0}
    for bad in ("format=x", "speed=1", "format"):
        with pytest.raises(ValueError):
            parse_weights(bad)
    with pytest.raises(ValueError, match="format_weight"):
        RewardConfig(format_weight=1.5)
    with pytest.raises(ValueError, match="mode"):
        RewardConfig(mode="loose")
    with pytest.raises(ValueError, match="unknown"):
        RewardConfig.from_dict({"fromat_weight": 0.1})
    nested = RewardConfig.from_dict({"judge": {"url": "http://h/v1", "name": "m"}, "embed": {"model": "/d"}})
    assert isinstance(nested.judge, JudgeConfig) and isinstance(nested.embed, EmbedConfig)


def test_soft_judge_uses_p_yes():
    cfg = RewardConfig(soft_judge=True)
    [s] = CompositeReward(cfg, judge=TableJudge({"a b": True})).score([TEXT.format("a b")], ["c d"])
    assert s["accuracy_llm"] == pytest.approx(0.9)


def test_judge_called_once_per_batch_with_all_pairs():
    j = TableJudge({"a b": True, "c d": False})
    r = CompositeReward(judge=j)
    r.score([TEXT.format(a) for a in ("a b", "c d", "a b", "gt", "")], ["gt"] * 5)
    assert len(j.calls) == 1
    assert j.calls[0] == [("a b", "gt"), ("c d", "gt"), ("a b", "gt")]  # not the exact match, not the blank


# ---------------------------------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------------------------------


def test_reference_vs_strict():
    think = "<X_RAY><think>r</think><answer>Right lower lobe pneumonia</answer>"
    thinking = "<X_RAY> <thinking>r</thinking> <answer>Right lower lobe pneumonia.</answer>"
    strict = CompositeReward(RewardConfig(mode="strict")).score([think, thinking], [GT, GT])
    ref = CompositeReward(RewardConfig(mode="reference")).score([think, thinking], [GT, GT])
    assert [s["format"] for s in strict] == [1.0, 1.0]
    assert [s["format"] for s in ref] == [0.0, 1.0]  # the authors' code knows only <thinking>


def test_reference_ground_truth_problems_score_the_authors_zero_with_the_reason():
    judge = TableJudge({"Epinephrine": True})
    r = CompositeReward(RewardConfig(mode="reference"), judge=judge, embedder=TableEmbedder(set()))
    resp = "<X_RAY><thinking>r</thinking><answer>Epinephrine</answer>"
    no_tag, dots = r.score([resp] * 2, ["Epinephrine", "<X_RAY> .Epinephrine.. "])
    # Their code raises on a ground truth without ">" and scores 0.0; the reason is recorded, so the zero is
    # not silent.
    assert (no_tag["accuracy_llm"], no_tag["accuracy_embed"]) == (0.0, 0.0)
    assert any("'>'" in e for e in no_tag["errors"]) and no_tag["modality"] == 0.0
    # Their ground-truth answer is stripped of periods too: an exact match, without asking the judge.
    assert dots["overall"] == 1.0 and dots["errors"] == [] and r.counters["judge_calls"] == 0
    # A ground truth that is only a tag: their code asks the judge with an empty ground truth and embeds "".
    [empty] = r.score([resp], ["<X_RAY> . "])
    assert judge.calls == [[("Epinephrine", "")]] and empty["errors"] == []
    assert (empty["accuracy_llm"], empty["accuracy_embed"], empty["modality"]) == (1.0, 0.0, 1.0)
    [t] = CompositeReward(RewardConfig(mode="strict"), judge=TableJudge({})).score(
        ["<think>r</think><answer>Epinephrine</answer>"], ["Epinephrine"]
    )
    assert t["accuracy_llm"] == 1.0 and t["errors"] == []


# ---------------------------------------------------------------------------------------------------------
# unscorable items
# ---------------------------------------------------------------------------------------------------------


def test_unscorable_judge_item_is_left_out_and_recorded():
    r = CompositeReward(RewardConfig(max_unscorable_fraction=1.0), judge=TableJudge({"ok": True}))
    ok, bad = r.score([GOOD.format("ok"), GOOD.format("broken")], [GT, GT])
    assert bad["accuracy_llm"] is None and "scripted failure" in bad["errors"][0]
    assert "table-judge" in bad["errors"][0]
    assert bad["overall"] == pytest.approx(0.1 + 0.9 * 1.0)  # only modality left, rescaled
    assert ok["errors"] == [] and r.counters["judge_unscorable"] == 1
    [none] = r.score([TEXT.format("broken")], ["text only"])
    assert none["overall"] is None  # nothing of the content could be scored


def test_closed_port_remote_judge(minilm_onnx_dir):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = RewardConfig(
        judge=JudgeConfig(url=url, name="judge-x", max_retries=0, timeout=2.0),
        embed=EmbedConfig(model=str(minilm_onnx_dir), threads=1),
        max_unscorable_fraction=1.0,
    )
    r = CompositeReward(cfg)
    s, exact = r.score([GOOD.format("pneumonia"), GOOD.format("Right lower lobe pneumonia")], [GT, GT])
    assert s["accuracy_llm"] is None and s["accuracy_embed"] in (0.0, 1.0)
    assert url in s["errors"][0]
    w = 0.375 + 0.05
    assert s["overall"] == pytest.approx(0.1 + 0.9 * (0.375 * s["accuracy_embed"] + 0.05) / w)
    assert exact["overall"] == 1.0 and exact["errors"] == []
    strict = CompositeReward(RewardConfig(judge=cfg.judge, embed=cfg.embed))
    with pytest.raises(JudgeFailedError, match="judge-x") as e:
        strict.score([GOOD.format("pneumonia"), GOOD.format("bronchitis")], [GT, GT])
    assert "cannot connect" in str(e.value) or "refused" in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# TRL contract, pickling, lightness
# ---------------------------------------------------------------------------------------------------------


def test_trl_call_strings_messages_and_solution():
    r = CompositeReward()
    assert r.__name__ == "medix_composite"
    completions = [
        GOOD.format("x y"),
        [{"role": "assistant", "content": GOOD.format("x y")}],
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "text", "text": "no tags"}]},
        ],
    ]
    out = r(prompts=["p"] * 3, completions=completions, solution=[GT] * 3, trainer_state=None)
    assert out == [1.0, 1.0, 0.0]
    assert r(["p"], [GOOD.format("x")], ground_truth=[GT]) == [1.0]
    assert len(r.last_scores) == 1 and set(r.summary()) >= {"overall", "format", "modality"}
    with pytest.raises(ValueError, match="ground_truth"):
        r(["p"], ["x"], answer=["y"])
    with pytest.raises(ValueError, match="rows"):
        r(["p"], ["x"], solution=["a", "b"])


def test_individual_trl_rewards():
    comps = [GOOD.format("Right lower lobe pneumonia"), TEXT.format("b c"), "plain"]
    gts = [GT, "b c", GT]
    assert FormatReward()(None, comps) == [1.0, 1.0, 0.0]
    assert ModalityReward()(None, comps, solution=gts) == [1.0, None, 0.0]
    llm = LLMJudgeReward({"url": "http://127.0.0.1:9/v1", "name": "x"}, judge=TableJudge({}))
    assert llm(None, comps, solution=gts) == [1.0, 1.0, 0.0]  # exact, exact, blank answer
    emb = EmbeddingReward(EmbedConfig(), embedder=TableEmbedder(set()))
    assert emb(None, comps, solution=gts) == [1.0, 1.0, 0.0]
    assert {f.__name__ for f in (FormatReward(), ModalityReward(), llm, emb)} == {
        "medix_format",
        "medix_modality",
        "medix_accuracy_llm",
        "medix_accuracy_embed",
    }


def test_pickling_drops_models(gguf_path, minilm_onnx_dir):
    r = _unbuilt(gguf_path, minilm_onnx_dir)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.config == r.config and r2._judge is None
    [s] = r2.score([GOOD.format("Right lower lobe pneumonia")], [GT])
    assert s["overall"] == 1.0
    for f in (FormatReward("reference"), ModalityReward()):
        assert pickle.loads(pickle.dumps(f)).mode == f.mode


def test_importing_rewards_is_light():
    import subprocess

    code = (
        "import sys, medix_r1.rewards as R\n"
        "R.CompositeReward, R.RewardConfig, R.FormatReward\n"
        "heavy = [m for m in ('torch', 'llama_cpp', 'fastembed', 'transformers', 'onnxruntime') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------
# real models end to end
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_local_judge_and_fastembed(gguf_path, minilm_onnx_dir):
    judge = LocalJudge(gguf_path, n_ctx=1024, n_threads=2)
    embedder = FastEmbedEmbedder(minilm_onnx_dir, threads=2)
    r = CompositeReward(RewardConfig(), judge=judge, embedder=embedder)
    responses = [
        GOOD.format("Right lower lobe pneumonia"),
        GOOD.format("pneumonia of the right lower lobe"),
        GOOD.format("pneumonia of the right lower lobe"),
        "<CT_SCAN>" + TEXT.format("fractured femur"),
        TEXT.format("Epinephrine"),
    ]
    gts = [GT, GT, GT, GT, "Epinephrine"]
    scores = r.score(responses, gts)
    assert scores[0]["overall"] == 1.0 and scores[4]["overall"] == 1.0
    for s in scores:
        assert s["errors"] == [] and s["format"] in (0.0, 1.0)
        assert s["accuracy_llm"] in (0.0, 1.0) and s["accuracy_embed"] in (0.0, 1.0)
        assert 0.0 <= s["overall"] <= 1.0
    assert scores[1] == scores[2]
    assert judge.model_calls == 2  # the duplicate paraphrase was judged once; exact matches never
    assert r.counters["judge_calls"] == 1
    for s in scores:
        expected = 0.1 * s["format"] + 0.9 * (
            0.575 * s["accuracy_llm"] + 0.375 * s["accuracy_embed"] + 0.05 * (s["modality"] or 0)
        ) / (1.0 if s["modality"] is not None else 0.95)
        assert s["overall"] == pytest.approx(expected)
    # the paraphrase really is closer than the unrelated answer in the embedding space
    soft = CompositeReward(
        RewardConfig(embed=EmbedConfig(model=str(minilm_onnx_dir), soft=True)), embedder=embedder
    ).score(responses[1:4], gts[1:4])
    assert soft[0]["accuracy_embed"] > soft[2]["accuracy_embed"]
    assert not math.isnan(soft[0]["overall"])
    # the same batch again: every judged pair now comes from the cache
    r.score(responses, gts)
    assert judge.model_calls == 2 and r.counters["judge_cache_hits"] >= 2
    judge.close()
