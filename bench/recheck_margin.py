"""Choose ``OnnxRuntimeEngine.RECHECK_MARGIN`` on the real-news dev split (never test: ``make bench`` reports there).

    python bench/recheck_margin.py [--model DIR] [--split dev]

For each candidate margin: the share of statements int8 is unsure about (run again in fp32) and the
label agreement of int8-with-recheck with the torch fp32 reference. The recheck uses the fp32 graph,
so a rechecked row gets fp32's label. The table simulates the margins from one int8 and one fp32
pass (margins from calibrated probabilities turned back into raw softmax, exact for one-window
statements); the last line runs the engine itself with its default margin.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARGINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    import numpy as np

    from exportstance.model.paths import default_model_dir
    from exportstance.serve.classifier import StanceClassifier
    from exportstance.serve.engines import OnnxRuntimeEngine, flags_summary, top_two_margin
    from exportstance.training.data import read_jsonl

    model = args.model or default_model_dir()
    texts = [r["text"] for r in read_jsonl(REPO / "labels" / "realnews.jsonl") if r.get("split") == args.split]
    reference = StanceClassifier.load(model, backend="torch", precision="fp32").predict_proba(texts).argmax(1)

    def logits(precision: str, recheck_margin: float | None) -> tuple[np.ndarray, OnnxRuntimeEngine]:
        clf = StanceClassifier.load(model, backend="onnx", precision="fp32")
        clf.engine = OnnxRuntimeEngine(model, precision, clf.threads, recheck_margin=recheck_margin)
        # log of the calibrated probabilities times the temperature: the raw logits up to a constant
        return np.log(clf.predict_proba(texts)) * clf.meta.temperature, clf.engine

    int8, _ = logits("int8", 0.0)
    fp32, _ = logits("fp32", None)
    margin = top_two_margin(int8)
    print(f"real-news {args.split}: {len(texts)} statements; CPU flags: {flags_summary()}")
    print(f"{'margin':>7}{'rechecked':>11}{'agreement':>11}")
    for m in MARGINS:
        unsure = margin < m
        labels = np.where(unsure, fp32.argmax(1), int8.argmax(1))
        print(f"{m:>7.2f}{100 * unsure.mean():>10.1f}%{100 * (labels == reference).mean():>10.2f}%")
    engine_logits, engine = logits("int8", None)
    agree = 100 * (engine_logits.argmax(1) == reference).mean()
    print(f"engine, RECHECK_MARGIN {OnnxRuntimeEngine.RECHECK_MARGIN}: {100 * engine.rechecked / len(texts):.1f}% "
          f"rechecked (per window), agreement {agree:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
