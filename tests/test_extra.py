"""Custom reward components (``path/to/file.py:function``, issue 21) and the component registry: the
example in examples/ appears in ``overall``, ``reward score`` output, metrics.jsonl, the per-step line and
the chart with nothing but a config line; without ``extra`` every number is unchanged; a broken function is
an error naming ``file:function``."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from medix_r1.errors import ConfigError, RewardComponentError
from medix_r1.rewards.composite import CompositeReward, RewardConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "concise_answer.py"
EXAMPLE_YAML = ROOT / "examples" / "reward_extra.yaml"
PAIRS = ROOT / "examples" / "pairs.jsonl"
SPEC = f"{EXAMPLE}:concise_answer"
GT = "<X_RAY> Right lower lobe pneumonia"


def _resp(answer: str, tag: str = "X_RAY") -> str:
    return f"<{tag}><think>Consolidation.</think>\n<answer>{answer}</answer>"


def _pairs() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    return [r["response"] for r in rows], [r["ground_truth"] for r in rows]


def _module(tmp_path: Path, body: str, name: str = "check.py") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


@pytest.fixture
def in_repo(monkeypatch):
    """The example's config line names the file relative to the repository root."""
    monkeypatch.chdir(ROOT)


# -- the registry ------------------------------------------------------------------------------------------


def test_registry_is_the_one_list_of_builtins():
    from medix_r1.rewards import components as c
    from medix_r1.rewards.composite import _WEIGHT_KEYS
    from medix_r1.rewards.trl import EmbeddingReward, FormatReward, LLMJudgeReward, ModalityReward

    assert c.COMPONENTS == ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")
    cfg = RewardConfig()
    for comp in c.BUILTINS:
        assert getattr(cfg, comp.weight_field) == comp.default_weight
        assert _WEIGHT_KEYS[comp.label] == comp.weight_field
    assert [k for k in cfg.content_weights] == [comp.name for comp in c.CONTENT]
    split = {cls.component: cls for cls in (FormatReward, ModalityReward, LLMJudgeReward, EmbeddingReward)}
    assert set(split) == {comp.name for comp in c.BUILTINS}
    assert all(vars(split[comp.name])["__name__"] == comp.trl_name for comp in c.BUILTINS)


def test_step_line_derives_from_the_registry():
    from medix_r1.rewards.components import step_line

    row = {"reward/overall": 0.5, "reward/format": 1.0, "reward/modality": None, "reward/mine": 0.25}
    line = step_line(row, lambda v: "-" if v is None else f"{v:.2f}")
    assert line == "overall 0.50  format 1.00  llm -  embed -  modality -  mine 0.25"


# -- the contract ------------------------------------------------------------------------------------------


def test_no_extra_changes_nothing_bit_for_bit():
    responses, truths = _pairs()
    for mode in ("strict", "reference"):
        base = CompositeReward({"mode": mode}).score(responses, truths)
        again = CompositeReward({"mode": mode, "extra": []}).score(responses, truths)
        assert json.dumps(base) == json.dumps(again)


def test_overall_takes_each_extra_as_a_share(tmp_path):
    f = _module(
        tmp_path,
        "def half(completions, ground_truths, **kw):\n"
        "    return [None if 'skip' in c else 0.5 for c in completions]\n"
        "def one(completions, ground_truths, **kw):\n"
        "    return [1.0] * len(completions)\n",
    )
    responses = [_resp("Right lower lobe pneumonia"), _resp("skip"), _resp("x", "CT_SCAN"), "no tags"]
    truths = [GT] * 4
    base = CompositeReward({}).score(responses, truths)
    r = CompositeReward(
        {"extra": [{"function": f"{f}:half", "weight": 0.2}, {"function": f"{f}:one", "weight": 0.1}]}
    )
    got = r.score(responses, truths)
    assert r.columns[-2:] == ("half", "one")
    for b, g in zip(base, got):
        assert {k: g[k] for k in b if k != "overall"} == {k: v for k, v in b.items() if k != "overall"}
        applied = [(w, g[n]) for w, n in ((0.2, "half"), (0.1, "one")) if g[n] is not None]
        total = sum(w for w, _ in applied)
        assert g["overall"] == pytest.approx((1 - total) * b["overall"] + sum(w * v for w, v in applied))
    assert got[1]["half"] is None  # not applicable: left out of the sum and of W
    assert got[1]["overall"] == pytest.approx(0.9 * base[1]["overall"] + 0.1)


def test_none_everywhere_leaves_overall_exactly_the_papers(tmp_path):
    f = _module(
        tmp_path, "def never(completions, ground_truths, **kw):\n    return [None] * len(completions)\n"
    )
    responses, truths = _pairs()
    base = CompositeReward({"mode": "reference"}).score(responses, truths)
    got = CompositeReward({"mode": "reference", "extra": [{"function": f"{f}:never", "weight": 0.5}]}).score(
        responses, truths
    )
    assert [g["overall"] for g in got] == [b["overall"] for b in base]
    assert all(g["never"] is None for g in got)


def test_other_columns_reach_the_function(tmp_path):
    f = _module(
        tmp_path,
        "def cols(completions, ground_truths, **kw):\n"
        "    assert sorted(kw) == ['id', 'question'], kw\n"
        "    return [float(i) for i in kw['id']]\n",
    )
    r = CompositeReward({"extra": [{"function": f"{f}:cols", "weight": 0.0}]})
    got = r.score([_resp("a")] * 2, [GT] * 2, {"id": [3, 4], "question": ["q", "q"]})
    assert [g["cols"] for g in got] == [3.0, 4.0]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("    raise KeyError('boom')\n", "raised KeyError"),
        ("    return [1.0]\n", "returned 1 values for a batch of 2"),
        ("    return 1.0\n", "returned float"),
        ("    return ['yes', 'no']\n", "returned str 'yes' for item 0"),
        ("    return [float('nan'), 1.0]\n", "return None for 'not applicable'"),
    ],
)
def test_a_broken_function_is_an_error_naming_it(tmp_path, body, words):
    f = _module(tmp_path, f"def bad(completions, ground_truths, **kw):\n{body}")
    r = CompositeReward({"extra": [{"function": f"{f}:bad", "weight": 0.1}]})
    with pytest.raises(RewardComponentError) as e:
        r.score([_resp("a"), _resp("b")], [GT, GT])
    assert f"{f}:bad" in str(e.value) and words in str(e.value)


def test_loading_errors_name_the_file_and_function(tmp_path):
    good = _module(
        tmp_path, "def ok(completions, ground_truths, **kw):\n    return [1.0] * len(completions)\n"
    )
    broken = _module(tmp_path, "def ok(:\n", "broken.py")
    cases = [
        (f"{tmp_path}/missing.py:ok", "not found"),
        (f"{good}:nope", "defines no 'nope'"),
        (f"{broken}:ok", "importing"),
    ]
    for spec, words in cases:
        with pytest.raises(RewardComponentError) as e:
            CompositeReward({"extra": [{"function": spec, "weight": 0.1}]}).score([_resp("a")], [GT])
        assert spec in str(e.value) and words in str(e.value)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([{"function": "check.py", "weight": 0.1}], "path/to/file.py:function"),
        ([{"function": "mod.sub:fn", "weight": 0.1}], "path/to/file.py:function"),
        ([{"function": "c.py:fn"}], "`weight` is missing"),
        ([{"function": "c.py:fn", "weight": 1.5}], "in [0, 1]"),
        ([{"function": "c.py:fn", "weight": 0.1, "wieght": 1}], "unknown key"),
        ([{"function": "c.py:format", "weight": 0.1}], "built-in column"),
        ([{"function": "a.py:fn", "weight": 0.1}, {"function": "b.py:fn", "weight": 0.1}], "second extra"),
        ([{"function": "a.py:f", "weight": 0.6}, {"function": "b.py:g", "weight": 0.6}], "sum to 1.2"),
        ("c.py:fn", "a list"),
    ],
)
def test_bad_extra_config(extra, words):
    with pytest.raises(ValueError, match=None) as e:
        RewardConfig(extra=extra)
    assert words in str(e.value)


def test_training_run_file_takes_reward_extra(in_repo):
    from medix_r1.train.config import load_config

    cfg = load_config(
        None, ["--reward.extra=[{function: examples/concise_answer.py:concise_answer, weight: 0.2}]"]
    )
    assert cfg.reward.extra == [{"function": "examples/concise_answer.py:concise_answer", "weight": 0.2}]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["--reward.extra=[{function: nope, weight: 0.2}]"])
    assert "reward" in str(e.value) and "path/to/file.py:function" in str(e.value)


def test_pickles_without_the_loaded_module(tmp_path):
    r = CompositeReward({"extra": [{"function": SPEC, "weight": 0.2}]})
    first = r.score([_resp("a b")], [GT])
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.extras[0]._fn is None
    assert r2.score([_resp("a b")], [GT]) == first


# -- the example, with nothing but a config line ------------------------------------------------------------


def test_example_in_reward_score_output_and_fingerprint(tmp_path, in_repo, capsys):
    from medix_r1.cli import main

    out = tmp_path / "scored.jsonl"
    args = ["reward", "score", "--input", str(PAIRS), "--output", str(out), "--config", str(EXAMPLE_YAML)]
    assert main([*args, "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    base = CompositeReward({}).score([r["response"] for r in rows], [r["ground_truth"] for r in rows])
    for r, b in zip(rows, base):
        assert list(r)[-7:] == [
            "overall",
            "format",
            "accuracy_llm",
            "accuracy_embed",
            "modality",
            "concise_answer",
            "errors",
        ]
        s = r["concise_answer"]
        want = b["overall"] if s is None else 0.8 * b["overall"] + 0.2 * s
        assert r["overall"] == pytest.approx(want)
    assert any(r["overall"] != b["overall"] for r, b in zip(rows, base) if r["concise_answer"] is not None)
    meta = json.loads((tmp_path / "scored.jsonl.meta.json").read_text())
    (x,) = meta["fingerprint"]["extra"]
    assert x["name"] == "concise_answer" and x["weight"] == 0.2 and x["path"] == str(EXAMPLE)
    assert len(x["sha256"]) == 64

    # The same output cannot be resumed with a changed component file, or without the component.
    copy = tmp_path / "concise_answer.py"
    copy.write_text(EXAMPLE.read_text() + "\n# changed\n")
    cfg2 = tmp_path / "cfg.yaml"
    cfg2.write_text(f"extra: [{{function: {copy}:concise_answer, weight: 0.2}}]\n")
    capsys.readouterr()
    assert main(["reward", "score", "--input", str(PAIRS), "--output", str(out), "--config", str(cfg2)]) == 2
    assert "custom components (extra)" in capsys.readouterr().err
    assert main(["reward", "score", "--input", str(PAIRS), "--output", str(out), "--no-progress"]) == 2


def test_broken_component_stops_reward_score_naming_it(tmp_path, capsys):
    from medix_r1.cli import main

    f = _module(tmp_path, "def bad(completions, ground_truths, **kw):\n    return [1.0]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"extra: [{{function: {f}:bad, weight: 0.1}}]\n")
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "reward",
                "score",
                "--input",
                str(PAIRS),
                "--output",
                str(out),
                "--config",
                str(cfg),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{f}:bad returned 1 values" in err


def test_example_in_trainer_logs_and_chart(in_repo, tmp_path, monkeypatch):
    """What the trainer logs per step (component_matrix -> packed rows -> means), the per-step line and the
    chart, for a composite configured with the example's config line."""
    import yaml
    from medix_r1.rewards.components import step_line
    from medix_r1.train import plot
    from medix_r1.train.monitors import (
        component_matrix,
        component_means,
        pack_rows,
        reward_columns,
        unpack_rows,
    )

    r = CompositeReward(yaml.safe_load(EXAMPLE_YAML.read_text()))
    texts = [_resp("Right lower lobe pneumonia"), _resp("a b c d e f g h i j k l m n o p"), "no tags"]
    truths = [GT] * 3
    scores = r.score(texts, truths)
    overall = np.array([s["overall"] for s in scores])
    comps, answers = component_matrix([r], texts, truths, overall[:, None], overall)
    cols = reward_columns([r])
    assert cols[-1] == "concise_answer"
    back, *_ = unpack_rows(pack_rows(comps, [1, 2, 3], answers, ["p"] * 3), cols)
    means = component_means(back, cols)
    assert means["concise_answer"] == pytest.approx(np.mean([1.0, 0.5]))
    assert means["overall"] == pytest.approx(np.mean(overall))
    row = {"step": 1, **{f"reward/{k}": v for k, v in means.items()}}
    assert "concise_answer 0.750" in step_line(row, lambda v: f"{v:.3f}")

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps(row) + "\n" + json.dumps({**row, "step": 2}) + "\n")
    labels: list[str] = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.plot

    def spy(self, *a, **k):
        labels.append(k.get("label"))
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    png = plot.plot_metrics(metrics, tmp_path / "chart.png")
    assert png.stat().st_size > 1000
    assert "concise_answer" in labels and "overall" in labels


def test_trl_and_easyr1_adapters(in_repo, monkeypatch):
    from medix_r1.integrations import easyr1
    from medix_r1.rewards.trl import CustomReward
    from medix_r1.train.monitors import reward_columns

    f = CustomReward("examples/concise_answer.py:concise_answer")
    assert f.__name__ == "concise_answer"
    got = f(prompts=["p", "p"], completions=[_resp("a"), "none"], ground_truth=[GT, GT])
    assert got == [1.0, None]
    assert reward_columns([f])[-1] == "concise_answer"

    for k in ("MEDIX_JUDGE_MODEL", "MEDIX_JUDGE_URL", "MEDIX_EMBED_MODEL", "MEDIX_REWARD_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MEDIX_REWARD_MODE", "strict")  # EasyR1's default is reference mode
    easyr1._REWARDS.clear()
    out = easyr1.compute_score(
        [
            {"response": _resp("a b c d e f g h i j"), "ground_truth": GT},
            {"response": "x", "ground_truth": GT},
        ],
        extra=[{"function": "examples/concise_answer.py:concise_answer", "weight": 0.2}],
    )
    easyr1._REWARDS.clear()
    assert out[0]["concise_answer"] == pytest.approx(0.8)
    assert out[0]["overall"] == pytest.approx(0.8 * 1.0 + 0.2 * 0.8)
    assert math.isnan(out[1]["concise_answer"])  # not applicable: NaN, every key for every item
    assert not math.isnan(out[1]["overall"])


@pytest.mark.slow
def test_example_in_a_real_training_run(in_repo, gguf_path, tmp_path):
    """One real training step (tiny policy, no judge or embedder) with the example configured by one
    override: metrics.jsonl and the console line carry ``concise_answer``."""
    import torch
    from medix_r1.train.config import load_config
    from medix_r1.train.data import demo_dataset_path
    from medix_r1.train.trainer import run_training

    torch.set_num_threads(2)
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(demo_dataset_path().read_text().splitlines(keepends=True)[:4]))
    cfg = load_config(
        None,
        [
            f"--model.path={gguf_path}",
            f"--data.path={data}",
            "--data.few_shot=2",
            "--algo.num_generations=2",
            "--algo.max_completion_length=16",
            f"--train.output_dir={tmp_path / 'run'}",
            "--train.max_steps=1",
            "--train.prompts_per_step=1",
            "--train.threads=2",
            "--train.device=cpu",
            "--reward.extra=[{function: examples/concise_answer.py:concise_answer, weight: 0.2}]",
        ],
    )
    lines: list[str] = []
    res = run_training(cfg, echo=lines.append)
    rows = [json.loads(line) for line in Path(res["metrics"]).read_text().splitlines()]
    assert rows and all("reward/concise_answer" in r for r in rows)
    assert any("concise_answer" in line for line in lines)
    assert os.path.getsize(res["chart"]) > 1000
