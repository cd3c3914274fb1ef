"""Assemble labels/realnews.jsonl, the real-news corpus, from the files the annotators wrote.

    python labels/real/build.py disagreements   # raw/para + raw/blind -> raw/disagreements.jsonl (with context)
    python labels/real/build.py build           # + raw/adjudication.jsonl -> ../realnews.jsonl, agreement.json

Every statement of a page is one row, in passage order (``passage`` = page id, ``position``), so a
passage can be rebuilt and evaluated as an article. Splits go by **page group**: pages whose
passages are near-duplicates (agency copies: char 5-gram Jaccard > 0.3) or that share a
near-duplicate statement of 6+ words (> 0.4) form one group, and a group never crosses splits. Groups are
dealt out in a seeded order: test and dev each get at least ``MIN_EVAL_STATEMENTS`` statements from
at least ``MIN_EVAL_PAGES`` page groups, the rest is train. Pages already in realnews.jsonl keep
their split, so new batches never move old test pages into train.
"""
from __future__ import annotations

import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

from exportstance.model.labels import LABELS
from exportstance.training.data import char_ngrams, near_duplicates, read_jsonl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from build_corpus import UnionFind, write_jsonl  # noqa: E402  (labels/ is a folder of scripts)

RAW = HERE / "raw"
OUT = HERE.parent / "realnews.jsonl"
AGREEMENT = HERE / "agreement.json"
SEED = 29
MIN_EVAL_STATEMENTS = 620
MIN_EVAL_PAGES = 72
EVAL_SHARE = 0.2
MIN_WORDS = 6
# The helpers' search areas (labels/real/README.md): the topic column of their pages.
AREAS = {"A1": "chip_sales_licences", "A2": "trump_deals_congress", "A3": "lithography_asml",
         "A4": "china_progress", "A5": "us_rules", "A6": "smuggling_enforcement",
         "A7": "china_countermeasures", "A8": "allies_markets"}


def para_rows() -> list[dict]:
    rows = []
    for path in sorted((RAW / "para").glob("*.jsonl")):
        rows += read_jsonl(path)
    return rows


def blind_labels() -> dict[tuple[str, int], dict]:
    labels = {}
    for path in sorted((RAW / "blind").glob("*.jsonl")):
        for r in read_jsonl(path):
            labels[(r["page"], r["position"])] = r
    return labels


def row_id(r: dict) -> str:
    return f"r-{r['page']}-{r['position']:02d}"


def disagreements() -> None:
    rows, second = para_rows(), blind_labels()
    by_page = defaultdict(list)
    for r in rows:
        by_page[r["page"]].append(r)
    out = []
    for r in rows:
        b = second.get((r["page"], r["position"]))
        if b and b["label_b"] != r["label_a"]:
            page = sorted(by_page[r["page"]], key=lambda x: x["position"])
            out.append({"id": row_id(r), "text": r["text"], "label_a": r["label_a"], "label_b": b["label_b"],
                        "note_a": r.get("note_a", ""), "headline": page[0]["text"],
                        "previous": page[r["position"] - 1]["text"] if r["position"] else "",
                        "next": page[r["position"] + 1]["text"] if r["position"] + 1 < len(page) else ""})
    write_jsonl(RAW / "disagreements.jsonl", out)
    print(f"{len(out)} disagreements of {sum(1 for r in rows if (r['page'], r['position']) in second)} double-labelled")


def page_groups(pages: dict[str, list[dict]]) -> dict[str, str]:
    """page id -> group id: agency copies and pages sharing a near-duplicate statement are one group."""
    uf = UnionFind()
    ids = sorted(pages)
    texts = {p: " ".join(r["text"] for r in pages[p]) for p in ids}
    grams = {p: char_ngrams(texts[p]) for p in ids}
    for i, a in enumerate(ids):
        uf.find(a)
        for b in ids[i + 1 :]:
            inter = len(grams[a] & grams[b])
            if inter and inter / len(grams[a] | grams[b]) > 0.3:
                uf.union(a, b)
    # Short lines ("(Reuters)", "Anzeige", "Der Stand der Dinge") recur on unrelated pages: only
    # statements of MIN_WORDS or more link pages.
    flat = [(p, r["text"]) for p in ids for r in pages[p] if len(r["text"].split()) >= MIN_WORDS]
    for i, j, _ in near_duplicates([t for _, t in flat], [t for _, t in flat], threshold=0.4):
        if flat[i][0] != flat[j][0]:
            uf.union(flat[i][0], flat[j][0])
    return {p: "g" + uf.find(p) for p in ids}


def assign_splits(pages: dict[str, list[dict]], groups: dict[str, str], frozen: dict[str, str]) -> dict[str, str]:
    """page id -> split, by page group (see the module docstring)."""
    members = defaultdict(list)
    for p, g in groups.items():
        members[g].append(p)
    size = {g: sum(len(pages[p]) for p in ps) for g, ps in members.items()}
    order = sorted(members)
    random.Random(SEED).shuffle(order)
    total = sum(size.values())
    need = max(MIN_EVAL_STATEMENTS, int(EVAL_SHARE * total))
    split_of_group: dict[str, str] = {}
    for g in order:  # kept splits first
        kept = Counter(frozen[p] for p in members[g] if p in frozen).most_common(1)
        if kept:
            split_of_group[g] = kept[0][0]
    filled = {s: [sum(size[g] for g in split_of_group if split_of_group[g] == s),
                  sum(1 for g in split_of_group if split_of_group[g] == s)] for s in ("test", "dev")}
    for g in order:
        if g in split_of_group:
            continue
        for s in ("test", "dev"):
            if filled[s][0] < need or filled[s][1] < MIN_EVAL_PAGES:
                split_of_group[g] = s
                filled[s][0] += size[g]
                filled[s][1] += 1
                break
        else:
            split_of_group[g] = "train"
    return {p: split_of_group[g] for p, g in groups.items()}


def build() -> None:
    rows, second = para_rows(), blind_labels()
    adj_path = RAW / "adjudication.jsonl"
    adjudicated = {r["id"]: r for r in read_jsonl(adj_path)} if adj_path.exists() else {}
    pages = defaultdict(list)
    dropped = Counter()
    for r in rows:
        pages[r["page"]].append(r)
    complete = {}
    for p, rs in pages.items():
        rs.sort(key=lambda r: r["position"])
        if [r["position"] for r in rs] != list(range(len(rs))) or any((p, r["position"]) not in second for r in rs):
            dropped["pages without a second label on every statement"] += 1
            continue
        if any(second[(p, r["position"])]["label_b"] != r["label_a"] and row_id(r) not in adjudicated for r in rs):
            dropped["pages with an unresolved disagreement"] += 1
            continue
        complete[p] = rs
    groups = page_groups(complete)
    frozen = {r["passage"]: r["split"] for r in read_jsonl(OUT)} if OUT.exists() else {}
    splits = assign_splits(complete, groups, frozen)
    out = []
    for p in sorted(complete, key=lambda p: ({"train": 0, "dev": 1, "test": 2}[splits[p]], p)):
        for r in complete[p]:
            b = second[(p, r["position"])]
            a_lab, b_lab = r["label_a"], b["label_b"]
            adj = adjudicated.get(row_id(r))
            out.append({
                "id": row_id(r), "text": r["text"], "label": a_lab if a_lab == b_lab else adj["label"],
                "split": splits[p], "group": groups[p], "topic": AREAS.get(r["annotator_a"], "real_news"),
                "actor": r["actor"], "form": r["form"],
                "source": f"real news: close paraphrase by LLM helper {r['annotator_a']} of statement {r['position']} "
                          f"of the passage of source_url; second label blind by helper {b['annotator_b']}",
                "label_a": a_lab, "label_b": b_lab, "adjudication": "" if a_lab == b_lab else adj.get("note", ""),
                "hard_case": "", "source_url": r["url"], "outlet": r["outlet"], "date": r["date"],
                "passage": p, "position": r["position"],
            })
    write_jsonl(OUT, out)
    a = [r["label_a"] for r in out]
    b = [r["label_b"] for r in out]
    kinds = Counter(f"{x}->{y}" for x, y in zip(a, b) if x != y)
    by_form = defaultdict(lambda: [0, 0])
    for r in out:
        by_form[r["form"]][0] += 1
        by_form[r["form"]][1] += r["label_a"] == r["label_b"]
    summary = {
        "n_statements": len(out), "n_pages": len(complete), "n_page_groups": len(set(groups.values())),
        "raw_agreement": round(sum(x == y for x, y in zip(a, b)) / max(len(out), 1), 4),
        "cohen_kappa": round(float(cohen_kappa_score(a, b, labels=list(LABELS))), 4),
        "label_a": dict(Counter(a)), "label_b": dict(Counter(b)), "label": dict(Counter(r["label"] for r in out)),
        "disagreement_kinds (a->b)": dict(kinds.most_common()),
        "agreement_by_form": {f: round(v[1] / v[0], 3) for f, v in sorted(by_form.items())},
        "n_adjudicated": sum(x != y for x, y in zip(a, b)),
        "splits": {s: {"statements": sum(r["split"] == s for r in out),
                       "pages": len({r["passage"] for r in out if r["split"] == s}),
                       "page_groups": len({r["group"] for r in out if r["split"] == s})} for s in ("train", "dev", "test")},
        "dropped": dict(dropped),
    }
    AGREEMENT.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    {"disagreements": disagreements, "build": build}[sys.argv[1]]()
