"""Evaluation: task registry mappings on synthetic local copies, the judge's parser/vote/protocol, scoring and
report files, and the CLI's error paths (missing data, text-only model on an image task)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from medix_r1.cli import main
from medix_r1.eval.grading import (
    REEVALUATE,
    aggregate,
    build_first_messages,
    judge_conversations,
    parse_score,
    strip_reasoning,
)
from medix_r1.eval.score import score_dir, write_reports
from medix_r1.eval.tasks import (
    BUNDLED,
    REGISTRY,
    MissingDatasetError,
    TaskError,
    load_samples,
    load_task_file,
    render_mcq,
    resolve_tasks,
)

# -- tasks ------------------------------------------------------------------------------------------------


def _png_bytes(color: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# One synthetic row per benchmark in its real column layout, with the reference answer and the option label
# the mapping must produce.
MMLU_ROW = {
    "question": "Which nerve innervates the diaphragm?",
    "subject": "anatomy",
    "choices": ["Vagus", "Phrenic", "Radial", "Sciatic"],
    "answer": 1,
}
CASES: dict[str, tuple[list[dict], str, str | None]] = {
    **{name: ([MMLU_ROW], "Phrenic", "B") for name in REGISTRY if name.startswith("mmlu_")},
    "medmcqa": (
        [
            {
                "id": "m1",
                "question": "Drug of choice for absence seizures?",
                "opa": "Phenytoin",
                "opb": "Ethosuximide",
                "opc": "Carbamazepine",
                "opd": "Lamotrigine",
                "cop": 1,
                "choice_type": "single",
                "exp": "...",
                "subject_name": "Pharmacology",
                "topic_name": None,
            }
        ],
        "Ethosuximide",
        "B",
    ),
    "medqa": (
        [
            {
                "id": "q1",
                "sent1": "A 23-year-old woman presents with ... What is the most likely diagnosis?",
                "sent2": "",
                "ending0": "Migraine",
                "ending1": "Tension headache",
                "ending2": "Cluster headache",
                "ending3": "Subarachnoid haemorrhage",
                "label": 3,
            }
        ],
        "Subarachnoid haemorrhage",
        "D",
    ),
    "usmle_sa": (
        [
            {
                "question": "Which vaccine is live attenuated?",
                "options": {"A": "Tetanus", "B": "MMR", "C": "Hepatitis B", "D": "Influenza (inactivated)"},
                "answer": "B",
            }
        ],
        "MMR",
        "B",
    ),
    "pubmedqa": (
        [
            {
                "QUESTION": "Does X reduce mortality?",
                "CONTEXTS": ["Background sentence.", "Results sentence."],
                "final_decision": "no",
                "LONG_ANSWER": "X did not reduce mortality.",
            }
        ],
        "no",
        "B",
    ),
    "mimic_cxr_summ": (
        [{"report": "FINDINGS: Clear lungs. No effusion.", "summary": "No acute cardiopulmonary process."}],
        "No acute cardiopulmonary process.",
        None,
    ),
    "slake": (
        [
            {
                "img_name": "xmlab1/source.jpg",
                "question": "Which organ is abnormal?",
                "answer": "Liver",
                "q_lang": "en",
                "qid": 11,
                "answer_type": "OPEN",
            },
            {
                "img_name": "xmlab1/source.jpg",
                "question": "哪个器官异常?",
                "answer": "肝脏",
                "q_lang": "zh",
                "qid": 12,
                "answer_type": "OPEN",
            },
        ],
        "Liver",
        None,
    ),
    "vqa_rad": (
        [
            {
                "image": {"bytes": _png_bytes(), "path": None},
                "question": "is there a fracture?",
                "answer": "no",
            }
        ],
        "no",
        None,
    ),
    "pathvqa": (
        [
            {
                "image": {"bytes": _png_bytes(), "path": None},
                "question": "what is present?",
                "answer": "necrosis",
            }
        ],
        "necrosis",
        None,
    ),
    "pmc_vqa": (
        [
            {
                "Figure_path": "PMC1_fig1.jpg",
                "Question": "What imaging modality is shown?",
                "Answer": "MRI",
                "Choice A": "A:CT",
                "Choice B": "B:MRI",
                "choices": ["A:CT", "B:MRI", "C:X-ray", "D:Ultrasound"],
                "Answer_label": "B",
            }
        ],
        "MRI",
        "B",
    ),
    "pmc_vqa_hard": (
        [{"image": {"bytes": _png_bytes(), "path": None}, "question": "What is seen?", "answer": "A cyst"}],
        "A cyst",
        None,
    ),
    "mimic_cxr_report": (
        [{"image": [{"bytes": _png_bytes(), "path": None}], "report": "Lungs are clear. No pneumothorax."}],
        "Lungs are clear. No pneumothorax.",
        None,
    ),
}


def test_every_benchmark_has_a_case():
    assert len(REGISTRY) == 17
    assert set(CASES) == set(REGISTRY)


def _has_bytes(v) -> bool:
    if isinstance(v, dict):
        return "bytes" in v
    return isinstance(v, list) and any(_has_bytes(x) for x in v)


# Image bytes are not JSON: those layouts are checked as Parquet only.
FORMATS = [
    (name, fmt)
    for name in sorted(REGISTRY)
    for fmt in ("parquet", "jsonl")
    if fmt == "parquet" or not any(_has_bytes(v) for r in CASES[name][0] for v in r.values())
]


@pytest.mark.parametrize(("name", "fmt"), FORMATS)
def test_registry_mapping(tmp_path: Path, name: str, fmt: str):
    rows, reference, label = CASES[name]
    spec = REGISTRY[name]
    d = tmp_path / name
    if fmt == "parquet":
        _write_parquet(d / f"{spec.hub_split}-00000-of-00001.parquet", rows)
    else:
        _write_jsonl(d / f"{spec.hub_split}.jsonl", rows)
    if name == "slake":
        (d / "imgs" / "xmlab1").mkdir(parents=True)
        (d / "imgs" / "xmlab1" / "source.jpg").write_bytes(_png_bytes())
    samples = load_samples(spec, tmp_path)
    assert len(samples) == 1  # SLAKE: the Chinese item is filtered out
    s = samples[0]
    assert s.reference == reference
    assert s.answer_label == label
    assert s.task == name
    if label is not None:
        assert s.type == "mcq"
        assert "\n\nChoices:\nA. " in s.prompt
        assert f"\n{label}. {reference}" in s.prompt
    if spec.type in ("report", "summary"):
        assert s.type == spec.type
    if spec.image:
        assert s.image is not None
    else:
        assert s.image is None
    if name == "pubmedqa":
        assert s.prompt.startswith("Background sentence.\nResults sentence.\n\nDoes X reduce mortality?")
        assert s.explanation == "X did not reduce mortality."
        assert "A. yes\nB. no\nC. maybe" in s.prompt
    if name == "slake":
        assert Path(s.image).is_file()
    if name == "mimic_cxr_summ":
        assert "FINDINGS: Clear lungs." in s.prompt


def test_save_to_disk_copy_with_image_feature(tmp_path: Path):
    import datasets
    from PIL import Image

    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8), "red")] * 2, "question": ["q1", "q2"], "answer": ["yes", "no"]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    datasets.DatasetDict({"test": ds, "train": ds}).save_to_disk(str(tmp_path / "vqa_rad"))
    samples = load_samples(REGISTRY["vqa_rad"], tmp_path, limit=1)
    assert [s.reference for s in samples] == ["yes"]
    assert isinstance(samples[0].image, dict) and samples[0].image["bytes"]


def test_render_mcq():
    assert render_mcq("Q?", ["x", "y"]) == "Q?\n\nChoices:\nA. x\nB. y"


def test_bundled_tasks():
    demo = load_samples(BUNDLED["demo"])
    assert len(demo) == 12 and {s.type for s in demo} == {"qa", "mcq"}
    assert all(s.image is None for s in demo)
    vlm = load_samples(BUNDLED["demo_vlm"])
    assert len(vlm) == 6
    for s in vlm:
        assert Path(s.image).is_file() and Path(s.image).suffix == ".png"
    from medix_r1.eval.generate import image_data_uri

    assert image_data_uri(vlm[0].image).startswith("data:image/png;base64,")


def test_missing_dataset_error_explains(tmp_path: Path):
    with pytest.raises(MissingDatasetError) as e:
        load_samples(REGISTRY["slake"], tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "slake") in msg
    assert "load_dataset('BoKelvin/SLAKE', split='test').save_to_disk(" in msg
    assert "imgs.zip" in msg and "*.parquet" in msg
    with pytest.raises(MissingDatasetError) as e:
        load_samples(REGISTRY["mimic_cxr_report"], tmp_path)
    assert "PhysioNet" in str(e.value) and "'mimic_cxr'" in str(e.value)


def test_missing_dataset_cli(tmp_path: Path, capsys):
    rc = main(["eval", "generate", "--model", "x.gguf", "--tasks", "medqa", "--out", str(tmp_path / "o"),
               "--data-root", str(tmp_path / "none")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "GBaker/MedQA-USMLE-4-options-hf" in err and "save_to_disk" in err


def test_yaml_custom_task(tmp_path: Path):
    _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"q": "Name the largest artery.", "a": "The aorta", "img": None},
            {"q": "Pick the vein.", "opts": ["Aorta", "Vena cava"], "a": 1, "img": None},
        ],
    )
    (tmp_path / "task.yaml").write_text(
        "name: my_task\npath: mine.jsonl\nformat: jsonl\ntype: qa\nquestion: q\nanswer: a\nchoices: opts\n"
    )
    (spec,) = resolve_tasks(["my_task"], [str(tmp_path / "task.yaml")])
    a, b = load_samples(spec)
    assert (a.type, a.reference) == ("qa", "The aorta")
    assert (b.type, b.reference, b.answer_label) == ("mcq", "Vena cava", "B")
    (tmp_path / "bad.yaml").write_text("name: x\npath: mine.jsonl\nquestoin: q\n")
    with pytest.raises(TaskError, match="unknown key"):
        load_task_file(tmp_path / "bad.yaml")
    with pytest.raises(TaskError, match="unknown task"):
        resolve_tasks(["nope"])


# -- judge --------------------------------------------------------------------------------------------------


def test_strip_reasoning():
    assert strip_reasoning("<think>long</think> Aorta") == "Aorta"
    assert strip_reasoning("<X_RAY><thinking>a</thinking><answer>B</answer>") == "<answer>B</answer>"
    assert strip_reasoning("no tags") == "no tags"


@pytest.mark.parametrize(
    ("reply", "template", "want"),
    [
        ('{"score": 1}', "base", 1),
        ('{"score": 0}', "base", 0),
        ('```json\n{"score": 1}\n```', "base", 1),
        ('The answer is right. {"score": "1"}', "base", 1),
        ("<think>hmm {\"score\": 0}</think>{'score': 1}", "base", 1),
        ("score: 4", "mimic", 4),
        ('{"score": 3.5}', "mimic", 3.5),
        ('{"score": 2}', "base", None),  # out of range for binary
        ('{"score": 7}', "mimic", None),
        ('{"score": true}', "base", None),
        ('{"score": 1} ... actually {"score": 0}', "base", None),  # contradicting itself
        ("I think it is correct", "base", None),
        ("", "base", None),
        ("@@##!!", "mimic", None),
    ],
)
def test_parse_score(reply, template, want):
    assert parse_score(reply, template) == want


def test_aggregate():
    assert aggregate([1, 1, 0], "base") == 1
    assert aggregate([0, 1, 0], "base") == 0
    assert aggregate([1, 1, 1], "base") == 1
    assert aggregate([3, 4, 5], "mimic") == 4
    assert aggregate([0, 0, 1], "mimic") == pytest.approx(1 / 3)


class ScriptedJudge:
    """Replays fixed replies: the protocol's bookkeeping, not a judge's quality, is under test here."""

    remote = True
    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def reply_many(self, conversations, template):
        out = []
        for c in conversations:
            self.calls.append([dict(m) for m in c])
            out.append(self.replies.pop(0))
        return out


ROW = {"id": "a", "task": "t", "type": "mcq", "prompt": "Q?\n\nChoices:\nA. x\nB. y", "reference": "y",
       "answer_label": "B", "response": "<think>...</think>B"}  # fmt: skip


def test_three_rounds_in_one_conversation():
    j = ScriptedJudge(['{"score": 1}', '{"score": 0}', '{"score": 1}'])
    (c,) = judge_conversations([ROW], j)
    assert c.error is None and [r["score"] for r in c.rounds] == [1, 0, 1]
    roles = [m["role"] for m in c.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert c.messages[3]["content"] == REEVALUATE == c.messages[5]["content"]
    assert "Predicted answer:\nB\n" in c.messages[1]["content"]  # reasoning cut off
    assert len(j.calls) == 3 and j.calls[2] == c.messages[:-1]  # each round sees the whole history


def test_unparseable_reply_is_retried_then_an_error_not_zero():
    j = ScriptedJudge(['{"score": 1}', "garbage", "still garbage", "nope"])
    (c,) = judge_conversations([ROW], j, max_parse_retries=2)
    assert c.error is not None and "unparseable" in c.error and "nope" in c.error
    assert len(j.calls) == 4  # round 1 ok, round 2: first try + 2 retries
    from medix_r1.eval.grading import _judgement_row

    row = _judgement_row(c, "scripted")
    assert row["score"] is None and row["votes"] == [1]
    assert row["rounds"][-1]["reply"] == "nope"


def test_retry_recovers():
    j = ScriptedJudge(["???", '{"score": 0}', '{"score": 0}', '{"score": 1}'])
    (c,) = judge_conversations([ROW], j)
    assert c.error is None and [r["score"] for r in c.rounds] == [0, 0, 1]
    assert c.rounds[0]["attempts"] == 2


def test_mimic_template_for_reports():
    msgs = build_first_messages({"type": "report", "question": "Write a report", "reference": "Clear lungs.",
                                 "response": "Normal chest."})  # fmt: skip
    assert "0 = completely incorrect" in msgs[1]["content"] and "5 = perfect" in msgs[1]["content"]


# -- score --------------------------------------------------------------------------------------------------


def _fake_run(root: Path, model: str, tasks: dict[str, tuple[str, list]]) -> None:
    for task, (template, scores) in tasks.items():
        d = root / task
        rows = [{"id": f"{task}-{i}", "model": model} for i in range(len(scores) + 1)]  # one not judged yet
        _write_jsonl(d / "generations.jsonl", rows)
        _write_jsonl(
            d / "judgements.jsonl",
            [{"id": f"{task}-{i}", "template": template, "score": s} for i, s in enumerate(scores)],
        )


def test_score_files_agree(tmp_path: Path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _fake_run(a, "model-a", {"demo": ("base", [1, 0, 1, None]), "mimic_cxr_report": ("mimic", [5, 3, None])})
    _fake_run(b, "model-b", {"demo": ("base", [1, 1, 1, 1])})
    label, scores = score_dir(a)
    by = {s.task: s for s in scores}
    assert label == "model-a"
    assert by["demo"].accuracy == pytest.approx(2 / 3) and by["demo"].errors == 1 and by["demo"].pending == 1
    assert by["mimic_cxr_report"].accuracy == pytest.approx(8 / 10)
    assert main(["eval", "score", "--out", str(a)]) == 0
    out = capsys.readouterr().out
    assert "66.7" in out and "80.0" in out and "73.3" in out  # average of the two tasks
    with (a / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["task"]: r["accuracy"] for r in rows} == {
        "demo": "0.666667",
        "mimic_cxr_report": "0.800000",
        "average": "0.733333",
    }
    md = (a / "scores.md").read_text()
    assert "| demo | correct/total | 66.7 | 3 | 1 | 1 |" in md
    assert "| average over tasks |  | 73.3 |" in md
    png = (a / "scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["eval", "score", "--out", str(a), "--compare", str(b)]) == 0
    out = capsys.readouterr().out
    assert "model-a" in out and "model-b" in out and "+33.3" in out
    md = (a / "scores.md").read_text()
    assert "`model-a` vs `model-b`" in md and "+33.3" in md
    with (a / "scores.csv").open() as f:
        runs = {r["run"] for r in csv.DictReader(f)}
    assert runs == {"model-a", "model-b"}
    write_reports(tmp_path, [score_dir(b)])  # one run, other folder: fine too


def test_score_without_judgements(tmp_path: Path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["eval", "score", "--out", str(tmp_path)]) == 2
    assert "medix eval judge" in capsys.readouterr().err


# -- refusing a text-only model on an image task (real GGUF, loads in about a second) ----------------------


def test_text_only_gguf_refused_on_images(gguf_path: Path, tmp_path: Path, capsys):
    rc = main(["eval", "generate", "--model", str(gguf_path), "--tasks", "demo_vlm", "--out", str(tmp_path),
               "--n-ctx", "512", "--threads", "1"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "demo_vlm" in err and "text-only" in err and "--mmproj" in err
    assert not (tmp_path / "demo_vlm" / "generations.jsonl").exists()


def test_text_only_checkpoint_refused_on_images(tmp_path: Path):
    from medix_r1.eval.generate import ImageNotSupportedError, generate_task

    class TextOnly:  # the refusal happens before any model call
        name = "text-only"
        supports_images = False
        why_no_images = "text-only is a text-only checkpoint (no vision tower)"

    with pytest.raises(ImageNotSupportedError, match="no vision tower"):
        generate_task(load_samples(BUNDLED["demo_vlm"]), TextOnly(), tmp_path, task="demo_vlm")
