"""Score whole articles: split into statements, classify them, summarise the article's stance.

Streaming: articles are read from the iterable in bounded chunks (enough statements for 32
batches, or at most as many articles); while one chunk is scored and yielded, a thread reads and
segments the next ones, at most two ahead, so at most three chunks are held and a generator of a
million articles is never held in memory. Exactly one record comes out per article,
in input order; a bad article gives an error record instead of stopping the run.
"""
from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..model.labels import LABELS
from .classifier import Prediction, StanceClassifier
from .segment import Segmenter, Statement, default_segmenter

# A chunk ends once it holds this many batches' worth of statements, or this many batches' worth
# of articles (so a stream of empty articles stays bounded too). Large, because each chunk is
# length-sorted on its own and a small pool pads more: `python bench/bench_chunking.py`.
CHUNK_BATCHES = 32
# Dominant-stance rule: at least MIN_EVIDENCE pro/anti statements, and the larger side at least
# MARGIN times the smaller one; fewer stance statements -> "neutral", no clear margin -> "mixed".
MIN_EVIDENCE = 2
MARGIN = 2


def score_articles(
    articles: Iterable[Any],
    model: StanceClassifier | str | Path | None = None,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    keep_text: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield one record per article, in order, reading ``articles`` lazily.

    An article is a ``str`` (its id is its position in the input) or a mapping with ``text`` and
    optionally ``id``; its other keys are passed through under the same names (``statements``,
    ``summary`` and ``error`` are ours). A record is ``{"id", ..., "statements": [...],
    "summary": {...}}``, or ``{"id", ..., "error": "TypeError: ..."}`` for an unusable article. A
    mapping with an ``error`` and no ``text`` (an upstream failure, e.g. a file that could not be
    read) is passed through unchanged. ``model`` is a loaded classifier, a model dir, or ``None``
    for the default model (loaded now, not at the first ``next()``). ``keep_text`` also puts the
    article's ``text`` into its record (before ``statements``), so that a report can show the full
    text around the statements; off by default, since it roughly doubles the output.
    """
    clf = model if isinstance(model, StanceClassifier) else StanceClassifier.load(model)
    return _stream(clf, articles, batch_size or clf.batch_size, progress, keep_text)


def summarize(statements: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, shares, stance index, dominant stance and strongest pro/anti statement of an article."""
    n = len(statements)
    counts = {label: 0 for label in LABELS}
    for statement in statements:
        counts[statement["label"]] += 1
    pro, anti = counts["pro"], counts["anti"]
    return {
        "n_statements": n,
        "counts": counts,
        "shares": {label: counts[label] / n if n else 0.0 for label in LABELS},
        "stance_index": stance_index(pro, anti),
        "dominant": dominant_stance(pro, anti),
        "strongest_pro": _strongest(statements, "pro"),
        "strongest_anti": _strongest(statements, "anti"),
    }


def stance_index(pro: int, anti: int) -> float | None:
    """(pro - anti) / (pro + anti): +1 all stance statements pro, -1 all anti; None without any."""
    return (pro - anti) / (pro + anti) if pro + anti else None


def dominant_stance(pro: int, anti: int) -> str:
    """``pro``/``anti`` only on enough evidence and a clear majority (see MIN_EVIDENCE, MARGIN)."""
    if pro + anti < MIN_EVIDENCE:
        return "neutral"
    if pro >= MARGIN * anti:
        return "pro"
    if anti >= MARGIN * pro:
        return "anti"
    return "mixed"


def _strongest(statements: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    """The statement labelled ``label`` with the highest probability for it, or None."""
    candidates = [(s["scores"][label], i) for i, s in enumerate(statements) if s["label"] == label]
    if not candidates:
        return None
    score, i = max(candidates)
    s = statements[i]
    return {"index": i, "text": s["text"], "start": s["start"], "end": s["end"], "score": score}


def _stream(
    clf: StanceClassifier, articles: Iterable[Any], batch_size: int, progress: bool, keep_text: bool
) -> Iterator[dict[str, Any]]:
    """Score each chunk's statements in one ``predict`` call and yield its records, while the next
    chunk is read and segmented in a thread (so segmenting never idles the engine)."""
    total = len(articles) if isinstance(articles, Sized) else None
    chunks = _prefetched(_chunks(iter(articles), CHUNK_BATCHES * batch_size, keep_text))
    with tqdm(desc="scoring", total=total, unit=" articles", file=sys.stderr, disable=not progress) as bar:
        for chunk in chunks:
            texts = [s.text for _, statements in chunk for s in statements or ()]
            predictions = iter(clf.predict(texts, batch_size=batch_size))
            for record, statements in chunk:
                if statements is not None:
                    scored = [_statement_record(s, next(predictions)) for s in statements]
                    record["statements"] = scored
                    record["summary"] = summarize(scored)
                bar.update()
                yield record


_Chunk = list[tuple[dict[str, Any], "list[Statement] | None"]]


def _chunks(source: Iterator[Any], bound: int, keep_text: bool) -> Iterator[_Chunk]:
    """Chunks of (record to fill, statements), each of ``bound`` statements or articles, the first
    too: every chunk is one length-sorted pool, and a small first chunk (one batch, so that the
    engine started at once) cost more in padding than its head start won back (``make bench``)."""
    segmenter = default_segmenter()
    position = 0
    while True:
        chunk: _Chunk = []
        n_statements = 0
        for article in source:
            record, statements = _prepare(article, position, segmenter, keep_text)
            position += 1
            chunk.append((record, statements))
            n_statements += len(statements or ())
            if len(chunk) >= bound or n_statements >= bound:
                break
        if not chunk:
            return
        yield chunk


def _prefetched(items: Iterator[_Chunk], depth: int = 1) -> Iterator[_Chunk]:
    """``items`` produced by a worker thread, at most ``depth`` ahead of the consumer.

    The engines and the tokenizer release the GIL while they compute, so the pure-Python segmenter
    runs meanwhile. An exception in the worker (e.g. from the caller's iterable) is raised here, in
    order; a consumer that stops early stops the worker at its next item.
    """
    channel: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                channel.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((False, item)):
                    return
            put((True, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((True, exc))

    worker = threading.Thread(target=work, name="exportstance-segment", daemon=True)
    worker.start()
    try:
        while True:
            done, value = channel.get()
            if done:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()


def _prepare(
    article: Any, position: int, segmenter: Segmenter, keep_text: bool = False
) -> tuple[dict[str, Any], list[Statement] | None]:
    """The record to fill and the article's statements; statements None means the record is final."""
    if isinstance(article, str):
        return ({"id": position, "text": article} if keep_text else {"id": position}), segmenter.split(article)
    if not isinstance(article, Mapping):
        message = f"article at position {position} is {type(article).__name__}, expected str or a mapping with 'text'"
        return {"id": position, "error": f"TypeError: {message}"}, None
    if "text" not in article and "error" in article:
        return dict(article), None
    record = {"id": position if article.get("id") is None else article["id"]}
    record.update((k, v) for k, v in article.items() if k not in ("id", "text", "error"))
    text = article.get("text")
    if "text" not in article:
        record["error"] = f"KeyError: article at position {position} has no 'text'"
    elif not isinstance(text, str):
        record["error"] = f"TypeError: text at position {position} is {type(text).__name__}, expected str"
    else:
        if keep_text:
            record["text"] = text
        try:
            return record, segmenter.split(text)
        except Exception as exc:  # one odd text must not end a million-article run
            record["error"] = f"{type(exc).__name__}: segmenting article at position {position}: {exc}"
    return record, None


def _statement_record(statement: Statement, prediction: Prediction) -> dict[str, Any]:
    return {
        "text": statement.text,
        "start": statement.start,
        "end": statement.end,
        "label": prediction.label,
        "scores": prediction.scores,
        "confidence": prediction.confidence,
        "n_windows": prediction.n_windows,
    }
