"""The HTML report in a real browser: Debian's headless Chromium driven by Selenium + chromedriver.

The browser comes from the system (``apt-get install chromium chromium-driver``; ``make test`` does
that where apt-get is available), never from a download. Without it these tests are skipped, unless
``EXPORTSTANCE_BROWSER_TESTS=require`` (set by ``make test``) turns a missing browser into a failure.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from exportstance.cli import main
from exportstance.serve.report import PAGE_SIZE, render_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EXPORTSTANCE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EXPORTSTANCE_CHROMEDRIVER", "/usr/bin/chromedriver")
HOSTILE = (
    "Angriff <script>window.__pwned = 1; alert(1)</script> im Text\n\n"
    "Die Sperren wirken </textarea><img src=x onerror=\"window.__pwned=2\">. "
    "Zitat: \"Nein\" &amp; </script><script>window.__pwned=3</script>."
)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and not shutil.which(path):
            return (f"{path} not found: install Debian's headless browser with "
                    "`apt-get update && apt-get install -y chromium chromium-driver` (`make test` does this in CI)")
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("EXPORTSTANCE_BROWSER_TESTS") == "require":
            pytest.fail(f"browser tests required (EXPORTSTANCE_BROWSER_TESTS=require) but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def records(tmp_path_factory, tiny_model_dir) -> list[dict]:
    """examples/ scored by the tiny model, plus a hostile article and an upstream error record."""
    root = tmp_path_factory.mktemp("browser")
    extra = root / "extra.jsonl"
    extra.write_text(json.dumps({"id": "evil", "text": HOSTILE}) + "\n" + json.dumps({"id": "broken"}) + "\n",
                     encoding="utf-8")
    out = root / "scored.jsonl"
    main(["score", "--threads", "1", "--model", str(tiny_model_dir), str(REPO / "examples"), str(extra),
          "-o", str(out)])
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def open_report(browser, path: Path, records: list[dict]) -> None:
    path.write_text(render_report([("test", records)])[0], encoding="utf-8")
    browser.get(path.as_uri())
    assert browser.execute_script("return document.documentElement.hasAttribute('data-report-ready')")


def count_labels(browser) -> Counter:
    return Counter(browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-label]'), e => e.dataset.label)"))


def test_statements_per_label_match_the_jsonl(browser, records, tmp_path):
    open_report(browser, tmp_path / "r.html", records)
    assert count_labels(browser) == Counter(s["label"] for r in records for s in r.get("statements", []))
    ids = browser.execute_script("return Array.from(document.querySelectorAll('#article-list [data-article-id]'),"
                                 " e => e.dataset.articleId)")
    assert ids == [str(r["id"]) for r in records]
    ps = browser.execute_script("return Array.from(document.querySelectorAll('[data-label]'), e => e.dataset.p)")
    assert ps == [f"{s['scores'][s['label']]:.3f}" for r in records for s in r.get("statements", [])]
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dominant_filter_leaves_only_matching_rows_and_articles(browser, records, tmp_path):
    from selenium.webdriver.support.ui import Select

    open_report(browser, tmp_path / "r.html", records)
    dominants = Counter(r["summary"]["dominant"] if "summary" in r else "error" for r in records)
    assert dominants["error"] == 1
    for value in ("error", max((d for d in dominants if d != "error"), key=dominants.get)):
        Select(browser.find_element("id", "filter-dominant")).select_by_value(value)
        rows = browser.execute_script("return Array.from(document.querySelectorAll('#articles-table tbody tr'),"
                                      " r => r.dataset.dominant)")
        articles = browser.execute_script("return Array.from(document.querySelectorAll('#article-list article'),"
                                          " a => a.dataset.dominant)")
        assert rows == articles == [value] * dominants[value]
        assert browser.find_element("id", "status").text.startswith(f"{dominants[value]} of {len(records)} articles")
    Select(browser.find_element("id", "filter-dominant")).select_by_value("")
    assert len(browser.find_elements("css selector", "#articles-table tbody tr")) == len(records)


def test_script_in_an_article_does_not_run_and_shows_as_text(browser, records, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    open_report(browser, tmp_path / "r.html", records)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    evil = browser.find_element("css selector", '[data-article-id="evil"] .text')
    assert "<script>window.__pwned = 1; alert(1)</script>" in evil.text
    assert "</textarea><img src=x onerror=" in evil.text and "&amp; </script>" in evil.text
    assert browser.find_elements("css selector", "#article-list img") == []
    error = browser.find_element("css selector", '[data-article-id="broken"]')
    assert error.get_attribute("data-error").startswith("TypeError") and "error" in error.text


def test_marker_and_probabilities_on_keyboard_focus(browser, records, tmp_path):
    open_report(browser, tmp_path / "r.html", records)
    first = browser.find_element("css selector", "#article-list [data-label]")
    marker = browser.execute_script("return getComputedStyle(arguments[0], '::before').content", first)
    assert {"pro": "[+]", "anti": "[−]", "neutral": "[○]"}[first.get_attribute("data-label")] in marker
    before = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", first)
    browser.execute_script("arguments[0].focus()", first)
    tip = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", first)
    assert before in ("none", "normal") and "pro 0." in tip and "neutral 0." in tip
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:  # in print, the probability follows each statement as text and the controls are gone
        printed = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", first)
        assert first.get_attribute("data-p") in printed
        assert not browser.find_element("css selector", ".controls").is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_pages_and_sorting_of_a_larger_report(browser, records, tmp_path):
    many = [dict(r, id=f"a{i}") for i, r in enumerate(records * 10)]
    assert len(many) > 2 * PAGE_SIZE
    open_report(browser, tmp_path / "many.html", many)
    expected = [Counter(s["label"] for r in many[i:i + PAGE_SIZE] for s in r.get("statements", []))
                for i in range(0, len(many), PAGE_SIZE)]
    assert count_labels(browser) == expected[0]
    browser.find_element("id", "next").click()
    ids = browser.execute_script("return Array.from(document.querySelectorAll('#article-list article'),"
                                 " a => a.dataset.articleId)")
    assert ids == [f"a{i}" for i in range(PAGE_SIZE, 2 * PAGE_SIZE)]
    assert count_labels(browser) == expected[1]  # created from the JSON block on demand
    browser.find_element("css selector", 'button[data-sort="index"]').click()
    index = browser.execute_script("return Array.from(document.querySelectorAll('#articles-table tbody tr'),"
                                   " r => r.dataset.index)")
    assert browser.find_element("id", "page-info").text.startswith("page 1 of")
    values = [float(v) for v in index if v != ""]
    assert values == sorted(values) and "" not in index[: len(values)]  # no stance index: last
