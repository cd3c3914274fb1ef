"""The real-news corpus (labels/realnews.jsonl): provenance, reserved pages, complete passages in
order, page groups within one split, evaluation splits large enough, no leak of evaluation text."""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

import pytest

from conftest import (
    REPO,
    SHARED,
    assert_groups_within_one_split,
    assert_no_near_duplicates_across_splits,
    assert_no_overlap_with_evaluation_only_texts,
)
from exportstance.model.labels import LABELS
from exportstance.training.data import REQUIRED_KEYS, SPLITS, read_jsonl

REAL = REPO / "labels" / "realnews.jsonl"
REAL_KEYS = ("source_url", "outlet", "date", "passage", "position")


@pytest.fixture(scope="module")
def rows():
    return read_jsonl(REAL)


@pytest.fixture(scope="module")
def passages(rows):
    by = defaultdict(list)
    for r in rows:
        by[r["passage"]].append(r)
    return by


def test_schema_size_and_provenance(rows, passages):
    assert len(rows) >= 3000 and len(passages) >= 350
    for r in rows:
        missing = [k for k in (*REQUIRED_KEYS, *REAL_KEYS) if k not in r]
        assert not missing, f"{r.get('id')}: missing {missing}"
        assert r["label"] in LABELS and r["label_a"] in LABELS and r["label_b"] in LABELS and r["split"] in SPLITS
        assert r["source"].startswith("real news:") and r["source_url"].startswith("http")
        assert r["text"].strip()
    assert len({r["id"] for r in rows}) == len(rows)
    # the real share of statements without stance, not a balanced sample
    assert sum(r["label"] == "neutral" for r in rows) / len(rows) > 0.5


def test_every_passage_is_complete_and_in_order(passages):
    for pid, rs in passages.items():
        assert [r["position"] for r in rs] == list(range(len(rs))), pid
        assert len({(r["source_url"], r["split"], r["group"]) for r in rs}) == 1, pid


def test_no_row_comes_from_a_reserved_page(rows):
    if not (SHARED / "eval" / "reserved.py").is_file():
        pytest.skip("../shared/eval/reserved.py not beside the checkout")
    sys.path.insert(0, str(SHARED / "eval"))
    import reserved

    digests = reserved.reserved_digests()
    hits = sorted({r["source_url"] for r in rows if reserved.digest(r["source_url"]) in digests})
    assert not hits, hits


def test_page_groups_never_cross_splits_and_eval_splits_are_large(rows):
    assert_groups_within_one_split(rows)
    for split in ("dev", "test"):
        part = [r for r in rows if r["split"] == split]
        assert len(part) >= 600 and len({r["passage"] for r in part}) >= 70, split
        assert all(any(r["label"] == lab for r in part) for lab in LABELS), split


def test_no_near_duplicate_statements_across_splits(rows):
    """Statements of 6+ words: short page furniture ("(Reuters)", "Anzeige") recurs on unrelated pages."""
    assert_no_near_duplicates_across_splits(rows, min_words=6)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (evaluation-only texts) not beside the checkout")
def test_no_overlap_with_evaluation_only_texts(rows):
    assert_no_overlap_with_evaluation_only_texts([r["text"] for r in rows])


def test_double_labels_disagreements_resolved_and_kappa_recorded(rows):
    for r in rows:
        if r["label_a"] != r["label_b"]:
            assert r["adjudication"], f"{r['id']}: disagreement without a recorded resolution"
    agreement = json.loads((REPO / "labels" / "real" / "agreement.json").read_text())
    assert agreement["n_statements"] == len(rows)
    assert 0.4 < agreement["cohen_kappa"] < 1.0


def test_paraphrase_tool_rejects_copied_runs_but_not_names_and_numbers():
    sys.path.insert(0, str(REPO / "labels" / "real"))
    from tools import longest_shared_run

    original = "Nvidia darf H20-Chips im Wert von 4,5 Milliarden Dollar wieder nach China liefern, sagte Huang."
    assert longest_shared_run(original, original)[0] > 5
    close = "Laut Huang kann Nvidia wieder H20-Chips für 4,5 Milliarden Dollar nach China verkaufen."
    assert longest_shared_run(original, close)[0] <= 5
    assert re.search(r"\d", original)  # the numbers are shared and do not count
