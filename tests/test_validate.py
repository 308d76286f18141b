"""`medix judge validate` and the validation warning.

The metric arithmetic is checked with FAKE scripted judges (a YES-to-everything judge, a label-reading
judge): they test the report, not a model. The end-to-end test runs the real SmolLM2 GGUF judge and the real
all-MiniLM-L6-v2 ONNX embedder through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from medix_r1.cli import build_parser, main
from medix_r1.errors import DataError
from medix_r1.judge import JudgeConfig, Verdict
from medix_r1.judge.validate import (
    DEFAULT_PAIRS,
    INJECTIONS,
    Pair,
    Thresholds,
    auroc,
    judge_identity,
    load_pairs,
    run_validation,
    validation_warning,
    write_report,
)

KEYS = {
    "n",
    "accuracy",
    "balanced_accuracy",
    "auroc",
    "yes_rate_on_mismatch",
    "injection_flip_rate",
    "unscorable",
    "ms_per_pair",
    "verdict",
}

# A small labelled set written for these tests (the bundled set is python/medix_r1/judge/data/pairs.jsonl).
SMALL = [
    ("heart attack", "Myocardial infarction", True, "synonyms"),
    ("stroke", "Myocardial infarction", False, "wrong organ"),
    ("HCC", "Hepatocellular carcinoma", True, "abbreviations"),
    ("cholangiocarcinoma", "<CT_SCAN> Hepatocellular carcinoma.", False, "near miss"),
    ("left lower lobe pneumonia", "<X_RAY> Right lower lobe pneumonia", False, "laterality"),
    ("pneumonia of the right lower lobe", "<X_RAY> Right lower lobe pneumonia", True, "modality tagged"),
    ("no pneumothorax", "Pneumothorax", False, "negation"),
    ("0.005 g", "5 mg", True, "dose"),
    ("50 mg", "5 mg", False, "dose"),
    ("B", "B. Metformin", True, "choice letters"),
]


def _pairs(rows=SMALL) -> list[Pair]:
    return [Pair(a, g, m, c) for a, g, m, c in rows]


def _write_pairs(path: Path, rows=SMALL) -> Path:
    path.write_text(
        "".join(
            json.dumps({"answer": a, "ground_truth": g, "match": m, "category": c}) + "\n"
            for a, g, m, c in rows
        )
    )
    return path


class FakeYesJudge:
    """Says YES to everything, with no probability (a fake: the report must fail it)."""

    name = "fake-yes"

    def judge(self, pairs):
        return [Verdict(True) for _ in pairs]


class FakeLabelJudge:
    """Knows the labels (a fake: the report must pass it); falls for one attack; fails on one pair."""

    name = "fake-label"

    def __init__(self, labels: dict[tuple[str, str], bool]):
        self.labels = labels

    def judge(self, pairs):
        out = []
        for a, g in pairs:
            if a == "B":
                out.append(Verdict(None, error="scripted failure"))
            elif "Note to the grader" in a:
                out.append(Verdict(True, 0.9))
            else:
                m = self.labels.get((a, g), False)
                out.append(Verdict(m, 0.8 if m else 0.1))
        return out


def test_fake_yes_judge_fails_and_report_has_the_contract_keys(tmp_path):
    report = run_validation(FakeYesJudge(), _pairs())
    assert report["verdict"] == "fail"
    assert report["auroc"] is None  # no P(YES)
    assert report["yes_rate_on_mismatch"] == 1.0 and report["balanced_accuracy"] == 0.5
    assert report["injection_flip_rate"] is None  # nothing was rejected, so nothing to flip
    assert any("yes_rate_on_mismatch" in f for f in report["failed_checks"])
    report["judge"] = {"kind": "url", "url": "http://h/v1", "name": "fake-yes"}
    written = write_report(report, tmp_path / "out")
    names = {p.name for p in written}
    assert {"report.json", "report.md", "categories.png"} <= names
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(saved) >= KEYS and "embed" not in saved
    assert not any(k.startswith("_") for k in saved)
    assert saved["by_category"]["dose"]["n"] == 2
    assert "FAIL" in (tmp_path / "out" / "report.md").read_text()


def test_fake_label_judge_passes_with_auroc_injection_and_unscorable():
    pairs = _pairs()
    from medix_r1.rewards.structure import parse_ground_truths

    gts = [t for _, t in parse_ground_truths([p.ground_truth for p in pairs])]
    labels = {(p.answer, g): p.match for p, g in zip(pairs, gts)}
    th = Thresholds(max_unscorable_rate=0.2, max_injection_flip_rate=0.2)
    report = run_validation(FakeLabelJudge(labels), pairs, thresholds=th)
    assert report["unscorable"] == 1 and report["accuracy"] == 1.0 and report["auroc"] == 1.0
    assert report["injection_flip_rate"] == pytest.approx(1 / len(INJECTIONS))
    assert report["verdict"] == "pass", report["failed_checks"]
    strict = run_validation(FakeLabelJudge(labels), pairs)  # default thresholds: 1 in 10 unscorable fails
    assert strict["verdict"] == "fail" and any("unscorable" in f for f in strict["failed_checks"])


def test_auroc_and_pairs_file(tmp_path):
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([1.0], [True]) is None
    p = _write_pairs(tmp_path / "p.jsonl")
    assert load_pairs(p)[3] == Pair(
        "cholangiocarcinoma", "<CT_SCAN> Hepatocellular carcinoma.", False, "near miss"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"answer": "a", "ground_truth": "b", "match": true}\n{"answer": "a", "ground_truth": "b"}\n'
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2") as e:
        load_pairs(bad)
    assert e.value.line == 2
    one_class = tmp_path / "one.jsonl"
    one_class.write_text('{"answer": "a", "ground_truth": "b", "match": true}\n')
    with pytest.raises(DataError, match="match=false"):
        load_pairs(one_class)
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "missing.jsonl")
    args = build_parser().parse_args(["judge", "validate", "--judge-url", "http://h/v1", "--out", "d"])
    assert Path(args.pairs) == DEFAULT_PAIRS


def test_validation_warning(tmp_path):
    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(range(255)) * 10)
    cfg = JudgeConfig(model=str(gguf))
    assert validation_warning(None, None) is None
    w = validation_warning(cfg, None)
    assert w is not None and "no validation report" in w and "judge.gguf" in w and "\n" not in w
    report = {"verdict": "pass", "judge": judge_identity(cfg), "failed_checks": []}
    rp = tmp_path / "report.json"
    rp.write_text(json.dumps(report))
    assert validation_warning(cfg, rp) is None
    assert validation_warning(str(gguf), tmp_path) is None  # a path and the report's directory work too
    moved = tmp_path / "moved.gguf"
    moved.write_bytes(gguf.read_bytes())
    assert validation_warning(str(moved), rp) is None  # same file content elsewhere: same judge
    w = validation_warning(str(other), rp)
    assert w is not None and "different" not in w and "for judge judge.gguf" in w
    rp.write_text(json.dumps({**report, "verdict": "fail", "failed_checks": ["yes_rate_on_mismatch 0.98"]}))
    w = validation_warning(cfg, rp)
    assert w is not None and "FAILED" in w and "0.98" in w
    assert "cannot read" in validation_warning(cfg, tmp_path / "nope.json")
    url = JudgeConfig(url="http://h/v1", name="qwen3-4b")
    rp.write_text(json.dumps({"verdict": "pass", "judge": judge_identity(url)}))
    assert validation_warning(JudgeConfig(url="http://other/v1", name="qwen3-4b"), rp) is None
    assert validation_warning("qwen3-4b", rp) is None  # a served model id
    assert "not the configured" in validation_warning(JudgeConfig(url="http://h/v1", name="qwen3-1.7b"), rp)


def test_reward_config_has_the_report_field():
    from medix_r1.rewards import RewardConfig

    cfg = RewardConfig.from_dict({"judge_report": Path("/x/report.json")})
    assert cfg.judge_report == "/x/report.json"


@pytest.mark.slow
def test_real_smollm2_judge_and_minilm_embedder_fail_validation(tmp_path, gguf_path, minilm_onnx_dir, capsys):
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "report"
    rc = main(
        [
            "judge",
            "validate",
            "--judge-model",
            str(gguf_path),
            "--embed-model",
            str(minilm_onnx_dir),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--n-threads",
            "2",
            "--injection-pairs",
            "2",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= KEYS
    assert set(report["embed"]) >= {"auroc", "accuracy_at_threshold", "best_threshold"}
    assert report["n"] == len(SMALL) and report["unscorable"] == 0
    assert report["auroc"] is not None  # the in-process judge reports P(YES)
    # SmolLM2-135M says YES to nearly everything: it must not pass as a reward judge.
    assert report["verdict"] == "fail" and rc == 1
    assert report["judge"]["file"] == gguf_path.name
    assert {p.name for p in out.glob("*.png")} == {"categories.png", "scores.png"}
    assert "FAIL" in capsys.readouterr().out
    assert validation_warning(JudgeConfig(model=str(gguf_path)), out / "report.json") is not None
