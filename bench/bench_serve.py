"""Serving benchmark: every engine and precision against the naive transformers pipeline, in one run.

    python bench/bench_serve.py [--model DIR] [--n N] [--modes a,b,...] [--repeat K]   (make bench)

Statements: the real-news corpus's test split (labels/realnews.jsonl; real text sits nearer the
decision boundaries than synthetic text, so label changes show there first) and the synthetic
corpus's test split. For each mode, in a fresh interpreter (so peak RSS and cold start are its
own): statements/s on the first ``--n`` real-news statements (best of ``--repeat`` passes: the CPU
is shared and noisy), the ratio to ``pipeline("text-classification")`` called one text at a time,
label agreement with the torch fp32 reference and max |dp| on both sets, peak RSS and the cold
start (imports + ``StanceClassifier.load``). Then the default engine's article path:
``score_articles`` on the seed articles (or examples/) against bare ``predict`` on the same
statements (best of at least 3 passes each), with the CPU time of ``predict`` and of segmenting
alone: where ``predict`` keeps every core busy, segmenting can only take CPU from it, which bounds
that ratio. The CPU flags that decide engine speed are printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# mode -> (backend, precision); "naive" and "pipeline32" are transformers' pipeline.
ENGINE_MODES = {
    "torch-fp32": ("torch", "fp32"),
    "torch-int8": ("torch", "int8"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),  # with the fp32 recheck of unsure rows (the engine's default)
    "onnx-int8-plain": ("onnx", "int8"),  # recheck off: plain dynamic int8, for comparison
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "default": ("auto", None),
}
MODES = ("naive", "pipeline32", *ENGINE_MODES)
REFERENCE = "torch-fp32"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="trained model dir (default: the built one)")
    parser.add_argument("--n", type=int, default=1000, help="real-news statements timed per mode")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="threads in every mode (default: physical cores)")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per mode; the best counts")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--articles", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from exportstance.model.paths import default_model_dir

        args.model = default_model_dir()
    if args.worker:
        print(json.dumps(run_mode(args.worker, args)))
        return 0
    if args.articles:
        print(json.dumps(run_articles(args)))
        return 0
    return report(args)


def _worker(args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--model", str(args.model), "--n", str(args.n),
               "--batch-size", str(args.batch_size), "--repeat", str(args.repeat), *extra]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace) -> int:
    """Run every mode in its own interpreter and print one comparison table."""
    import platform

    from exportstance.model.inference import cpu_flags
    from exportstance.serve.engines import choose, flags_summary

    modes = args.modes.split(",")
    if REFERENCE not in modes:
        modes.insert(0, REFERENCE)
    results = {mode: _worker(args, "--worker", mode) for mode in modes}
    ref = results[REFERENCE]
    real, corpus = load_sets(args.n)
    default = choose("auto", None)
    print(f"model {args.model}; {platform.machine()}, CPU flags: {flags_summary(cpu_flags())}; "
          f"threads {ref.get('threads')}; default engine here: {default.backend} {default.precision} ({default.reason})")
    print(f"timed: {len(real['timed'])} real-news test statements; agreement on all {len(real['texts'])} "
          f"real-news test and {len(corpus['texts'])} synthetic test statements, against {REFERENCE}")
    print("cold start: a fresh interpreter's serving imports + StanceClassifier.load; RSS load: peak RSS "
          "by then; RSS peak: after scoring everything\n")
    naive = results.get("naive", {}).get("rate")
    head = (f"{'mode':<16}{'stmts/s':>9}{'vs naive':>9}{'agree real':>11}{'max|dp|':>9}"
            f"{'agree synth':>12}{'max|dp|':>9}{'RSS load':>10}{'RSS peak':>10}{'cold start':>11}")
    print(head)
    for mode, r in results.items():
        if "error" in r:
            print(f"{mode:<16}  failed: {r['error']}")
            continue
        ratio = f"{r['rate'] / naive:.2f}x" if naive else "-"
        cells = []
        for key in ("real", "synthetic"):
            agree, dp = compare(r.get(key), ref.get(key))
            cells.append(f"{agree:>11}{dp:>9}" if key == "real" else f"{agree:>12}{dp:>9}")
        cold = f"{r['cold_s']:.2f} s" if "cold_s" in r else "-"
        load_rss = f"{r['load_rss_mib']:.0f} MiB" if "load_rss_mib" in r else "-"
        print(f"{mode:<16}{r['rate']:>9.1f}{ratio:>9}{cells[0]}{cells[1]}{load_rss:>10}{r['rss_mib']:>6.0f} MiB{cold:>11}")
        if r.get("rechecked_real"):
            print(f"{'':<16}rechecked in fp32: {100 * r['rechecked_real']:.1f}% of real-news, "
                  f"{100 * r['rechecked_synthetic']:.1f}% of synthetic statements")
    art = _worker(args, "--articles")
    if "error" in art:
        print(f"\nscore_articles: failed: {art['error']}")
    else:
        print(f"\nscore_articles ({art['source']}: {art['articles']} articles, {art['statements']} statements, "
              f"default engine): {art['article_rate']:.1f} statements/s = {100 * art['article_rate'] / art['predict_rate']:.0f}% "
              f"of bare predict on the same statements ({art['predict_rate']:.1f}/s)")
        print(f"  CPU time (median of passes): predict {art['predict_cpu_s']:.2f} s on {art['predict_cores']:.2f} cores "
              f"on average, segmenting alone {art['segment_cpu_s']:.2f} s, so with every core busy the ratio "
              f"is bounded near {100 * art['predict_cpu_s'] / (art['predict_cpu_s'] + art['segment_cpu_s']):.0f}%")
    return 0


def compare(labels_probs: dict | None, reference: dict | None) -> tuple[str, str]:
    """(agreement %, max |dp|) of one mode's labels/probabilities against the reference's."""
    if not labels_probs or not reference:
        return "-", "-"
    import numpy as np

    a, b = labels_probs["labels"], reference["labels"]
    agree = 100 * sum(x == y for x, y in zip(a, b)) / len(b)
    dp = float(np.abs(np.array(labels_probs["probs"]) - np.array(reference["probs"])).max())
    return f"{agree:.1f}%", f"{dp:.3f}"


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Score the statements in one mode (in this fresh interpreter)."""
    start = time.perf_counter()
    if mode in ("naive", "pipeline32"):
        real, corpus = load_sets(args.n)
        import torch
        from transformers import pipeline

        from exportstance.serve.classifier import default_threads

        threads = args.threads or default_threads()
        torch.set_num_threads(threads)
        pipe = pipeline("text-classification", model=str(args.model), device="cpu")
        batch = 1 if mode == "naive" else 32

        def labels(texts: list[str]) -> list[str]:
            return [out["label"] for out in pipe(texts, batch_size=batch, truncation=True)]

        labels(real["timed"][:4])
        result: dict = {"threads": threads}
        score = labels
    else:
        # Cold start first, in this fresh interpreter: the serving imports and the load, nothing else.
        from exportstance.serve.classifier import StanceClassifier

        backend, precision = ENGINE_MODES[mode]
        if mode == "onnx-int8-plain":  # this interpreter only: load opens no fp32 session at all
            from exportstance.serve.engines import OnnxRuntimeEngine

            OnnxRuntimeEngine.RECHECK_MARGIN = 0.0
        clf = StanceClassifier.load(args.model, backend=backend, precision=precision,
                                    batch_size=args.batch_size, threads=args.threads)
        result = {"threads": clf.threads, "engine": f"{clf.backend} {clf.precision}",
                  "cold_s": time.perf_counter() - start,
                  "load_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        real, corpus = load_sets(args.n)
        clf.predict(real["timed"][: args.batch_size])  # warm-up: one-off allocations

        def score(texts: list[str]) -> list[str]:
            return [p.label for p in clf.predict(texts)]

        for key, texts in (("real", real["texts"]), ("synthetic", corpus["texts"])):
            predictions = clf.predict(texts)
            result[key] = {"labels": [p.label for p in predictions],
                           "probs": [[round(v, 6) for v in p.scores.values()] for p in predictions]}
            if hasattr(clf.engine, "rechecked"):  # share of windows int8 was unsure about
                result[f"rechecked_{key}"] = clf.engine.rechecked / sum(p.n_windows for p in predictions)
                clf.engine.rechecked = 0
    seconds = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        score(real["timed"])
        seconds.append(time.perf_counter() - t0)
    result.update(rate=len(real["timed"]) / min(seconds), total_s=time.perf_counter() - start,
                  rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def run_articles(args: argparse.Namespace) -> dict:
    """``score_articles`` on the seeds (else examples/) vs ``predict`` on the statements it found."""
    from exportstance.serve.articles import score_articles
    from exportstance.serve.classifier import StanceClassifier
    from exportstance.serve.io import iter_articles
    from exportstance.serve.segment import default_segmenter

    seeds = REPO.parent / "shared" / "seeds"
    source = seeds if seeds.is_dir() else REPO / "examples"
    articles = list(iter_articles([source]))
    clf = StanceClassifier.load(args.model, batch_size=args.batch_size, threads=args.threads)
    list(score_articles(articles[:1], model=clf))  # warm-up (segmenter, engine)
    segmenter = default_segmenter()
    best_articles, best_predict, statements = float("inf"), float("inf"), []
    predict_cpu, predict_cores, segment_cpu = [], [], []  # process CPU time: what the 2 cores bound
    for _ in range(max(3, args.repeat)):  # a pass takes about a second
        t0 = time.perf_counter()
        records = list(score_articles(articles, model=clf))
        best_articles = min(best_articles, time.perf_counter() - t0)
        statements = [s["text"] for r in records for s in r.get("statements", [])]
        t0, c0 = time.perf_counter(), time.process_time()
        clf.predict(statements)
        wall = time.perf_counter() - t0
        best_predict = min(best_predict, wall)
        predict_cpu.append(time.process_time() - c0)
        predict_cores.append(predict_cpu[-1] / wall)
        c0 = time.process_time()
        for article in articles:
            segmenter.split(article["text"])
        segment_cpu.append(time.process_time() - c0)
    return {"source": source.name, "articles": len(articles), "statements": len(statements),
            "article_rate": len(statements) / best_articles, "predict_rate": len(statements) / best_predict,
            "predict_cpu_s": statistics.median(predict_cpu), "predict_cores": statistics.median(predict_cores),
            "segment_cpu_s": statistics.median(segment_cpu)}


def load_sets(n: int) -> tuple[dict, dict]:
    """Real-news test statements (the first ``n`` are timed) and synthetic test statements."""
    from exportstance.training.data import read_jsonl

    def texts(path: Path) -> list[str]:
        if not path.is_file():
            return []
        return [row["text"] for row in read_jsonl(path) if row.get("split") == "test"]

    real = texts(REPO / "labels" / "realnews.jsonl")
    corpus = texts(REPO / "labels" / "corpus.jsonl")
    if not real:
        raise SystemExit("no labels/realnews.jsonl test split to time")
    timed = [real[i % len(real)] for i in range(n)]
    return {"texts": real, "timed": timed}, {"texts": corpus}


if __name__ == "__main__":
    sys.exit(main())
