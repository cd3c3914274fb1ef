"""How much padding ``score_articles``' chunks cost: each chunk is length-sorted and batched on its
own, so small chunks pad more than one sorted pool of every statement (what a bare ``predict`` on
all of them gets). Counts the tokens the engine computes (batch rows x padded width) for chunks of
several sizes, on the real-news corpus (labels/realnews.jsonl, one article per source passage).

    python bench/bench_chunking.py [--batch-size 16] [--chunk-batches 8,16,32,64]

Token counts, not times: they do not depend on the machine.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from exportstance.model.inference import length_sorted_batches
from exportstance.serve import articles
from exportstance.serve.classifier import StanceClassifier
from exportstance.training.data import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="trained model dir (its tokenizer)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-batches", default="8,16,32,64")
    args = parser.parse_args()
    clf = StanceClassifier.load(args.model)
    rows = read_jsonl(REPO / "labels" / "realnews.jsonl")
    passages = ["\n".join(row["text"] for row in group) for _, group in itertools.groupby(rows, lambda r: r["group"])]

    def computed(texts: list[str]) -> tuple[int, int]:
        """(tokens computed, tokens of the texts) of one ``predict`` call: length-sorted, padded."""
        lengths = [min(len(e.ids) + 2, 128) for e in clf.tokenizer.encode_batch(texts, add_special_tokens=False)]
        batches = length_sorted_batches(lengths, args.batch_size)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches), sum(lengths)

    results = {}
    for n in map(int, args.chunk_batches.split(",")):  # the chunks score_articles makes (its _chunks)
        chunks = articles._chunks(iter(passages), n * args.batch_size, keep_text=False)
        calls = [[s.text for _, statements in chunk for s in statements or ()] for chunk in chunks]
        results[n] = (sum(computed(c)[0] for c in calls), len(calls))
    statements = [t for c in calls for t in c]
    pool, real = computed(statements)
    print(f"{len(passages)} real-news passages, {len(statements)} statements, "
          f"{real} tokens; batch {args.batch_size}; one sorted pool computes {pool} tokens (+{100 * (pool / real - 1):.1f}%)")
    for n, (tokens, n_calls) in results.items():
        print(f"chunks of {n:>3} batches: {n_calls:>4} predict calls, {tokens} tokens computed, "
              f"+{100 * (tokens / pool - 1):.1f}% over one pool")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
