"""Assemble labels/corpus.jsonl from the raw annotation files, in three steps.

    python labels/build_corpus.py blind [K..]  # raw/writer_K.jsonl -> raw/blind_K.jsonl (id + text only)
    python labels/build_corpus.py disagreements  # after raw/annot_K.jsonl exist: raw/disagreements.jsonl
    python labels/build_corpus.py build        # + raw/adjudication.jsonl -> corpus.jsonl, kappa, stats

Splits are made by group: paraphrase families (from the writers) and every pair of near-duplicate
statements (char 5-gram Jaccard > 0.4, stricter than the test's 0.5) are merged into one group with
union-find, and whole groups are assigned to train/dev/test (70/15/15, stratified by label, seeded).
Items already in corpus.jsonl keep their split, so a new batch never moves old test items into train.
"""
from __future__ import annotations

import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

from exportstance.model.labels import LABELS
from exportstance.training.data import near_duplicates, normalise, read_jsonl

RAW = Path(__file__).resolve().parent / "raw"
CORPUS = Path(__file__).resolve().parent / "corpus.jsonl"
SEED = 13
SPLIT_SHARES = {"train": 0.70, "dev": 0.15, "test": 0.15}


def writer_rows() -> list[dict]:
    rows = []
    for path in sorted(RAW.glob("writer_*.jsonl")):
        k = path.stem.split("_")[1]
        for n, row in enumerate(read_jsonl(path), 1):
            rows.append({**row, "id": f"w{k}-{n:04d}", "writer": k})
    return rows


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def blind(*writers: str) -> None:
    """Annotator input for the given writers (all when none is named): ids and texts, shuffled."""
    by_writer = defaultdict(list)
    for r in writer_rows():
        if not writers or r["writer"] in writers:
            by_writer[r["writer"]].append({"id": r["id"], "text": r["text"]})
    for k, rows in by_writer.items():
        random.Random(f"{SEED}-{k}").shuffle(rows)  # annotators see no writer order either
        write_jsonl(RAW / f"blind_{k}.jsonl", rows)
        print(f"blind_{k}.jsonl: {len(rows)} items")


def second_labels() -> dict[str, str]:
    labels = {}
    for path in sorted(RAW.glob("annot_*.jsonl")):
        for r in read_jsonl(path):
            labels[r["id"]] = r["label_b"]
    return labels


def disagreements() -> None:
    second = second_labels()
    rows = [r for r in writer_rows() if r["id"] in second and second[r["id"]] != r["label_a"]]
    write_jsonl(RAW / "disagreements.jsonl",
                [{"id": r["id"], "text": r["text"], "label_a": r["label_a"], "label_b": second[r["id"]]} for r in rows])
    print(f"{len(rows)} disagreements of {len(second)} double-labelled items")


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def assign_splits(rows: list[dict], frozen: dict[str, str] | None = None) -> None:
    """Group-aware stratified splits. Items already in `frozen` (id -> split) keep their split, so
    that adding a batch never moves old test items into train; only new groups are dealt out."""
    frozen = frozen or {}
    uf = UnionFind()
    for r in rows:
        uf.union(r["id"], "g:" + r["group"])
    texts = [r["text"] for r in rows]
    for i, j, _ in near_duplicates(texts, texts, threshold=0.4):
        if i < j:
            uf.union(rows[i]["id"], rows[j]["id"])
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[uf.find(r["id"])].append(r)
    # Stratify: order groups by their majority label, shuffle within, then deal them out by share.
    rng = random.Random(SEED)
    by_label: dict[str, list[list[dict]]] = defaultdict(list)
    for members in groups.values():
        by_label[Counter(m["label"] for m in members).most_common(1)[0][0]].append(members)
    for label in LABELS:
        gs = sorted(by_label[label], key=lambda g: g[0]["id"])
        rng.shuffle(gs)
        total = sum(len(g) for g in gs)
        kept = [Counter(frozen[m["id"]] for m in g if m["id"] in frozen).most_common(1) for g in gs]
        filled = Counter()
        for g, k in zip(gs, kept):
            if k:
                filled[k[0][0]] += len(g)
        for g, k in zip(gs, kept):
            if k:
                split = k[0][0]
            else:
                split = min(SPLIT_SHARES, key=lambda s: filled[s] / (SPLIT_SHARES[s] * total))
                filled[split] += len(g)
            group_id = f"{label[0]}{g[0]['id']}"
            for m in g:
                m["split"], m["group"] = split, group_id


def build() -> None:
    second = second_labels()
    adjudicated = {r["id"]: r for r in read_jsonl(RAW / "adjudication.jsonl")} if (RAW / "adjudication.jsonl").exists() else {}
    rows, seen, dropped = [], set(), Counter()
    for r in writer_rows():
        key = normalise(r["text"])
        if key in seen:
            dropped["exact duplicate"] += 1
            continue
        seen.add(key)
        if r["id"] not in second:
            dropped["no second label"] += 1
            continue
        a, b = r["label_a"], second[r["id"]]
        adj = adjudicated.get(r["id"])
        if a != b and adj is None:
            dropped["unresolved disagreement"] += 1
            continue
        if adj is not None and adj["label"] == "drop":
            dropped["dropped in adjudication (ambiguous)"] += 1
            continue
        rows.append({
            "id": r["id"], "text": r["text"], "label": a if a == b else adj["label"], "split": None,
            "group": f"w{r['writer']}-{r['group']}", "topic": r["topic"], "actor": r["actor"], "form": r["form"],
            "source": f"synthetic: written by LLM writer {r['writer']} from labels/raw/WRITER_BRIEF.md; quotes invented",
            "label_a": a, "label_b": b, "adjudication": "" if a == b else adj.get("note", ""),
            "hard_case": r.get("hard_case", ""),
        })
    frozen = {r["id"]: r["split"] for r in read_jsonl(CORPUS)} if CORPUS.exists() else {}
    assign_splits(rows, frozen)
    rows.sort(key=lambda r: ({"train": 0, "dev": 1, "test": 2}[r["split"]], r["id"]))
    write_jsonl(CORPUS, rows)
    all_pairs = [(r["label_a"], second[r["id"]]) for r in writer_rows() if r["id"] in second]
    kappa_all = cohen_kappa_score([p[0] for p in all_pairs], [p[1] for p in all_pairs])
    agree = sum(p[0] == p[1] for p in all_pairs) / max(len(all_pairs), 1)
    summary = {"n_corpus": len(rows), "n_double_labelled": len(all_pairs), "raw_agreement": round(agree, 4),
               "cohen_kappa": round(float(kappa_all), 4), "dropped": dict(dropped),
               "n_adjudicated": sum(r["label_a"] != r["label_b"] for r in rows)}
    (RAW.parent / "agreement.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    {"blind": blind, "disagreements": disagreements, "build": build}[sys.argv[1]](*sys.argv[2:])
