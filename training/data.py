"""The labelled corpus: loading, split access, statistics and leakage checks."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..model.labels import LABEL2ID, LABELS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT / "labels" / "corpus.jsonl"
SPLITS = ("train", "dev", "test")
REQUIRED_KEYS = ("id", "text", "label", "split", "group", "topic", "actor", "form", "source", "label_a", "label_b")


def resolve(path: str | Path) -> Path:
    """Relative paths in configs are relative to the repo root, not the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(resolve(path), encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: broken JSON line ({exc})") from exc
    return rows


def load_split(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of one split (or all rows when split is None, e.g. for an eval-only file without splits)."""
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("text"), str) or row.get("label") not in LABEL2ID:
            raise ValueError(f"{path}: row {n} needs a text and a label in {LABELS}")
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return rows


def to_dataset(rows: Sequence[dict[str, Any]]):
    """A `datasets.Dataset` with text and integer labels (the HF input format)."""
    from datasets import Dataset

    return Dataset.from_dict({"text": [r["text"] for r in rows], "label": [LABEL2ID[r["label"]] for r in rows]})


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(resolve(path)).read_bytes()).hexdigest()


# --- statistics ---------------------------------------------------------------------------------

def corpus_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by label, split, actor, topic and form, and length figures, for humans and the README."""
    words = [len(r["text"].split()) for r in rows]
    by_split_label = Counter((r.get("split"), r["label"]) for r in rows)
    return {
        "n": len(rows),
        "label": dict(Counter(r["label"] for r in rows).most_common()),
        "split": {s: {lab: by_split_label[(s, lab)] for lab in LABELS} for s in SPLITS},
        "topic": dict(Counter(r.get("topic") for r in rows).most_common()),
        "form": dict(Counter(r.get("form") for r in rows).most_common()),
        "actor": dict(Counter(r.get("actor") for r in rows).most_common()),
        "n_actors": len({r.get("actor") for r in rows}),
        "n_topics": len({r.get("topic") for r in rows}),
        "n_groups": len({r.get("group") for r in rows}),
        "words": {"min": min(words, default=0), "max": max(words, default=0),
                  "mean": round(sum(words) / max(len(words), 1), 1)},
        "source": {kind: {"n": n, "label": dict(Counter(r["label"] for r in rows if source_kind(r) == kind).most_common())}
                   for kind, n in Counter(source_kind(r) for r in rows).most_common()},
        **({"n_pages": len({r["passage"] for r in rows if "passage" in r}),
            "pages_by_split": {s: len({r["passage"] for r in rows if "passage" in r and r.get("split") == s})
                               for s in SPLITS},
            "outlet": dict(Counter(r["outlet"] for r in {r["passage"]: r for r in rows if "passage" in r}.values()).most_common())}
           if any("passage" in r for r in rows) else {}),
    }


def source_kind(row: dict[str, Any]) -> str:
    """"synthetic", "real news", ...: the part of ``source`` before its colon."""
    return str(row.get("source", "unknown")).split(":", 1)[0]


def format_stats(stats: dict[str, Any], top: int = 15) -> str:
    lines = [f"statements: {stats['n']}   groups: {stats['n_groups']}   words/statement: "
             f"{stats['words']['min']}-{stats['words']['max']} (mean {stats['words']['mean']})"]
    lines.append("labels: " + ", ".join(f"{k} {v} ({v / max(stats['n'], 1):.0%})" for k, v in stats["label"].items()))
    lines.append(f"{'split':<8}" + "".join(f"{lab:>9}" for lab in LABELS) + f"{'total':>9}")
    for split, counts in stats["split"].items():
        lines.append(f"{split:<8}" + "".join(f"{counts[lab]:>9}" for lab in LABELS) + f"{sum(counts.values()):>9}")
    lines.append("by source: " + "; ".join(
        f"{kind} {v['n']} (" + ", ".join(f"{lab} {c}" for lab, c in v["label"].items()) + ")"
        for kind, v in stats["source"].items()))
    if "n_pages" in stats:
        outlets = list(stats["outlet"].items())
        lines.append(f"pages: {stats['n_pages']} (" + ", ".join(f"{s} {n}" for s, n in stats["pages_by_split"].items())
                     + f") from {len(outlets)} outlets: " + ", ".join(f"{k} {v}" for k, v in outlets[:top])
                     + (" ..." if len(outlets) > top else ""))
    for key, n_key in (("topic", "n_topics"), ("form", None), ("actor", "n_actors")):
        items = list(stats[key].items())
        head = f"{key}s ({stats[n_key]} distinct)" if n_key else f"{key}s"
        lines.append(f"{head}: " + ", ".join(f"{k} {v}" for k, v in items[:top]) + (" ..." if len(items) > top else ""))
    return "\n".join(lines)


# --- leakage checks -----------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def char_ngrams(text: str, n: int = 5) -> set[str]:
    t = normalise(text)
    return {t[i : i + n] for i in range(max(len(t) - n + 1, 1))}


def near_duplicates(
    left: Sequence[str], right: Sequence[str], threshold: float = 0.5, n: int = 5
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with char n-gram Jaccard > threshold; an inverted index keeps it fast."""
    grams_r = [char_ngrams(t, n) for t in right]
    index: dict[str, list[int]] = {}
    for j, grams in enumerate(grams_r):
        for g in grams:
            index.setdefault(g, []).append(j)
    pairs = []
    for i, text in enumerate(left):
        gl = char_ngrams(text, n)
        shared: Counter[int] = Counter()
        for g in gl:
            shared.update(index.get(g, ()))
        for j, inter in shared.items():
            jac = inter / (len(gl) + len(grams_r[j]) - inter)
            if jac > threshold:
                pairs.append((i, j, round(jac, 3)))
    return pairs


_ROUGH_SENTENCE_END = re.compile(r"(?<=[.!?…“\"])\s+(?=[A-ZÄÖÜ„\"])")


def iter_texts_of_dir(path: Path) -> Iterable[str]:
    """Rough sentences of every .txt and texts of every .jsonl under path, for leakage checks only
    (a generous splitter: over-splitting only makes the check stricter)."""
    for f in sorted(path.rglob("*")):
        if f.suffix == ".txt":
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                yield from (s for s in _ROUGH_SENTENCE_END.split(line) if len(s.split()) >= 4)
        elif f.suffix == ".jsonl":
            yield from (r["text"] for r in read_jsonl(f))
