"""Scale of the HTML report, and the README screenshot, in Debian's headless Chromium.

    python bench/bench_report.py --records out/demo_examples.jsonl --articles 10000
        renders N synthetic articles (the scored example records repeated, with made-up ids, dates
        and outlets) and prints: render time in Python, file size, and in headless Chromium (median
        of --loads fresh page loads) first contentful paint, DOMContentLoaded, the report's script
        ready, and the time of a filter change, a page turn and a sort.
    python bench/bench_report.py --records out/demo_examples.jsonl --screenshot docs/report.png
        the report of exactly those records (no synthetic data) as a PNG for the README.

Only our own example articles (examples/) go in: never the seed articles (evaluation-only text).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from exportstance.serve.report import read_scored, render_report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OUTLETS = ("Tagesblatt", "Wirtschaftswoche Nord", "Rundschau", "Der Kurier", "Abendpost", "Handelsecho",
           "Morgenzeitung", "Techportal", "Funkhaus", "Landesanzeiger", "Börsenbrief", "Weltspiegel")


def chromium(width: int = 1280, height: int = 1600):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def synthetic(records: list[dict], n: int) -> list[dict]:
    """``n`` records cycled from ``records``, each with its own id, a date in 2025 and an outlet."""
    out = []
    for i in range(n):
        record = dict(records[i % len(records)])
        record["id"] = f"syn-{i:05d}-{record.get('id')}"
        record["date"] = f"2025-{1 + i % 12:02d}-{1 + (i * 7) % 28:02d}"
        record["outlet"] = OUTLETS[(i * 5 + i // 7) % len(OUTLETS)]
        out.append(record)
    return out


LOAD_METRICS = """
const nav = performance.getEntriesByType('navigation')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const ready = performance.getEntriesByName('report-ready')[0];
return {fcp: fcp ? fcp.startTime : null, dcl: nav.domContentLoadedEventEnd, ready: ready ? ready.startTime : null,
        load: nav.loadEventEnd, articles: document.querySelectorAll('[data-article-id]').length,
        rows: document.querySelectorAll('#articles-table tbody tr').length,
        heap: performance.memory ? performance.memory.usedJSHeapSize : null};
"""
INTERACTIONS = """
function time(f) { const t = performance.now(); f(); return performance.now() - t; }
const sel = document.getElementById('filter-dominant');
const filter = time(() => { sel.value = 'neutral'; sel.dispatchEvent(new Event('change')); });
const shown = document.querySelectorAll('#articles-table tbody tr').length;
const reset = time(() => { sel.value = ''; sel.dispatchEvent(new Event('change')); });
const next = time(() => document.getElementById('next').click());
const sort = time(() => document.querySelector('button[data-sort="index"]').click());
const search = time(() => { const q = document.getElementById('filter-text'); q.value = 'syn-09'; q.dispatchEvent(new Event('input')); });
return {filter, reset, next, sort, search, shown, status: document.getElementById('status').textContent};
"""


def bench(records: list[dict], n: int, out: Path, loads: int) -> None:
    data = synthetic(records, n)
    t = time.perf_counter()
    html, overview = render_report([("synthetic", data)], title=f"exportstance report: {n:,} synthetic articles")
    render_s = time.perf_counter() - t
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    size = out.stat().st_size
    print(f"{n:,} articles, {overview.statements:,} statements: rendered in {render_s:.1f} s, "
          f"{size / 2**20:.1f} MiB -> {out}")
    driver = chromium()
    try:
        runs = []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(out.resolve().as_uri())
            runs.append(driver.execute_script(LOAD_METRICS))
        interaction = driver.execute_script(INTERACTIONS)
    finally:
        driver.quit()

    def median(key: str) -> str:
        values = [r[key] for r in runs if r[key] is not None]
        return f"{statistics.median(values):.0f} ms" if values else "n/a"

    print(f"headless Chromium, median of {loads} loads: first contentful paint {median('fcp')}, "
          f"DOMContentLoaded {median('dcl')}, report script ready {median('ready')}, load {median('load')}")
    last = runs[-1]
    heap = f", JS heap {last['heap'] / 2**20:.0f} MiB" if last["heap"] else ""
    print(f"in the DOM after load: {last['articles']} articles, {last['rows']} table rows{heap}")
    print(f"interactions: filter by dominant stance {interaction['filter']:.0f} ms ({interaction['shown']} rows "
          f"on the page), clear filter {interaction['reset']:.0f} ms, next page {interaction['next']:.0f} ms "
          f"(the first page turn parses the JSON block), sort by stance index {interaction['sort']:.0f} ms, "
          f"search {interaction['search']:.0f} ms ({interaction['status']})")


def screenshot(records: list[dict], png: Path, width: int, height: int) -> None:
    html, _ = render_report([("examples", records)], title="exportstance report: examples/")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        driver = chromium(width, height)
        try:
            driver.get(page.as_uri())
            # show a tooltip as keyboard focus does: the first pro statement, or else the first one
            driver.execute_script("const s = document.querySelector('#article-list [data-label=\"pro\"]') || "
                                  "document.querySelector('#article-list [data-label]'); if (s) s.focus({preventScroll: true});")
            png.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(png))
        finally:
            driver.quit()
    print(f"screenshot {width}x{height} -> {png} ({png.stat().st_size / 1024:.0f} KiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, default=Path("out/demo_examples.jsonl"),
                        help="scored JSONL of our example articles (make demo writes it)")
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("out/bench_report.html"))
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help="only take the README screenshot")
    parser.add_argument("--size", default="1200x2300", help="screenshot WIDTHxHEIGHT")
    args = parser.parse_args()
    if not args.records.is_file():
        print(f"no {args.records}: run `make demo` first (it scores examples/)", file=sys.stderr)
        return 2
    records = list(read_scored(args.records))
    if args.screenshot:
        # The PNG goes into the repository: only articles of examples/ may be in it.
        ours = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.txt")}
        foreign = [str(r.get("id")) for r in records if str(r.get("id")) not in ours]
        if foreign:
            print(f"not articles of {EXAMPLES}: {foreign[:3]}; the screenshot shows examples/ only", file=sys.stderr)
            return 2
        width, height = map(int, args.size.split("x"))
        screenshot(records, args.screenshot, width, height)
    else:
        bench(records, args.articles, args.out, args.loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
