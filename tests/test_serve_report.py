"""The HTML report without a browser: DOM contract, escaping of untrusted text, errors, no network, CLI."""
from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exportstance.cli import main
from exportstance.serve.report import PAGE_SIZE, render_report

REPO = Path(__file__).resolve().parents[1]
# Untrusted article text: markup, script, closing tags, quotes, entities, a URL.
HOSTILE = (
    "Angriff <script>window.__pwned = 1; alert(1)</script> im Titel\n\n"
    "Die Sperren wirken </textarea><img src=x onerror=\"window.__pwned=2\">. "
    "Er sagte: \"Nein\" und 'doch' &amp; &lt;b&gt; </script><script>window.__pwned=3</script>.\n"
    "Mehr unter https://example.org/x.js – ein Ende."
)


class Dom(HTMLParser):
    """Just enough of a DOM for the contract: statements, articles, their texts, attributes, scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.statements: list[dict] = []
        self.articles: list[dict] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._statement: dict | None = None
        self._text_depth = 0
        self._script: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)
        if tag == "script":
            self._script = {"attrs": a, "text": ""}
        if "data-article-id" in a:
            self.articles.append({**a, "text": None, "statements": []})
        if tag == "div" and "text" in a.get("class", "").split() and self.articles:
            self._text_depth = 1
            self.articles[-1]["text"] = ""
        elif tag == "div" and self._text_depth:
            self._text_depth += 1
        if "data-label" in a:
            self._statement = {**a, "text": ""}
            self.statements.append(self._statement)
            self.articles[-1]["statements"].append(self._statement)

    def handle_endtag(self, tag):
        if tag == "span":
            self._statement = None
        if tag == "div" and self._text_depth:
            self._text_depth -= 1
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script["attrs"], self._script["text"]))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script["text"] += data
        if self._statement is not None:
            self._statement["text"] += data
        if self._text_depth:
            self.articles[-1]["text"] += data


def parse(html: str) -> Dom:
    """The page plus the lazily created articles (their HTML from the JSON block), in page order."""
    page = Dom()
    page.feed(html)
    (lazy,) = [text for attrs, text in page.scripts if attrs.get("type") == "application/json"]
    for fragment in json.loads(lazy).values():
        page.feed(fragment)
    return page


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir) -> Path:
    """examples/ plus a hostile article with outlet/date, scored by the tiny model through the CLI."""
    root = tmp_path_factory.mktemp("report")
    hostile = root / "hostile.jsonl"
    hostile.write_text(json.dumps({"id": "evil\"<x>", "text": HOSTILE, "outlet": "<b>$Blatt$</b>",
                                   "date": "2025-08-12", "title": "</title><script>window.__pwned=4</script>"})
                       + "\n", encoding="utf-8")
    out = root / "scored.jsonl"
    assert main(["score", "--threads", "1", "--model", str(tiny_model_dir), str(REPO / "examples"), str(hostile),
                 "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def records(scored) -> list[dict]:
    return read_jsonl(scored)


@pytest.fixture(scope="module")
def html(records) -> str:
    return render_report([("test", records)])[0]


def test_statement_elements_match_the_jsonl(records, html):
    dom = parse(html)
    expected = [s for r in records for s in r["statements"]]
    assert len(dom.statements) == len(expected) > 20
    assert Counter(s["data-label"] for s in dom.statements) == Counter(s["label"] for s in expected)
    for element, statement in zip(dom.statements, expected):
        assert element["data-label"] == statement["label"]
        assert re.fullmatch(r"[01]\.\d{3}", element["data-p"])
        assert element["data-p"] == f"{statement['scores'][statement['label']]:.3f}"
        assert element["tabindex"] == "0" and statement["label"] in element["data-tip"]
        assert element["text"] == statement["text"]


def test_every_article_is_an_element_with_its_full_text(records, html):
    dom = parse(html)
    assert [a["data-article-id"] for a in dom.articles] == [str(r["id"]) for r in records]
    for article, record in zip(dom.articles, records):
        assert article["text"] == record["text"]  # gaps (line breaks) kept; markers are CSS, not text
        assert article["data-dominant"] == record["summary"]["dominant"]


def test_untrusted_text_is_escaped(html):
    dom = parse(html)
    executable = [text for attrs, text in dom.scripts if attrs.get("type") != "application/json"]
    assert len(executable) == 1 and "__pwned" not in executable[0]
    for raw in ("<script>window.__pwned", "</textarea><img", "<img src=x", "</title><script>", "<b>$Blatt$</b>"):
        assert raw not in html
    assert not any(tag == "img" for tag, _, _ in dom.attrs)
    (evil,) = [a for a in dom.articles if a["data-article-id"] == 'evil"<x>']
    assert evil["text"] == HOSTILE  # shown as text, entities included literally
    assert "&amp;amp;" in html  # the article's "&amp;" is escaped once more
    assert any(s["text"].startswith("Die Sperren wirken </textarea>") for s in evil["statements"])


def test_json_block_cannot_be_closed_by_article_text(records):
    many = [dict(r, id=f"{r['id']}#{i}") for i in range(3) for r in records] * 3
    html = render_report([("many", many)])[0]
    block = html.split('<script type="application/json" id="lazy-articles">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block and "&" not in block
    assert len(parse(html).articles) == len(many) > PAGE_SIZE


def test_only_the_first_page_is_in_the_dom_the_rest_in_the_json_block(records):
    many = [dict(r, id=f"a{i}") for i, r in enumerate(records * 12)]
    html = render_report([("many", many)])[0]
    page = Dom()
    page.feed(html)
    assert [a["data-article-id"] for a in page.articles] == [f"a{i}" for i in range(PAGE_SIZE)]
    dom = parse(html)
    assert [a["data-article-id"] for a in dom.articles] == [r["id"] for r in many]
    assert len(dom.statements) == sum(len(r["statements"]) for r in many)
    rows = re.findall(r'<tr data-k="(\d+)"[^>]*?( hidden)?>', html)
    assert len(rows) == len(many) and [bool(h) for _, h in rows] == [i >= PAGE_SIZE for i in range(len(many))]


def test_error_records_are_shown_not_dropped(records, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps(records[0]), '{"id": "x", "text": ', json.dumps({"id": "e1", "error": "TypeError: <boom>",
                                                                         "file": "in.csv", "line": 3})]
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from exportstance.serve.report import read_scored

    html, overview = render_report([("bad", read_scored(bad))])
    assert (overview.articles, overview.failed) == (1, 2)
    dom = parse(html)
    errors = [a for a in dom.articles if "data-error" in a]
    assert [a["data-article-id"] for a in errors] == ["bad.jsonl:2", "e1"]
    assert errors[0]["data-error"].startswith("JSONDecodeError: bad.jsonl line 2")
    assert errors[1]["data-dominant"] == "error" and "TypeError: &lt;boom&gt; (in.csv line 3)" in html
    assert re.search(r'<dd id="total-failed">2</dd>', html)


def test_records_without_text_still_show_their_statements(records):
    old = {k: v for k, v in records[0].items() if k != "text"}
    dom = parse(render_report([("old", [old])])[0])
    assert len(dom.statements) == len(old["statements"]) and "has no full text" in render_report([("o", [old])])[0]


def test_self_contained_no_network_and_only_our_script_runs(html):
    dom = parse(html)
    for tag, name, value in dom.attrs:
        if name in ("src", "href", "xlink:href", "action", "poster", "srcset", "data"):
            assert value.startswith("#"), (tag, name, value)
    assert not re.search(r"url\(\s*['\"]?(?!#)", html) and "@import" not in html
    assert "http://" not in html.replace("https://example.org/x.js", "")
    assert html.count("https://") == html.count("https://example.org/x.js") == 1  # only as the article's text
    (csp,) = [v for tag, k, v in dom.attrs if k == "content" and "default-src" in v]
    assert "default-src 'none'" in csp
    script = [text for attrs, text in dom.scripts if "type" not in attrs][0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_charts_by_date_and_outlet_when_records_carry_them(records, html):
    assert html.count("<svg ") == 3
    assert 'aria-label="Articles per day' in html and 'aria-label="Articles by outlet' in html
    assert "&lt;b&gt;$Blatt$&lt;/b&gt;" in html  # the outlet name drawn as text, escaped, no mathtext
    no_meta = [{k: v for k, v in r.items() if k not in ("date", "outlet")} for r in records]
    assert render_report([("x", no_meta)])[0].count("<svg ") == 1


def test_overview_counts(records, html):
    labels = Counter(s["label"] for r in records for s in r["statements"])
    for label, n in labels.items():
        assert re.search(rf'<tr data-label-total="{label}">.*?<td>{n}</td>', html)
    assert f'<dd id="total-articles">{len(records)}</dd>' in html


def test_report_cli_end_to_end(scored, tmp_path, capsys):
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(scored), "-o", str(out), "--title", "Mein <Bericht>"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "<title>Mein &lt;Bericht&gt;</title>" in html
    assert f"-> {out}" in capsys.readouterr().out
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n", encoding="utf-8")
    assert main(["report", str(scored), str(broken), "-o", str(out)]) == 1  # an error record: exit 1
    assert 'data-article-id="broken.jsonl:1"' in out.read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 2


def test_score_writes_the_report_too(tmp_path, tiny_model_dir):
    out, report = tmp_path / "s.jsonl", tmp_path / "s.html"
    assert main(["score", "--threads", "1", "--model", str(tiny_model_dir), str(REPO / "examples"),
                 "-o", str(out), "--report", str(report)]) == 0
    records = read_jsonl(out)
    assert all(r["text"] for r in records)
    dom = parse(report.read_text(encoding="utf-8"))
    assert len(dom.statements) == sum(len(r["statements"]) for r in records)
    assert main(["score", "--model", str(tiny_model_dir), str(REPO / "examples"), "-o", str(tmp_path / "s.csv"),
                 "--report", str(report)]) == 2


@pytest.mark.parametrize("broken", [
    {"statements": [{"text": "x", "start": 0, "end": 1}], "summary": {}},                     # no label
    {"statements": [{"text": "x", "label": "maybe"}], "summary": {}},                         # unknown label
    {"statements": [{"text": "x", "label": "pro", "scores": {"pro": "high"}}], "summary": {}},  # not a number
    {"statements": [], "summary": {"stance_index": "+1"}},
    {"statements": [], "summary": {"strongest_pro": "x"}},
])
def test_a_malformed_record_is_shown_as_an_error_not_a_crash(broken):
    from exportstance.serve.report import render_report

    good = {"id": "ok", "text": "Gut.", "statements": [], "summary": {"stance_index": None, "dominant": "neutral"}}
    html, overview = render_report([("s", [good, {"id": "bad", **broken}])])
    assert (overview.articles, overview.failed) == (1, 1)
    assert 'data-article-id="bad"' in html and "not a scored article record" in html
