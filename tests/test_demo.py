"""`medix demo`: its own reward settings (soft scores, leaving `medix train`'s paper defaults alone), a prompt
whose worked examples show modality tags, and the before/after comparison that ends it (summary, table and
chart from scores; with the real tiny models, an untrained adapter changes nothing; the command prints the
table). Learning curves are not asserted: a dozen CPU steps of a 135M policy are too noisy for that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from medix_r1.rewards.composite import COMPONENTS


def _models(tmp_path: Path) -> dict[str, Path]:
    return {"policy": tmp_path / "p.gguf", "judge": tmp_path / "j.gguf", "embedder": tmp_path / "onnx"}


def test_demo_reward_is_soft_and_train_keeps_the_paper_defaults(tmp_path: Path):
    from medix_r1.train.config import load_config
    from medix_r1.train.demo import demo_config

    cfg = demo_config(tmp_path / "out", 3, _models(tmp_path))
    assert cfg.reward.soft_judge is True
    assert cfg.reward.embed is not None and cfg.reward.embed.soft is True
    assert cfg.reward.modality_weight > 0.05  # the tag is worth learning in a dozen steps
    paper = load_config(None, ["--reward.embed.model=e"]).reward
    assert paper.soft_judge is False and paper.embed is not None and paper.embed.soft is False
    assert (paper.format_weight, paper.llm_weight, paper.embed_weight, paper.modality_weight) == (
        0.1,
        0.575,
        0.375,
        0.05,
    )
    # The user's own choices still win over the demo's.
    cfg = demo_config(tmp_path / "out", 3, _models(tmp_path), ["--reward.soft_judge=false"])
    assert cfg.reward.soft_judge is False


def test_demo_prompt_shows_modality_tags(tmp_path: Path):
    from medix_r1._native import MODALITY_TAGS
    from medix_r1.train.data import demo_dataset_path, load_rows, to_training_rows
    from medix_r1.train.demo import demo_config

    cfg = demo_config(tmp_path / "out", 3, _models(tmp_path))
    rows, base = load_rows(demo_dataset_path())
    (row,) = to_training_rows(
        rows[:1],
        base,
        vision=False,
        reasoning_tag=cfg.data.reasoning_tag,
        system_prompt=cfg.data.system_prompt,
        few_shot=cfg.data.few_shot,
    )
    msgs = row["prompt"]
    system = msgs[0]["content"]
    assert msgs[0]["role"] == "system" and "<TAG>" in system
    assert all(t in system for t in MODALITY_TAGS)
    shown = [m["content"] for m in msgs if m["role"] == "assistant"]
    tags = {s[1 : s.index(">")] for s in shown if s.startswith("<")}
    assert len(shown) >= 2 and len(tags) == len(shown) and tags <= set(MODALITY_TAGS), shown


def _score(**kw: float | None) -> dict:
    return {k: kw.get(k) for k in COMPONENTS}


def test_before_after_summary_table_and_chart(tmp_path: Path):
    from medix_r1.train.before_after import pick_questions, render_table, summarize, write_before_after

    assert pick_questions(50, 4) == [0, 16, 33, 49] and pick_questions(3, 8) == [0, 1, 2]
    before = [
        _score(overall=0.2, format=0.0, accuracy_llm=0.8, accuracy_embed=0.3, modality=0.0),
        _score(overall=0.3, format=1.0, accuracy_llm=None, accuracy_embed=0.4, modality=0.0),
    ]
    after = [
        _score(overall=0.6, format=1.0, accuracy_llm=0.8, accuracy_embed=0.2, modality=1.0),
        _score(overall=0.5, format=1.0, accuracy_llm=0.9, accuracy_embed=0.5, modality=0.0),
    ]
    ba = summarize(before, after, [{"problem": "q1"}, {"problem": "q2"}])
    assert ba.before["overall"] == pytest.approx(0.25) and ba.after["overall"] == pytest.approx(0.55)
    assert ba.before["accuracy_llm"] == pytest.approx(0.8)  # an unscored item is left out, not 0
    assert (ba.better["format"], ba.worse["format"]) == (1, 0)
    assert (ba.better["accuracy_embed"], ba.worse["accuracy_embed"]) == (1, 1)
    assert ba.verdict("overall") == "up" and ba.verdict("accuracy_embed") == "unchanged"
    assert ba.verdict("modality") == "up" and ba.verdict("accuracy_llm") == "up"
    table = render_table(ba)
    assert "before/after on 2 demo questions" in table
    for k in COMPONENTS:
        assert k in table
    assert "up: overall, format, accuracy_llm, modality; unchanged: accuracy_embed" in table
    js, png = write_before_after(ba, tmp_path)
    data = json.loads(js.read_text())
    assert data["components"]["overall"]["change"] == pytest.approx(0.3)
    assert data["items"][0]["problem"] == "q1"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 scores before but 1 after"):
        summarize(before, after[:1])


@pytest.mark.slow
def test_an_untrained_adapter_changes_no_answer(gguf_path, minilm_onnx_dir, tmp_path: Path):
    """The real path: base and adapter answers from the tiny policy, scored by the real judge and embedder. A
    fresh LoRA adapter (its B matrices are zero) is the base policy, so every greedy answer and score is the
    same."""
    from medix_r1.train.backends import peft_lora_config, resolve_policy_path
    from medix_r1.train.before_after import compare_policies, render_table
    from medix_r1.train.demo import demo_config
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    models = {"policy": gguf_path, "judge": gguf_path, "embedder": minilm_onnx_dir}
    cfg = demo_config(tmp_path / "out", 1, models, ["--algo.max_completion_length=24", "--train.threads=2"])
    model = AutoModelForCausalLM.from_pretrained(str(resolve_policy_path(cfg)), local_files_only=True)
    get_peft_model(model, peft_lora_config(cfg, vision=False)).save_pretrained(str(tmp_path / "adapter"))
    ba = compare_policies(cfg, tmp_path / "adapter", questions=3)
    assert ba.questions == 3 and len(ba.items) == 3
    for it in ba.items:
        assert it["base"]["text"] == it["trained"]["text"]
    for k in COMPONENTS:
        assert ba.change(k) in (None, 0.0) and ba.better[k] == ba.worse[k] == 0
    assert "moved (|change| >= 0.02) unchanged:" in render_table(ba)


@pytest.mark.slow
def test_demo_command_ends_with_the_before_after_table(gguf_path, minilm_onnx_dir, tmp_path: Path, capsys):
    from medix_r1.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "1", "--compare", "2", "--policy", str(gguf_path),
            "--judge", str(gguf_path), "--embedder", str(minilm_onnx_dir), "--algo.num_generations=2",
            "--algo.max_completion_length=16", "--train.threads=2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "before/after on 2 demo questions" in printed and "moved (|change| >= 0.02)" in printed
    assert "before/after" in printed.splitlines()[-1]  # the closing summary names the chart
    assert (out / "before_after.png").is_file() and (out / "reward_components.png").is_file()
    data = json.loads((out / "before_after.json").read_text())
    assert data["questions"] == 2 and set(data["components"]) == set(COMPONENTS)
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_demo_checks_overrides_on_top_of_its_own_settings(tmp_path: Path, monkeypatch, capsys):
    """A judge option alone is fine (the demo names the judge); a bad value fails before any model loads."""
    from medix_r1.cli import main

    monkeypatch.setenv("MEDIX_TEST_MODELS", str(tmp_path / "no-models"))
    out = str(tmp_path / "o")
    assert main(["demo", "--out", out, "--reward.judge.n_threads=1", "--algo.num_generations=1"]) == 2
    assert "algo.num_generations: got 1" in capsys.readouterr().err
    assert main(["demo", "--out", out, "--reward.judge.n_threads=1"]) == 2
    err = capsys.readouterr().err
    assert "demo policy (GGUF)" in err and "reward.judge" not in err
