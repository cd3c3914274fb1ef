"""The labelled corpus: schema, size, balance, diversity, double labels and leak-free splits."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import (
    REPO,
    SHARED,
    assert_groups_within_one_split,
    assert_no_near_duplicates_across_splits,
    assert_no_overlap_with_evaluation_only_texts,
)
from exportstance.model.labels import LABELS
from exportstance.training.data import (
    REQUIRED_KEYS,
    SPLITS,
    corpus_stats,
    near_duplicates,
    read_jsonl,
)

CORPUS = REPO / "labels" / "corpus.jsonl"


@pytest.fixture(scope="module")
def rows():
    return read_jsonl(CORPUS)


def test_schema_and_size(rows):
    assert len(rows) >= 2000
    for r in rows:
        missing = [k for k in REQUIRED_KEYS if k not in r]
        assert not missing, f"{r.get('id')}: missing {missing}"
        assert r["label"] in LABELS and r["split"] in SPLITS and r["label_b"] in LABELS
        assert 6 <= len(r["text"].split()) <= 60, r["id"]
    assert len({r["id"] for r in rows}) == len(rows)


def test_loads_with_datasets():
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(CORPUS), split="train")
    assert set(LABELS) <= set(ds.unique("label"))


def test_balance_and_diversity(rows):
    stats = corpus_stats(rows)
    for label in LABELS:
        assert stats["label"][label] / stats["n"] >= 0.25, stats["label"]
    assert stats["n_actors"] >= 30 and stats["n_topics"] >= 15
    assert len(stats["form"]) >= 6
    for split in SPLITS:
        assert all(stats["split"][split][lab] > 0 for lab in LABELS)


def test_every_item_double_labelled_and_disagreements_recorded(rows):
    for r in rows:
        if r["label_a"] != r["label_b"]:
            assert r["adjudication"], f"{r['id']}: disagreement without a recorded resolution"
    agreement = json.loads((REPO / "labels" / "agreement.json").read_text())
    assert agreement["cohen_kappa"] > 0.6


def test_groups_never_cross_splits(rows):
    assert_groups_within_one_split(rows)


def test_no_near_duplicates_across_splits(rows):
    assert_no_near_duplicates_across_splits(rows)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (evaluation-only texts) not beside the checkout")
def test_no_overlap_with_evaluation_only_texts(rows):
    assert_no_overlap_with_evaluation_only_texts([r["text"] for r in rows])


def test_near_duplicate_detector_catches_a_paraphrase():
    a = ["Die Exportkontrollen für KI-Chips nach China werden verschärft, sagte der Minister."]
    b = ["Die Exportkontrollen für KI-Chips nach China werden verschärft, so der Minister.", "Etwas ganz anderes."]
    assert [(i, j) for i, j, _ in near_duplicates(a, b)] == [(0, 0)]
