"""Scored article records (``exportstance score`` JSONL) -> one self-contained HTML report.

Rendered by Jinja2 with autoescape on (article text is untrusted input: it only ever reaches the
page as escaped text), charts are inline SVG from matplotlib, CSS and JavaScript are inline: the
file loads nothing from anywhere. To stay usable at 10,000+ articles, only the first page of
articles is in the DOM when the file opens; the others travel as pre-rendered, escaped HTML
strings in a ``<script type="application/json">`` block (Jinja2's ``tojson``, which escapes
``<``, ``>``, ``&`` and ``'`` so no article text can close the block) and are created when their
page is shown. The table rows are all in the HTML (hidden beyond the first page); the script
sorts, filters and pages them.

DOM contract (also for users' own tooling): each article is an element with ``data-article-id``
(its id as text) and ``data-dominant``; each statement an element with ``data-label``
(``pro``/``anti``/``neutral``) and ``data-p`` (the probability of its label, 3 decimals); an
error record is an article element with ``data-error``.
"""
from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..model.labels import LABELS
from .io import json_lines

PAGE_SIZE = 25
TEMPLATE = "report.html.j2"
ARTICLE_TEMPLATE = "article.html.j2"
SCRIPT = "report.js"
TITLE_CHARS = 120
MARKERS = {"pro": "[+]", "anti": "[−]", "neutral": "[○]"}


@dataclass
class Overview:
    """Totals over all records of a report (also returned to the CLI to print)."""

    articles: int = 0
    failed: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    dominant: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def statements(self) -> int:
        return sum(self.labels.values())

    def share(self, label: str) -> float:
        return self.labels[label] / self.statements if self.statements else 0.0


def read_scored(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a scored JSONL file; a line that is not a JSON object becomes an error record."""
    for lineno, record, _ok in json_lines(path, path.name):
        record.setdefault("id", f"{path.name}:{lineno}")
        yield record


def file_sources(paths: Sequence[Path], names: Sequence[str] | None = None) -> list[tuple[str, Iterator[dict[str, Any]]]]:
    """Scored JSONL files as report sources, each named by ``names`` or its file stem."""
    names = list(names) if names is not None else [p.stem for p in paths]
    return [(name, read_scored(path)) for name, path in zip(names, paths)]


def write_report(sources: Sequence[tuple[str, Iterable[dict[str, Any]]]], output: Path,
                 title: str | None = None) -> Overview:
    """Render the records of ``sources`` (name, records) to the file ``output``."""
    html, overview = render_report(sources, title=title)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return overview


def render_report(sources: Sequence[tuple[str, Iterable[dict[str, Any]]]],
                  title: str | None = None) -> tuple[str, Overview]:
    """The report's HTML for records grouped by source (e.g. ``[("examples", records), ...]``)."""
    articles = []
    overview = Overview()
    for name, records in sources:
        for record in records:
            try:
                view = article_view(record, len(articles), name)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed record
                view = article_view({"id": record.get("id", len(articles)) if isinstance(record, dict) else len(articles),
                                     "error": f"not a scored article record ({type(exc).__name__}: {exc})"},
                                    len(articles), name)
            articles.append(view)
            overview.sources[name] += 1
            overview.dominant[view["dominant"]] += 1
            if view["error"] is None:
                overview.articles += 1
                overview.labels.update(s["label"] for s in view["statements"])
            else:
                overview.failed += 1
    env = _environment()
    render_article = env.get_template(ARTICLE_TEMPLATE).module.article
    lazy = {str(a["k"]): str(render_article(a)) for a in articles[PAGE_SIZE:]}
    script = _script()
    html = env.get_template(TEMPLATE).render(
        title=title or "exportstance report",
        overview=overview,
        labels=LABELS,
        markers=MARKERS,
        articles=articles,
        live=articles[:PAGE_SIZE],
        lazy=lazy,
        page_size=PAGE_SIZE,
        charts=_charts(articles),
        script=Markup(script),  # our own static file, not input
        # Content-Security-Policy: only this exact script may run, and nothing may be loaded.
        script_hash="sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii"),
        has={key: any(a[key] for a in articles) for key in ("outlet", "date")} | {"source": len(overview.sources) > 1},
    )
    return html, overview


def article_view(record: dict[str, Any], k: int, source: str) -> dict[str, Any]:
    """What the template needs of one record; anything that is not a scored article becomes an error."""
    error = record.get("error")
    if error is None and not (isinstance(record.get("statements"), list) and isinstance(record.get("summary"), dict)):
        error = "not a scored article record (no 'statements' and 'summary')"
    text = record.get("text") if isinstance(record.get("text"), str) else None
    view: dict[str, Any] = {
        "k": k,
        "id": str(record.get("id", k)),
        "source": source,
        "outlet": _text_or_none(record.get("outlet")),
        "date": _text_or_none(record.get("date")),
        "error": None if error is None else str(error),
        "where": " line ".join(str(record[key]) for key in ("file", "line") if record.get(key) is not None),
        "title": _title(record, text),
        "statements": [],
        "segments": [],
        "strongest": [],
        "note": None,
        "dominant": "error",
        "index": None,
        "counts": {label: 0 for label in LABELS},
    }
    if view["error"] is not None:
        return view
    statements = [_statement_view(i, s) for i, s in enumerate(record["statements"])]
    summary = record["summary"]
    index = summary.get("stance_index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, (int, float))):
        raise ValueError(f"stance_index {index!r} is not a number")
    view.update(
        statements=statements,
        dominant=str(summary.get("dominant", "neutral")),
        index=index,
    )
    view["counts"] = {label: sum(s["label"] == label for s in statements) for label in LABELS}
    view["segments"], view["note"] = _segments(text, record["statements"], statements)
    for label in ("pro", "anti"):
        strongest = summary.get(f"strongest_{label}")
        if strongest and isinstance(strongest.get("index"), int) and 0 <= strongest["index"] < len(statements):
            view["strongest"].append({"label": label, "i": strongest["index"], "text": strongest["text"],
                                      "p": f"{strongest['score']:.3f}"})
    return view


def _statement_view(i: int, statement: dict[str, Any]) -> dict[str, Any]:
    label = statement["label"]
    if label not in LABELS:
        raise ValueError(f"statement {i} has label {label!r}")
    scores = statement.get("scores") or {}
    p = scores.get(label, statement.get("confidence", 0.0))
    tip = " · ".join(f"{name} {scores[name]:.3f}" for name in LABELS if name in scores)
    return {"i": i, "label": label, "p": f"{p:.3f}", "tip": tip, "text": statement["text"]}


def _segments(text: str | None, raw: list[dict[str, Any]],
              statements: list[dict[str, Any]]) -> tuple[list[tuple[str, Any]], str | None]:
    """The article text cut into plain gaps and statements, by the statements' offsets.

    Without the full text (records scored before ``text`` was kept) or with offsets that do not
    match it, the statements are shown one after another, with a note saying so.
    """
    if text is not None:
        segments: list[tuple[str, Any]] = []
        position = 0
        for s, view in zip(raw, statements):
            start, end = s.get("start"), s.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and position <= start <= end <= len(text)
                    and text[start:end] == s["text"]):
                break
            if start > position:
                segments.append(("gap", text[position:start]))
            segments.append(("st", view))
            position = end
        else:
            if position < len(text):
                segments.append(("gap", text[position:]))
            return segments, None
        note = "The statements' offsets do not match the article text; statements shown one after another."
    else:
        note = "The record has no full text (scored without it); statements shown one after another."
    joined: list[tuple[str, Any]] = []
    for view in statements:
        if joined:
            joined.append(("gap", " "))
        joined.append(("st", view))
    return joined, note


def _title(record: dict[str, Any], text: str | None) -> str:
    """The record's ``title``, else the first line of its text (the headline), else its id."""
    title = _text_or_none(record.get("title"))
    if title is None and text:
        title = next((line.strip() for line in text.splitlines() if line.strip()), None)
    if title is None:
        title = str(record.get("id", ""))
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1].rstrip() + "…"


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _charts(articles: list[dict[str, Any]]) -> dict[str, str]:
    """Inline SVG charts: by stance index always; by date and by outlet when records carry them."""
    from . import report_charts

    ok = [a for a in articles if a["error"] is None]
    # Markup: matplotlib's SVG writer escapes every text it draws (outlet names are input).
    charts = {"index": Markup(report_charts.stance_index_histogram([a["index"] for a in ok]))}
    dominants = [a["dominant"] for a in articles]
    for key, draw in (("date", report_charts.by_date), ("outlet", report_charts.by_outlet)):
        if any(a[key] for a in articles):
            svg = draw([a[key] for a in articles], dominants)
            if svg:
                charts[key] = Markup(svg)
    return charts


def _script() -> str:
    """The report's JavaScript, inlined verbatim (its hash goes into the page's CSP)."""
    from importlib.resources import files

    return files("exportstance.serve").joinpath("templates", SCRIPT).read_text(encoding="utf-8")


def _environment():
    """Jinja2 with autoescape on for every template; templates ship as package data."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exportstance.serve", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # tojson escapes <, >, & and ' as \u00XX; keep umlauts as they are (smaller file).
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": False}
    env.filters["signed"] = lambda v: "n/a" if v is None else f"{v:+.2f}"
    env.filters["percent"] = lambda v: f"{v:.1%}"
    return env
