"""The bundled labeled answer pairs, default `--pairs` of `medix judge validate`: well formed and balanced."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

import pytest
from medix_r1 import MODALITY_TAGS

CATEGORIES = {
    "synonym_lay_term",
    "abbreviation",
    "laterality_location",
    "negation",
    "wrong_organ",
    "dose_unit",
    "near_miss_diagnosis",
    "more_specific",
    "less_specific",
    "hedging",
    "mc_letter_vs_text",
    "modality_tagged",
    "exact_or_paraphrase",
}
# Near misses are wrong by construction; every other category must show the judge both labels.
SINGLE_LABEL = {"near_miss_diagnosis": False}
TAG = re.compile(r"^<([^<>]*)>\s*(.*)$", re.DOTALL)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    # Read as package data, the way an installed wheel exposes it (via the top package: no judge imports).
    text = (resources.files("medix_r1") / "judge" / "data" / "pairs.jsonl").read_text(encoding="utf-8")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        assert line.strip(), f"line {n} is blank"
        out.append(json.loads(line))
    return out


def test_size_fields_and_types(rows):
    assert len(rows) >= 300
    allowed = {"question", "answer", "ground_truth", "match", "category"}
    for n, r in enumerate(rows, 1):
        assert set(r) <= allowed, (n, set(r) - allowed)
        for key in ("answer", "ground_truth", "category"):
            assert isinstance(r[key], str) and r[key].strip() == r[key] and r[key], (n, key)
        assert isinstance(r["match"], bool), n
        if "question" in r:
            assert isinstance(r["question"], str) and r["question"].strip(), n
        assert r["category"] in CATEGORIES, (n, r["category"])
    assert sum("question" in r for r in rows) >= 0.9 * len(rows)


def test_categories_are_covered_with_both_labels(rows):
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 10, counts
    for cat in CATEGORIES:
        labels = {r["match"] for r in rows if r["category"] == cat}
        if cat in SINGLE_LABEL:
            assert labels == {SINGLE_LABEL[cat]}, cat
        else:
            assert labels == {True, False}, cat


def test_overall_balance(rows):
    rate = sum(r["match"] for r in rows) / len(rows)
    assert 0.40 <= rate <= 0.60, rate


def test_no_duplicate_pairs(rows):
    keys = Counter((r["answer"], r["ground_truth"]) for r in rows)
    assert [k for k, c in keys.items() if c > 1] == []


def test_tagged_ground_truths_use_known_tags(rows):
    known = set(MODALITY_TAGS)
    tagged = 0
    for n, r in enumerate(rows, 1):
        gt = r["ground_truth"]
        if not gt.startswith("<"):
            assert "<" not in gt and ">" not in gt, n
            continue
        m = TAG.match(gt)
        assert m, (n, gt)
        assert m.group(1) in known, (n, m.group(1))
        assert m.group(2).strip(), (n, "empty answer after the tag")
        tagged += 1
        # The answer is what the policy's answer block holds: never a tag.
        assert not TAG.match(r["answer"]), n
    assert 0.2 <= tagged / len(rows) <= 0.35, tagged
    assert all(r["ground_truth"].startswith("<") for r in rows if r["category"] == "modality_tagged")


def test_readme_counts_match_the_file(rows):
    readme = (resources.files("medix_r1") / "judge" / "data" / "README.md").read_text(encoding="utf-8")
    table = {
        m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \|", readme, re.MULTILINE)
    }
    actual = {
        cat: (
            sum(r["category"] == cat for r in rows),
            sum(r["category"] == cat and r["match"] for r in rows),
            sum(r["category"] == cat and not r["match"] for r in rows),
        )
        for cat in CATEGORIES
    }
    assert table == actual
    assert f"It has {len(rows)} pairs" in readme
