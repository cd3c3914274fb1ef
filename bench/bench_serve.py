"""Serving benchmark: exportstance (fp32, bf16, int8) against a naive transformers pipeline.

    python bench/bench_serve.py [--model DIR] [--corpus FILE ...] [--n N]

Scores the same statements in every mode and prints statements/s (best of ``--repeat`` passes, as a
shared CPU is noisy), the speed-up over
``pipeline("text-classification")`` called one text at a time, label agreement with fp32, peak RSS
and the cold start (imports, then ``StanceClassifier.load``). Each mode runs in a fresh interpreter,
so its peak RSS and load time are its own. Corpus files are JSONL (``text`` key) or plain text (one
statement per line); the default is labels/corpus.jsonl when built, else the sentences of examples/.
It also prints an fp32 ceiling (see ``fp32_ceiling``): how fast torch's matmuls alone could go,
which bounds the speed-up an fp32 engine built on them can have over the naive pipeline.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp32", "bf16", "int8", "pipeline")
# Without native bf16, autocast is several times slower than fp32: time it on fewer texts.
SLOW_BF16_TEXTS = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="trained model dir (default: the built one)")
    parser.add_argument("--corpus", type=Path, nargs="+", help="JSONL (text key) or .txt (one statement per line)")
    parser.add_argument("--n", type=int, default=1000, help="statements to score (corpus repeated if shorter)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch threads in every mode (default: physical cores)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per mode; the best counts (shared CPUs)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from exportstance.model.paths import default_model_dir

        args.model = default_model_dir()
    if args.worker:
        print(json.dumps(run_mode(args.worker, args)))
        return 0
    return report(args)


def report(args: argparse.Namespace) -> int:
    """Run every mode in its own interpreter and print one comparison table."""
    import platform

    texts = load_corpus(args.corpus, args.n)
    results = {}
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--worker", mode, "--model", str(args.model), "--n", str(args.n),
                   "--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]
        if args.corpus:
            command += ["--corpus", *map(str, args.corpus)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            results[mode] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    fp32 = results.get("fp32", {})
    print(f"{len(texts)} statements, {platform.machine()}, model {args.model}")
    if "import_s" in fp32:
        print(f"{fp32['threads']} torch threads, cpu capability {fp32['cpu']}, native bf16: {fp32['native_bf16']}")
        print(f"cold start (fresh python): imports {fp32['import_s']:.2f} s "
              f"+ StanceClassifier.load {fp32['load_s']:.2f} s")
    naive = results.get("pipeline", {}).get("rate")
    print(f"\n{'mode':<28}{'statements/s':>13}{'vs naive':>10}{'agree fp32':>12}{'peak RSS':>10}")
    for mode, result in results.items():
        name = "naive pipeline, batch 1" if mode == "pipeline" else f"exportstance {mode}"
        if "error" in result:
            print(f"{name:<28}  unsupported: {result['error']}")
            continue
        ratio = f"{result['rate'] / naive:.2f}x" if naive else "-"
        labels, reference = result["labels"], fp32.get("labels", [])
        agree = f"{100 * sum(a == b for a, b in zip(labels, reference)) / len(labels):.1f}%" if reference else "-"
        note = f"  ({len(labels)} texts)" if len(labels) != len(texts) else ""
        print(f"{name:<28}{result['rate']:>13.1f}{ratio:>10}{agree:>12}{result['rss_mib']:>7.0f} MiB{note}")
    ceiling = fp32.get("ceiling")
    if ceiling:
        bound = f" = {ceiling['rate'] / naive:.2f}x the naive pipeline" if naive else ""
        print(f"\nfp32 ceiling: the Linear layers alone need {ceiling['gflop_total']:.0f} GFLOP for these "
              f"{len(texts)} statements ({ceiling['tokens']} tokens); at the fp32 matmul rate torch reaches "
              f"here, {ceiling['gflops']:.0f} GFLOP/s, that is at most {ceiling['rate']:.1f} statements/s{bound} "
              f"(exportstance fp32 reaches {100 * fp32['rate'] / ceiling['rate']:.0f}% of it)")
    return 0


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Score the corpus in one mode (in this fresh interpreter); labels come back for agreement."""
    start = time.perf_counter()
    import torch

    from exportstance.serve.classifier import StanceClassifier, default_threads, has_native_bf16

    imported = time.perf_counter()
    texts = load_corpus(args.corpus, args.n)
    result: dict = {"threads": args.threads or default_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
                    "native_bf16": has_native_bf16()}
    if mode == "pipeline":
        from transformers import pipeline

        torch.set_num_threads(result["threads"])
        pipe = pipeline("text-classification", model=str(args.model), device="cpu")
        pipe(texts[0], truncation=True)

        def score() -> list[str]:
            return [pipe(text, truncation=True)[0]["label"] for text in texts]
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the bf16-without-native-support warning: this is the measurement
            clf = StanceClassifier.load(
                args.model, batch_size=args.batch_size, threads=result["threads"], precision=mode
            )
        result.update(import_s=imported - start, load_s=time.perf_counter() - imported)
        if mode == "bf16" and not result["native_bf16"]:
            texts = texts[:SLOW_BF16_TEXTS]
        clf.predict(texts[: args.batch_size])  # warm-up: the first call pays one-off allocations

        def score() -> list[str]:
            return [p.label for p in clf.predict(texts)]
    seconds = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        labels = score()
        seconds.append(time.perf_counter() - t0)
    result.update(rate=len(texts) / min(seconds), labels=labels,
                  rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if mode == "fp32":
        result["ceiling"] = fp32_ceiling(clf, texts, args.batch_size)
    return result


def fp32_ceiling(clf, texts: list[str], batch_size: int) -> dict | None:
    """The most statements/s an fp32 engine could reach here with torch's matmuls: the FLOPs of the
    model's Linear layers for these texts (what our encoder computes: every Linear of the lower
    layers for every token, the last layer's keys and values; its [CLS]-only rest and the head,
    ~0.2%, are left out) divided by the fp32 matmul rate torch reaches on this CPU with the
    classifier's threads, on the same shapes (batch x mean tokens rows). Attention, GELU,
    LayerNorm and tokenising are free in this bound; only faster matmuls than torch's or run-to-run
    noise (~10%) could beat it."""
    import torch

    from exportstance.model.encoder import BertClassifier

    if not isinstance(clf.model, BertClassifier):
        return None
    c = clf.model.config
    tokens = sum(len(e.ids) for e in clf.tokenizer.encode_batch(texts))
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    per_token = 2 * ((layers - 1) * (4 * h * h + 2 * h * i) + 2 * h * h)
    shapes = [(h, h)] * 4 + [(h, i), (i, h)]
    rows = batch_size * round(tokens / len(texts))
    torch.set_num_threads(clf.threads)
    inputs = {k: torch.randn(rows, k) for k in (h, i)}
    weights = [torch.randn(n, k) for k, n in shapes]

    def layer_matmuls(repeat: int) -> float:
        t0 = time.perf_counter()
        for _ in range(repeat):
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
        return time.perf_counter() - t0

    with torch.inference_mode():
        layer_matmuls(3)  # warm-up
        # best of 20 rounds: the rate the CPU reaches when nothing interferes
        best = min(layer_matmuls(10) for _ in range(20))
    gflops = 10 * sum(2 * rows * k * n for k, n in shapes) / best / 1e9
    seconds = per_token * tokens / (gflops * 1e9)
    return {"gflops": gflops, "tokens": tokens, "gflop_total": per_token * tokens / 1e9, "rate": len(texts) / seconds}


def load_corpus(files: list[Path] | None, n: int) -> list[str]:
    """``n`` statements from the given files, labels/corpus.jsonl, or the examples' sentences."""
    texts: list[str] = []
    default = REPO / "labels" / "corpus.jsonl"
    for file in files or ([default] if default.is_file() else []):
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    texts.append(json.loads(line)["text"] if file.suffix == ".jsonl" else line.strip())
    if not texts:
        from exportstance.serve.segment import default_segmenter

        for path in sorted((REPO / "examples").glob("*.txt")):
            texts.extend(s.text for s in default_segmenter().split(path.read_text(encoding="utf-8")))
    if not texts:
        raise SystemExit("no statements to score: pass --corpus FILE")
    return [texts[i % len(texts)] for i in range(n)]


if __name__ == "__main__":
    sys.exit(main())
