"""Tools for building the real-news corpus by hand (or by helpers), one news page at a time.

    python labels/real/tools.py claim URL [--query Q] < passage.txt    # check, store, segment a page
    python labels/real/tools.py submit PAGE --annotator A < para.jsonl  # paraphrases + first labels
    python labels/real/tools.py show PAGE                               # paraphrases in order (no labels)
    python labels/real/tools.py label PAGE --annotator B < labels.txt   # blind second labels
    python labels/real/tools.py show-many LIST                           # every page of a list file
    python labels/real/tools.py label-many --annotator B < labels.txt    # "== PAGE" blocks of labels
    python labels/real/tools.py status

The verbatim passages stay outside the repository (``$REAL_STORE``, default ``../realraw`` beside
the checkout): the repository stores only our paraphrases, their labels and the source URL.
``claim`` refuses reserved pages (../shared/eval/reserved.py's rule), pages already taken, agency
copies of a page already taken (char 5-gram Jaccard of the passages > 0.5) and pages that share a
sentence with the evaluation-only texts. It splits the passage with the project's own segmenter,
so the statements are the units ``score_articles`` meets.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path

from exportstance.model.labels import LABELS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared"
STORE = Path(os.environ.get("REAL_STORE", REPO.parent / "realraw"))
PARA = HERE / "raw" / "para"
BLIND = HERE / "raw" / "blind"
FORMS = ("headline", "teaser", "reporter_prose", "direct_quote", "reported_speech", "commentary",
         "question", "caption", "dateline", "boilerplate")
MAX_SHARED_RUN = 5  # no run of more than 5 identical words (numbers aside) between original and paraphrase


def _reserved():
    sys.path.insert(0, str(SHARED / "eval"))
    import reserved  # the reference checker, so the rule is never re-implemented differently

    return reserved


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def page_id(url: str) -> str:
    return "p" + _reserved().digest(url)[:10]


def outlet_of(url: str) -> str:
    host = urllib.parse.urlparse(url.strip()).netloc.lower()
    return re.sub(r"^(www\.|m\.)", "", host)


_DATE = re.compile(r"^\s*date\s+(\d{4}-\d{2}(?:-\d{2})?)\s*")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def longest_shared_run(a: str, b: str) -> tuple[int, str]:
    """Longest run of consecutive words shared by a and b; words with digits do not count."""
    wa, wb = _words(a), _words(b)
    best, best_run = 0, ""
    prev = [0] * (len(wb) + 1)
    prev_n = [0] * (len(wb) + 1)
    for i in range(1, len(wa) + 1):
        cur = [0] * (len(wb) + 1)
        cur_n = [0] * (len(wb) + 1)
        for j in range(1, len(wb) + 1):
            if wa[i - 1] == wb[j - 1]:
                cur[j] = prev[j - 1] + 1
                cur_n[j] = prev_n[j - 1] + (0 if any(c.isdigit() for c in wa[i - 1]) else 1)
                if cur_n[j] > best:
                    best, best_run = cur_n[j], " ".join(wa[i - cur[j] : i])
        prev, prev_n = cur, cur_n
    return best, best_run


def _load_pages() -> dict[str, dict]:
    pages = {}
    for f in (STORE / "pages").glob("*.json"):
        try:
            pages[f.stem] = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass
    return pages


def claim(url: str, query: str, passage: str) -> int:
    from exportstance.serve.segment import default_segmenter
    from exportstance.training.data import char_ngrams, iter_texts_of_dir, near_duplicates

    if _reserved().digest(url) in _reserved().reserved_digests():
        print("SKIP reserved page: never use its text")
        return 1
    pid = page_id(url)
    (STORE / "pages").mkdir(parents=True, exist_ok=True)
    target = STORE / "pages" / f"{pid}.json"
    if target.exists():
        print(f"SKIP already taken as {pid}")
        return 1
    date = ""
    m = _DATE.match(passage)
    if m:
        date, passage = m.group(1), passage[m.end():]
    passage = passage.strip()
    grams = char_ngrams(passage)
    for other_id, other in _load_pages().items():
        og = char_ngrams(other["passage"])
        jac = len(grams & og) / max(len(grams | og), 1)
        if jac > 0.5:
            print(f"SKIP agency copy / near-duplicate of {other_id} ({other['url']}, Jaccard {jac:.2f})")
            return 1
    statements = [s.text for s in default_segmenter().split(passage)]
    if len(statements) < 2:
        print("SKIP fewer than 2 statements")
        return 1
    held_out = list(iter_texts_of_dir(SHARED / "eval")) + list(iter_texts_of_dir(SHARED / "seeds"))
    leaks = near_duplicates(statements, held_out, threshold=0.4)
    if leaks:
        print(f"SKIP shares a sentence with evaluation-only text (Jaccard {leaks[0][2]}): never use it")
        return 1
    record = {"id": pid, "url": url.strip(), "outlet": outlet_of(url), "date": date, "query": query,
              "passage": passage, "statements": statements}
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        print(f"SKIP already taken as {pid}")
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, ensure_ascii=False)
    print(f"OK {pid}: {len(statements)} statements (outlet {record['outlet']}, date {date or '-'})")
    for n, s in enumerate(statements):
        print(f"[{n}] {s}")
    return 0


def submit(pid: str, annotator: str, lines: list[str]) -> int:
    page = json.loads((STORE / "pages" / f"{pid}.json").read_text(encoding="utf-8"))
    originals = page["statements"]
    rows, errors = {}, []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pos = int(row["position"])
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            errors.append(f"line {n}: not a JSON object with position ({exc})")
            continue
        if not 0 <= pos < len(originals):
            errors.append(f"line {n}: position {pos} out of range 0..{len(originals) - 1}")
            continue
        text = str(row.get("text", "")).strip()
        if row.get("label") not in LABELS:
            errors.append(f"[{pos}] label must be one of {LABELS}")
        if row.get("form") not in FORMS:
            errors.append(f"[{pos}] form must be one of {FORMS}")
        if not text:
            errors.append(f"[{pos}] empty paraphrase")
        run, words = longest_shared_run(originals[pos], text)
        if run > MAX_SHARED_RUN:
            errors.append(f"[{pos}] {run} words in a row copied from the original ('{words}'): reword")
        rows[pos] = {"position": pos, "text": text, "label_a": row.get("label"), "form": row.get("form"),
                     "actor": str(row.get("actor") or "Reporter"), "note_a": str(row.get("note", ""))}
    missing = [p for p in range(len(originals)) if p not in rows]
    if missing:
        errors.append(f"missing positions {missing}: every statement of the passage stays in")
    if errors:
        print("NOT SAVED, fix and resubmit the whole page:\n" + "\n".join(errors))
        return 1
    out = [{"page": pid, "url": page["url"], "outlet": page["outlet"], "date": page["date"],
            "annotator_a": annotator, **rows[p]} for p in range(len(originals))]
    _write_jsonl(PARA / f"{pid}.jsonl", out)
    print(f"SAVED {pid}: {len(out)} statements")
    return 0


def show(pid: str) -> int:
    for line in (PARA / f"{pid}.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        print(f"[{r['position']}] {r['text']}")
    return 0


def label(pid: str, annotator: str, lines: list[str]) -> int:
    n_rows = len((PARA / f"{pid}.jsonl").read_text(encoding="utf-8").splitlines())
    labels, errors = {}, []
    for line in lines:
        parts = line.split(None, 1)
        if not parts:
            continue
        try:
            pos = int(parts[0].strip("[]"))
            lab = parts[1].strip().split()[0]
        except (ValueError, IndexError):
            errors.append(f"cannot read '{line.strip()}': write 'POSITION LABEL'")
            continue
        if lab not in LABELS or not 0 <= pos < n_rows:
            errors.append(f"bad line '{line.strip()}'")
        labels[pos] = lab
    missing = [p for p in range(n_rows) if p not in labels]
    if missing:
        errors.append(f"missing positions {missing}")
    if errors:
        print("NOT SAVED:\n" + "\n".join(errors))
        return 1
    _write_jsonl(BLIND / f"{pid}.jsonl",
                 [{"page": pid, "position": p, "label_b": labels[p], "annotator_b": annotator} for p in range(n_rows)])
    print(f"SAVED labels for {pid}: {n_rows}")
    return 0


def show_many(list_file: str) -> int:
    for pid in Path(list_file).read_text().split():
        print(f"== {pid}")
        show(pid)
    return 0


def label_many(annotator: str, lines: list[str]) -> int:
    """Blocks of ``== PAGE`` followed by that page's ``POSITION LABEL`` lines; each page saved on its own."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith("=="):
            current = line.strip("= \n")
            blocks[current] = []
        elif line.strip() and current is not None:
            blocks[current].append(line)
    failed = 0
    for pid, block in blocks.items():
        print(f"{pid}: ", end="")
        failed += label(pid, annotator, block) != 0
    print(f"{len(blocks) - failed} pages saved, {failed} not saved")
    return 1 if failed else 0


def status() -> int:
    pages = _load_pages()
    para = list(PARA.glob("*.jsonl"))
    n_para = sum(len(p.read_text().splitlines()) for p in para)
    print(f"claimed pages {len(pages)}, statements {sum(len(p['statements']) for p in pages.values())}; "
          f"paraphrased pages {len(para)} ({n_para} statements); blind-labelled pages {len(list(BLIND.glob('*.jsonl')))}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("claim"); c.add_argument("url"); c.add_argument("--query", default="")
    s = sub.add_parser("submit"); s.add_argument("page"); s.add_argument("--annotator", required=True)
    sh = sub.add_parser("show"); sh.add_argument("page")
    lb = sub.add_parser("label"); lb.add_argument("page"); lb.add_argument("--annotator", required=True)
    sm = sub.add_parser("show-many"); sm.add_argument("list_file")
    lm = sub.add_parser("label-many"); lm.add_argument("--annotator", required=True)
    sub.add_parser("status")
    a = ap.parse_args()
    if a.cmd == "claim":
        return claim(a.url, a.query, sys.stdin.read())
    if a.cmd == "submit":
        return submit(a.page, a.annotator, sys.stdin.read().splitlines())
    if a.cmd == "show":
        return show(a.page)
    if a.cmd == "label":
        return label(a.page, a.annotator, sys.stdin.read().splitlines())
    if a.cmd == "show-many":
        return show_many(a.list_file)
    if a.cmd == "label-many":
        return label_many(a.annotator, sys.stdin.read().splitlines())
    return status()


if __name__ == "__main__":
    sys.exit(main())
