"""Segmentation speed: ``Segmenter`` with its three SoMaJo speed-ups (``serve/segment.py``: the emoji
scan only on tokens with an emoji character, the word-list patterns tried only near their "." or
"+"/"&", the one-pass offset alignment) against the same
``Segmenter`` on SoMaJo as shipped, on the seed articles (else examples/); interleaved rounds in
one process, the best round of each counting.

    python bench/bench_segment.py [--rounds K]

Both give the same statements (checked here, and against plain SoMaJo in
tests/test_serve_segment.py); only the time differs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

from exportstance.serve import segment
from exportstance.serve.engines import flags_summary

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    seeds = REPO.parent / "shared" / "seeds"
    source = seeds if seeds.is_dir() else REPO / "examples"
    texts = [p.read_text(encoding="utf-8") for p in sorted(source.glob("*.txt"))]
    with mock.patch.object(segment, "_skip_emoji_scan_without_emoji", lambda tokenizer: None), \
         mock.patch.object(segment, "_match_word_lists_only_near_their_mark", lambda tokenizer: None), \
         mock.patch.object(segment, "_align_offsets_in_one_pass", lambda somajo: None):
        shipped = segment.Segmenter()
    segmenters = {"with the speed-ups": segment.Segmenter(), "SoMaJo as shipped": shipped}
    split = {name: [s.split(text) for text in texts] for name, s in segmenters.items()}
    if split["with the speed-ups"] != split["SoMaJo as shipped"]:
        raise SystemExit("the speed-ups changed the statements")
    best = dict.fromkeys(segmenters, float("inf"))
    for _ in range(args.rounds):
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            for text in texts:
                segmenter.split(text)
            best[name] = min(best[name], time.perf_counter() - start)
    statements = sum(map(len, split["with the speed-ups"]))
    print(f"{source.name}: {len(texts)} articles, {statements} statements (the same in both); "
          f"CPU flags: {flags_summary()}; best of {args.rounds} rounds")
    for name, seconds in best.items():
        print(f"{name:<20}{seconds * 1000:>7.0f} ms = {statements / seconds:>5.0f} statements/s")
    print(f"speed-up: {best['SoMaJo as shipped'] / best['with the speed-ups']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
