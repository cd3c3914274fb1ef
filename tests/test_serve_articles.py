"""score_articles: streaming, one record per article in order, error records, summaries."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exportstance import score_articles as root_score_articles
from exportstance.model.labels import LABELS
from exportstance.serve.articles import CHUNK_BATCHES, dominant_stance, score_articles, summarize
from exportstance.serve.classifier import StanceClassifier

ARTICLE = "Washington lockert Chip-Exporte\nDie US-Regierung erlaubt den Verkauf. „Ein Fehler“, sagt der Senator."


@pytest.fixture(scope="module")
def clf(tiny_model_dir) -> StanceClassifier:
    return StanceClassifier.load(tiny_model_dir, batch_size=4, threads=1)  # tiny: 1 thread is fastest


def test_record_layout(clf):
    (record,) = clf.score_articles([{"id": "a1", "text": ARTICLE, "source": "dpa"}])
    assert list(record) == ["id", "source", "statements", "summary"]
    assert record["id"] == "a1" and record["source"] == "dpa"
    statements = record["statements"]
    assert [s["text"] for s in statements] == [
        "Washington lockert Chip-Exporte",
        "Die US-Regierung erlaubt den Verkauf.",
        "„Ein Fehler“, sagt der Senator.",
    ]
    for s in statements:
        assert ARTICLE[s["start"] : s["end"]] == s["text"]
        assert list(s["scores"]) == list(LABELS) and s["confidence"] == s["scores"][s["label"]]
    summary = record["summary"]
    assert summary["n_statements"] == 3 and sum(summary["counts"].values()) == 3
    assert summary["shares"] == {label: summary["counts"][label] / 3 for label in LABELS}


def test_str_articles_get_their_position_as_id(clf):
    assert [r["id"] for r in score_articles(["Eins.", "Zwei.", {"text": "Drei."}], model=clf)] == [0, 1, 2]


def test_error_records_keep_count_and_order(clf):
    articles = ["Gut.", {"id": "x", "text": None}, 7, {"id": "y"}, {"id": "z", "error": "upstream"}, "Schlecht."]
    records = list(score_articles(articles, model=clf))
    assert [r["id"] for r in records] == [0, "x", 2, "y", "z", 5]
    assert records[1]["error"] == "TypeError: text at position 1 is NoneType, expected str"
    assert records[2]["error"].startswith("TypeError: article at position 2 is int")
    assert records[3]["error"].startswith("KeyError")
    assert records[4] == {"id": "z", "error": "upstream"}
    assert "error" not in records[0] and "error" not in records[5]


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_empty_text_gives_zero_statements(clf, text):
    (record,) = score_articles([text], model=clf)
    assert record["statements"] == []
    assert record["summary"]["n_statements"] == 0
    assert record["summary"]["counts"] == {label: 0 for label in LABELS}
    assert record["summary"]["stance_index"] is None and record["summary"]["dominant"] == "neutral"


def test_streaming_reads_only_a_bounded_chunk_ahead(clf):
    """At most three chunks in flight: the one being yielded, one queued, one being segmented."""
    batch_size = 2
    bound = 3 * CHUNK_BATCHES * batch_size
    consumed = yielded = 0

    def endless():
        nonlocal consumed
        while True:
            if consumed - yielded >= bound:
                raise AssertionError(f"read {consumed - yielded} articles ahead of the output")
            consumed += 1
            yield {"id": consumed, "text": "Die Sperren wirken." if consumed % 3 else ""}

    for record in itertools.islice(score_articles(endless(), model=clf, batch_size=batch_size), 2 * bound):
        yielded += 1
        assert record["id"] == yielded
    assert consumed - yielded <= bound


def test_an_error_in_the_input_iterable_reaches_the_caller(clf):
    def broken():
        yield "Die Sperren wirken."
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(score_articles(broken(), model=clf))


def test_stopping_early_stops_the_segmenting_thread(clf):
    import threading
    import time

    records = score_articles(itertools.repeat("Die Sperren wirken."), model=clf, batch_size=2)
    next(records)
    records.close()
    deadline = time.monotonic() + 10
    while any(t.name == "exportstance-segment" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "exportstance-segment" for t in threading.enumerate())


def test_module_level_function_loads_a_model_dir(tiny_model_dir):
    (record,) = root_score_articles(["Die Sperren wirken."], model=tiny_model_dir)
    assert record["summary"]["n_statements"] == 1


_ITEMS = st.one_of(
    st.text(max_size=80),
    st.none(),
    st.integers(),
    st.fixed_dictionaries({"id": st.text(max_size=5), "text": st.one_of(st.text(max_size=80), st.none())}),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_ITEMS, max_size=20))
def test_count_in_equals_count_out(clf, items):
    records = list(score_articles(iter(items), model=clf, batch_size=3))
    assert len(records) == len(items)
    for i, (item, record) in enumerate(zip(items, records)):
        assert record["id"] == (item["id"] if isinstance(item, dict) else i)
        ok = isinstance(item, str) or (isinstance(item, dict) and isinstance(item["text"], str))
        assert ("error" in record) != ok


def test_summary_counts_index_and_strongest():
    def s(label: str, p: float) -> dict:
        scores = {other: (1 - p) / 2 for other in LABELS} | {label: p}
        return {"text": label, "start": 0, "end": 1, "label": label, "scores": scores, "confidence": p}

    summary = summarize([s("pro", 0.6), s("anti", 0.7), s("pro", 0.9), s("neutral", 0.8), s("pro", 0.5)])
    assert summary["counts"] == {"pro": 3, "anti": 1, "neutral": 1}
    assert summary["stance_index"] == pytest.approx(0.5)
    assert summary["dominant"] == "pro"
    assert summary["strongest_pro"]["index"] == 2 and summary["strongest_pro"]["score"] == 0.9
    assert summary["strongest_anti"]["index"] == 1


@pytest.mark.parametrize(
    ("pro", "anti", "expected"),
    [(0, 0, "neutral"), (1, 0, "neutral"), (0, 1, "neutral"), (2, 0, "pro"), (0, 2, "anti"), (1, 1, "mixed"),
     (2, 1, "pro"), (1, 2, "anti"), (3, 2, "mixed"), (5, 2, "pro")],
)
def test_dominant_needs_evidence_and_margin(pro, anti, expected):
    assert dominant_stance(pro, anti) == expected


def test_keep_text_puts_the_article_text_into_the_record(clf):
    """The report needs the full text (line breaks, bullets) around the statements."""
    records = list(score_articles([{"id": "a1", "text": ARTICLE, "source": "dpa"}, "Eins.", {"id": "n", "text": None}],
                                  model=clf, keep_text=True))
    assert list(records[0]) == ["id", "source", "text", "statements", "summary"]
    assert records[0]["text"] == ARTICLE and records[1]["text"] == "Eins."
    assert "text" not in records[2] and "error" in records[2]
