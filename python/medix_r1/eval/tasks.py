"""Evaluation tasks: the paper's 17 benchmarks and two bundled demos, read from local copies only.

A :class:`TaskSpec` maps a dataset's own columns onto :class:`Sample` (question, reference answer, choices,
image). Local copies live under a data root (``--data-root``, ``$MEDIX_DATA`` or
``~/.cache/medix-r1/eval-data``) as a ``datasets`` ``save_to_disk`` directory, Parquet or JSONL; a missing
copy raises :class:`MissingDatasetError` with the exact layout and the snippet that prepares it on a
connected machine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from medix_r1 import jsonl
from medix_r1.config import build, check_fields, short
from medix_r1.errors import ConfigError, DataError

__all__ = [
    "BUNDLED",
    "REGISTRY",
    "MissingDatasetError",
    "Sample",
    "TaskError",
    "TaskSpec",
    "default_data_root",
    "load_samples",
    "load_task_file",
    "render_mcq",
    "resolve_tasks",
]

TYPES = ("qa", "mcq", "report", "summary")
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MIMIC_REPORT_QUESTION = (
    "You are given a chest X-ray. Write a detailed radiology report for this image: describe the findings "
    "and give an impression."
)
MIMIC_SUMM_PREFIX = "Summarize the findings of the following radiology report into a concise impression.\n\n"


class TaskError(DataError):
    """A task definition or a task's data is wrong (unknown name, bad YAML, missing column)."""


class MissingDatasetError(DataError, FileNotFoundError):
    """The local copy of a benchmark is not there; the message says what to put where and how."""


@dataclass(frozen=True)
class Sample:
    """One evaluation item: what the model sees (``prompt``, ``image``) and what the judge compares with."""

    id: str
    task: str
    type: str  # qa | mcq (binary BASE template) or report | summary (0-5 MIMIC template)
    question: str
    prompt: str
    reference: str
    choices: list[str] | None = None
    answer_label: str | None = None
    image: Any = None  # None, a file path, {"bytes", "path"} or raw bytes; decoded only by the generator
    image_ref: str | None = None  # a short printable description of the image (path or "<bytes>")
    explanation: str | None = None  # e.g. PubMedQA's long answer, shown to the judge as context


TaskType = Literal["qa", "mcq", "report", "summary"]


@dataclass
class TaskSpec:
    """How one dataset's columns become samples. Column names may list alternatives as ``"a|b"`` (the first
    present wins)."""

    name: str
    type: TaskType = "qa"  # a qa task whose row has choices is rendered as mcq
    question: str | None = "question"
    answer: str = "answer"
    choices: str | list[str] | None = None  # a list/dict column, or several columns, one option each
    fixed_choices: list[str] | None = None  # the same options for every row (PubMedQA yes/no/maybe)
    answer_format: Literal["index", "label", "text", "auto"] = "auto"
    context: str | None = None  # a column put before the question (a list is joined by newlines)
    prefix: str = ""  # text put before the question
    fixed_question: str | None = None  # the question when the dataset has none (report generation)
    explanation: str | None = None  # a column shown to the judge beside the reference
    image: str | None = None
    image_dir: str | None = None  # where relative image paths are resolved, relative to the task's data dir
    id: str | None = None
    filter: dict[str, Any] = field(default_factory=dict)  # keep rows whose column equals the value
    # where the data comes from
    path: str | None = None  # explicit local copy (YAML tasks); else <data root>/<name>
    format: Literal["auto", "arrow", "parquet", "jsonl"] = "auto"
    split: str | None = None  # the split inside a DatasetDict saved with save_to_disk
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    notes: str = ""  # extra preparation instructions (images, credentials)
    bundled: bool = False

    def __post_init__(self) -> None:
        try:  # every field by its annotation (the Literals: type, answer_format, format)
            check_fields(self, "")
        except ConfigError as e:
            raise TaskError(f"task {short(self.name)}: {e}") from None
        if self.question is None and self.fixed_question is None:
            raise TaskError(f"task {self.name!r}: give a question column or a fixed_question")


def _mmlu(subject: str) -> TaskSpec:
    return TaskSpec(
        name=f"mmlu_{subject}",
        type="mcq",
        choices="choices",
        answer_format="index",
        hub_id="hails/mmlu_no_train",
        hub_config=subject,
        hub_split="test",
    )


_EVAL_SETS = "sahalshajim/medix-eval-sets"


def _eval_set(name: str, type: TaskType, config: str, **columns: Any) -> TaskSpec:
    """A task whose test split lives in the project's eval-sets repository (:data:`_EVAL_SETS`) as
    ``config``."""
    return TaskSpec(name=name, type=type, hub_id=_EVAL_SETS, hub_config=config, hub_split="test", **columns)


# PMC-VQA's table layout (its MCQ and its hard free-text variant)
_PMC_COLUMNS = {"question": "question|Question", "image": "image|Figure_path", "image_dir": "images"}

REGISTRY: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        *(
            _mmlu(s)
            for s in (
                "clinical_knowledge",
                "college_biology",
                "college_medicine",
                "medical_genetics",
                "professional_medicine",
                "anatomy",
            )
        ),
        TaskSpec(
            name="medmcqa",
            type="mcq",
            choices=["opa", "opb", "opc", "opd"],
            answer="cop",
            answer_format="index",
            id="id",
            hub_id="openlifescienceai/medmcqa",
            hub_split="validation",
        ),
        TaskSpec(
            name="medqa",
            type="mcq",
            question="sent1",
            choices=["ending0", "ending1", "ending2", "ending3"],
            answer="label",
            answer_format="index",
            id="id",
            hub_id="GBaker/MedQA-USMLE-4-options-hf",
            hub_split="test",
        ),
        TaskSpec(
            name="usmle_sa",
            type="mcq",
            choices="options",
            answer="answer",
            hub_id="HuggingSara/usmle_self_assessment",
            hub_split="train",
        ),
        _eval_set(
            "pubmedqa",
            "mcq",
            "pubmedqa",
            question="QUESTION",
            context="CONTEXTS",
            fixed_choices=["yes", "no", "maybe"],
            answer="final_decision",
            answer_format="text",
            explanation="LONG_ANSWER",
        ),
        _eval_set(
            "mimic_cxr_summ",
            "summary",
            "mimic_cxr",
            question="report",
            prefix=MIMIC_SUMM_PREFIX,
            answer="summary",
            notes="MIMIC-CXR text is credentialed data: you need PhysioNet credentials "
            "(https://physionet.org/content/mimic-cxr/) and must accept its data use agreement before you "
            "may download or copy it.",
        ),
        TaskSpec(
            name="slake",
            type="qa",
            image="img_name",
            image_dir="imgs",
            id="qid",
            filter={"q_lang": "en"},
            hub_id="BoKelvin/SLAKE",
            hub_split="test",
            notes="SLAKE's images are not in the table: download imgs.zip from the same hub repository "
            "(huggingface_hub.hf_hub_download('BoKelvin/SLAKE', 'imgs.zip', repo_type='dataset')) and unzip "
            "it into the task directory so that imgs/<img_name> exists (e.g. imgs/xmlab102/source.jpg). "
            "Only English items (q_lang == 'en') are evaluated.",
        ),
        TaskSpec(
            name="vqa_rad",
            type="qa",
            image="image",
            hub_id="flaviagiammarino/vqa-rad",
            hub_split="test",
        ),
        TaskSpec(
            name="pathvqa",
            type="qa",
            image="image",
            hub_id="flaviagiammarino/path-vqa",
            hub_split="test",
        ),
        _eval_set(
            "pmc_vqa",
            "mcq",
            "pmc_vqa",
            answer="answer|Answer_label|Answer",
            choices="choices|options",
            **_PMC_COLUMNS,
        ),
        _eval_set("pmc_vqa_hard", "qa", "pmc_vqa_hard", answer="answer|Answer", **_PMC_COLUMNS),
        _eval_set(
            "mimic_cxr_report",
            "report",
            "mimic_cxr",
            question=None,
            fixed_question=MIMIC_REPORT_QUESTION,
            answer="report",
            image="image|images",
            image_dir="images",
            notes="MIMIC-CXR images and reports are credentialed data: you need PhysioNet credentials "
            "(https://physionet.org/content/mimic-cxr-jpg/) and must accept its data use agreement; put the "
            "JPEGs the table refers to under images/ in the task directory if the table holds paths.",
        ),
    ]
}

BUNDLED: dict[str, TaskSpec] = {
    "demo": TaskSpec(name="demo", type="qa", choices="choices", id="id", format="jsonl", bundled=True),
    "demo_vlm": TaskSpec(
        name="demo_vlm", type="qa", choices="choices", id="id", image="image", format="jsonl", bundled=True
    ),
}


def bundled_dir() -> Path:
    return Path(__file__).parent / "data"


def default_data_root() -> Path:
    env = os.environ.get("MEDIX_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "medix-r1" / "eval-data"


def all_tasks() -> dict[str, TaskSpec]:
    return {**BUNDLED, **REGISTRY}


# -- custom tasks --------------------------------------------------------------------------------

_YAML_ALIASES = {"question_column": "question", "answer_column": "answer", "choices_column": "choices"}
_YAML_ALIASES.update({"image_column": "image", "id_column": "id", "context_column": "context"})


def load_task_file(path: str | Path) -> list[TaskSpec]:
    """Tasks defined in YAML: one mapping, or a list of them, or ``{tasks: [...]}``. Each needs ``name`` and
    ``path`` (relative paths are resolved against the YAML file's folder) and may set any TaskSpec field,
    e.g. ``format``, ``type`` (qa|mcq|report|summary), ``question``, ``answer``, ``choices``, ``image``."""
    from medix_r1.config import load_yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise TaskError(f"task file not found: {p}", path=p)
    try:
        data = load_yaml(p)
    except ConfigError as e:
        raise TaskError(str(e), path=p) from None
    if isinstance(data, dict) and "tasks" in data:
        data = data["tasks"]
    items = data if isinstance(data, list) else [data]
    known = {f.name for f in fields(TaskSpec)} - {"bundled", "hub_id", "hub_config", "hub_split"}
    out = []
    for i, item in enumerate(items):
        where = f"{p} (task {i + 1})"
        if not isinstance(item, dict):
            raise TaskError(f"{where}: expected a mapping with name, path, type and column names")
        item = {_YAML_ALIASES.get(k, k): v for k, v in item.items()}
        unknown = sorted(set(item) - known)
        if unknown:
            raise TaskError(
                f"{where}: unknown key(s) {', '.join(short(k, 40) for k in unknown[:10])}; "
                f"known: {', '.join(sorted(known))}"
            )
        if not item.get("name") or not item.get("path"):
            raise TaskError(f"{where}: `name` and `path` (the local data file or directory) are required")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(item["name"])):
            raise TaskError(f"{where}: name {short(item['name'])} may use letters, digits, _ . - only")
        dpath = Path(str(item["path"])).expanduser()
        item["path"] = str(dpath if dpath.is_absolute() else (p.parent / dpath))
        try:  # every value converted and checked by its TaskSpec annotation
            out.append(build(TaskSpec, item))
        except ConfigError as e:
            raise TaskError(f"{where}: {e}", path=p) from None
    return out


def resolve_tasks(names: list[str], task_files: list[str] | None = None) -> list[TaskSpec]:
    """TaskSpecs for ``names`` (built-in, bundled or from ``task_files``); ``all``: the 17 benchmarks."""
    table = all_tasks()
    for tf in task_files or []:
        for t in load_task_file(tf):
            table[t.name] = t
    out: list[TaskSpec] = []
    for n in names:
        if n == "all":
            out.extend(REGISTRY.values())
            continue
        if n not in table:
            raise TaskError(
                f"unknown task {n!r}; known: {', '.join(table)} (or define your own in a task file)"
            )
        out.append(table[n])
    first: dict[str, TaskSpec] = {}
    for t in out:
        first.setdefault(t.name, t)
    return list(first.values())


# -- reading local copies --------------------------------------------------------------------------------


def task_data_path(spec: TaskSpec, data_root: str | Path | None = None) -> Path:
    if spec.bundled:
        return bundled_dir() / f"{spec.name}.jsonl"
    if spec.path:
        return Path(spec.path).expanduser()
    root = Path(data_root).expanduser() if data_root else default_data_root()
    return root / spec.name


def prepare_snippet(spec: TaskSpec, target: Path) -> str:
    args = [repr(spec.hub_id)]
    if spec.hub_config:
        args.append(repr(spec.hub_config))
    args.append(f"split={spec.hub_split or 'test'!r}")
    return (
        "    from datasets import load_dataset\n"
        f"    load_dataset({', '.join(args)}).save_to_disk({str(target)!r})"
    )


def _missing(spec: TaskSpec, p: Path, why: str) -> MissingDatasetError:
    lines = [f"task {spec.name!r}: {why}: {p}."]
    if spec.hub_id:
        lines.append(
            f"Expected a local copy of {spec.hub_id}"
            + (f" (config {spec.hub_config})" if spec.hub_config else "")
            + f", split {spec.hub_split}, in {p}/ as one of: a `datasets` save_to_disk directory "
            "(dataset_info.json, state.json, *.arrow), Parquet file(s) (*.parquet), or JSON lines (*.jsonl)."
        )
        lines.append(f"Columns used: {describe_columns(spec)}.")
        lines.append("Prepare it on a machine with network access, then copy the directory here:")
        lines.append(prepare_snippet(spec, p))
        lines.append(
            "(or point the data root or MEDIX_DATA at a folder holding <task>/ directories; medix-r1 "
            "never downloads data)"
        )
    else:
        lines.append(
            "Point `path` in the task's YAML at a save_to_disk directory, a .parquet or a .jsonl file."
        )
    if spec.notes:
        lines.append(spec.notes)
    return MissingDatasetError("\n".join(lines))


def describe_columns(spec: TaskSpec) -> str:
    parts = []
    if spec.question:
        parts.append(f"question={spec.question}")
    if spec.context:
        parts.append(f"context={spec.context}")
    if spec.choices:
        ch = spec.choices if isinstance(spec.choices, str) else ",".join(spec.choices)
        parts.append(f"choices={ch}")
    parts.append(f"answer={spec.answer} ({spec.answer_format})")
    if spec.explanation:
        parts.append(f"explanation={spec.explanation}")
    if spec.image:
        parts.append(f"image={spec.image}")
    if spec.filter:
        parts.append("filter " + ", ".join(f"{k}=={v!r}" for k, v in spec.filter.items()))
    return "; ".join(parts)


def _read_jsonl(p: Path) -> Iterator[dict]:
    try:
        yield from jsonl.read(p)
    except DataError as e:
        raise TaskError(str(e), path=e.path, line=e.line) from None


def _read_parquet(files: list[Path]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=256):
            yield from batch.to_pylist()


def _read_arrow_dir(p: Path, spec: TaskSpec) -> Iterator[dict]:
    import datasets

    obj = datasets.load_from_disk(str(p))
    if isinstance(obj, datasets.DatasetDict):
        split = spec.split or spec.hub_split
        if split not in obj:
            if len(obj) == 1:
                split = next(iter(obj))
            else:
                raise TaskError(f"{p}: a DatasetDict with splits {list(obj)}; none is {split!r}")
        obj = obj[split]
    # Images stay undecoded ({"bytes", "path"}): only the generator opens the ones it needs.
    for name, feat in obj.features.items():
        inner = getattr(feat, "feature", None)
        if isinstance(feat, datasets.Image):
            obj = obj.cast_column(name, datasets.Image(decode=False))
        elif isinstance(inner, datasets.Image):  # a list of images (Sequence in datasets 3, List in 4)
            obj = obj.cast_column(name, type(feat)(datasets.Image(decode=False)))
    yield from obj


def _rows(spec: TaskSpec, p: Path) -> Iterator[dict]:
    fmt = spec.format
    if p.is_file():
        if fmt == "auto":
            fmt = "parquet" if p.suffix == ".parquet" else "jsonl"
        if fmt == "parquet":
            yield from _read_parquet([p])
        elif fmt == "jsonl":
            yield from _read_jsonl(p)
        else:
            raise TaskError(f"task {spec.name!r}: {p} is a file; format arrow needs a save_to_disk directory")
        return
    if not p.is_dir():
        raise _missing(spec, p, "no local copy")
    is_arrow = any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
    if fmt in ("auto", "arrow") and is_arrow:
        yield from _read_arrow_dir(p, spec)
        return
    split = spec.split or spec.hub_split or ""
    parquet = sorted(p.rglob("*.parquet"))
    jsonl = sorted(p.rglob("*.jsonl"))
    if split:  # prefer files named after the split when several splits are there
        parquet = [f for f in parquet if split in f.name] or parquet
        jsonl = [f for f in jsonl if split in f.name] or jsonl
    if fmt in ("auto", "parquet") and parquet:
        yield from _read_parquet(parquet)
    elif fmt in ("auto", "jsonl") and jsonl:
        for f in jsonl:
            yield from _read_jsonl(f)
    else:
        raise _missing(spec, p, "no readable data (save_to_disk directory, *.parquet or *.jsonl) in")


def _col(spec: TaskSpec, row: dict, names: str | None, what: str, *, required: bool = True) -> Any:
    if names is None:
        return None
    for n in names.split("|"):
        if n in row:
            return row[n]
    if required:
        raise TaskError(
            f"task {spec.name!r}: no {what} column {names!r} in the data (columns: {', '.join(row)}); "
            "fix the column names (YAML tasks: set the matching key)"
        )
    return None


_LABEL_PREFIX = re.compile(r"^\s*\(?([A-Z])[.):]\s*")


def _choices(spec: TaskSpec, row: dict) -> tuple[list[str] | None, list[str] | None]:
    """The options and their labels (None when the row has none)."""
    if spec.fixed_choices:
        return list(spec.fixed_choices), None
    if spec.choices is None:
        return None, None
    if isinstance(spec.choices, list):
        vals = [_col(spec, row, c, "choice") for c in spec.choices]
        return [str(v) for v in vals if v not in (None, "")], None
    v = _col(spec, row, spec.choices, "choices", required=spec.type == "mcq")
    if v is None or v == "" or v == []:
        return None, None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            v = [s for s in re.split(r"\n|\|\|", v) if s.strip()]
    if isinstance(v, dict):
        labels = [str(k) for k in v]
        return [str(x) for x in v.values()], labels
    if isinstance(v, list | tuple):
        opts = [str(x) for x in v]
        # PMC-VQA writes "A:CT scan"; the label is ours to add
        if opts and all(_LABEL_PREFIX.match(o) for o in opts):
            opts = [_LABEL_PREFIX.sub("", o, count=1) for o in opts]
        return opts, None
    raise TaskError(
        f"task {spec.name!r}: choices must be a list, a mapping or columns, got {type(v).__name__}"
    )


def _answer_index(spec: TaskSpec, ans: Any, choices: list[str], labels: list[str] | None) -> int:
    labs = labels or list(LABELS[: len(choices)])
    fmt = spec.answer_format
    if fmt in ("index", "auto") and isinstance(ans, int | float) and not isinstance(ans, bool):
        i = int(ans)
        if 0 <= i < len(choices):
            return i
        raise TaskError(f"task {spec.name!r}: answer index {ans} outside 0..{len(choices) - 1}")
    s = str(ans).strip()
    if fmt == "index" and s.isdigit():
        return _answer_index(spec, int(s), choices, labels)
    if fmt in ("label", "auto"):
        m = _LABEL_PREFIX.match(s + ".") if len(s) <= 3 else None
        key = m.group(1) if m else s
        if key in labs:
            return labs.index(key)
    if fmt in ("text", "auto"):
        norm = [c.strip().lower() for c in choices]
        t = _LABEL_PREFIX.sub("", s, count=1).strip().lower()
        for cand in (s.lower(), t):
            if cand in norm:
                return norm.index(cand)
    raise TaskError(
        f"task {spec.name!r}: answer {ans!r} is not an option ({', '.join(labs)}: {choices}) "
        f"under answer_format {fmt!r}"
    )


def render_mcq(question: str, choices: list[str], labels: list[str] | None = None) -> str:
    """The paper's MCQ rendering: question, blank line, ``Choices:``, one ``A. ...`` line per option."""
    labs = labels or list(LABELS[: len(choices)])
    return question.rstrip() + "\n\nChoices:\n" + "\n".join(f"{a}. {c}" for a, c in zip(labs, choices))


def _image_ref(spec: TaskSpec, val: Any, base: Path) -> tuple[Any, str | None]:
    if val is None or val == "" or val == []:
        return None, None
    if isinstance(val, list | tuple):
        val = val[0]  # the evaluation uses one image per item
    if isinstance(val, dict):
        if val.get("bytes"):
            return {"bytes": val["bytes"], "path": val.get("path")}, val.get("path") or "<bytes>"
        val = val.get("path")
        if not val:
            return None, None
    if isinstance(val, bytes | bytearray):
        return bytes(val), "<bytes>"
    p = Path(str(val))
    if not p.is_absolute():
        cands = [base / spec.image_dir / p] if spec.image_dir else []
        cands.append(base / p)
        p = next((c for c in cands if c.exists()), cands[0])
    return str(p), str(p)


def load_samples(
    spec: TaskSpec, data_root: str | Path | None = None, *, limit: int | None = None
) -> list[Sample]:
    """The task's samples (after its filter, the first ``limit``), in the dataset's order."""
    p = task_data_path(spec, data_root)
    if not p.exists():
        raise _missing(spec, p, "no local copy")
    base = p if p.is_dir() else p.parent
    out: list[Sample] = []
    ids: set[str] = set()
    for i, row in enumerate(_rows(spec, p)):
        if any(row.get(k) != v for k, v in spec.filter.items()):
            continue
        if limit is not None and len(out) >= limit:
            break
        if spec.question is not None:
            question = str(_col(spec, row, spec.question, "question") or "").strip()
        else:
            question = spec.fixed_question or ""
        if spec.context:
            ctx = _col(spec, row, spec.context, "context")
            if isinstance(ctx, dict):  # PubMedQA's original layout {"contexts": [...], ...}
                ctx = ctx.get("contexts", list(ctx.values()))
            ctx = "\n".join(map(str, ctx)) if isinstance(ctx, list | tuple) else str(ctx or "")
            question = f"{ctx.strip()}\n\n{question}" if ctx.strip() else question
        question = spec.prefix + question
        choices, labels = _choices(spec, row)
        ans = _col(spec, row, spec.answer, "answer")
        kind = spec.type
        label = None
        if choices:
            idx = _answer_index(spec, ans, choices, labels)
            reference = choices[idx]
            label = (labels or list(LABELS))[idx]
            prompt = render_mcq(question, choices, labels)
            if kind == "qa":
                kind = "mcq"
        else:
            if kind == "mcq":
                raise TaskError(f"task {spec.name!r}: row {i} has no choices")
            reference = str(ans).strip() if ans is not None else ""
            prompt = question
        if not reference:
            raise TaskError(f"task {spec.name!r}: row {i} has an empty reference answer")
        expl = _col(spec, row, spec.explanation, "explanation", required=False) if spec.explanation else None
        image, image_ref = (None, None)
        if spec.image:
            image, image_ref = _image_ref(spec, _col(spec, row, spec.image, "image"), base)
        sid = row.get(spec.id) if spec.id else None
        sid = str(sid) if sid not in (None, "") else f"{spec.name}-{i:06d}"
        if sid in ids:
            sid = f"{sid}#{i}"
        ids.add(sid)
        out.append(
            Sample(
                id=sid,
                task=spec.name,
                type=kind,
                question=question,
                prompt=prompt,
                reference=reference,
                choices=choices,
                answer_label=label,
                image=image,
                image_ref=image_ref,
                explanation=str(expl) if expl else None,
            )
        )
    return out
