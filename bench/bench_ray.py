"""Ray engine benchmark: articles/s of the local engine vs Ray Data with 1 and 2 (or more) workers.

    python bench/bench_ray.py [--model DIR] [--n 200] [--workers 1,2] [--threads-per-worker 1]

The same ``--n`` articles (examples/ repeated, as one JSONL file) are scored by the local engine
(one process, with 1 inference thread and with one per physical core, model load included) and by
:func:`exportstance.serve.distributed.score_dataset` on a local Ray started once beforehand (each
run includes starting its actors and loading one model per actor; the JSONL is cut so every
worker gets about 4 units). Labels are checked equal to the local run. Prints the CPU flags that
decide inference speed and a scaling model: throughput per core and the cores for 1 million
articles per hour. On a shared machine the figures are noisy: run it when the cores are idle.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="trained model dir (default: the built one)")
    parser.add_argument("--n", type=int, default=200, help="articles (examples/ repeated)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts for the Ray runs")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """All runs, with inputs and outputs under ``work``."""
    from exportstance.model.inference import physical_cores
    from exportstance.model.paths import default_model_dir
    from exportstance.serve import distributed
    from exportstance.serve.articles import score_articles
    from exportstance.serve.classifier import StanceClassifier
    from exportstance.serve.io import iter_articles

    model = str(args.model or default_model_dir())
    texts = [p.read_text(encoding="utf-8") for p in sorted((REPO / "examples").glob("*.txt"))]
    source = work / "articles.jsonl"
    source.write_text("".join(json.dumps({"id": f"a{i}", "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n"
                              for i in range(args.n)), encoding="utf-8")
    print(f"{args.n} articles (examples/ repeated), model {model}")
    print(f"{os.cpu_count()} CPUs ({physical_cores()} physical cores), flags: {cpu_flags()}")

    rows = []
    for threads in sorted({1, physical_cores()}):
        start = time.perf_counter()
        clf = StanceClassifier.load(model, batch_size=args.batch_size, threads=threads)
        local = list(score_articles(iter_articles([source]), model=clf, keep_text=True))  # as the Ray parts (and the JSONL of `score`)
        rows.append((f"local {threads} thread{'s' * (threads > 1)}", threads, time.perf_counter() - start))
        del clf
    statements = sum(len(r["statements"]) for r in local)

    import ray

    start = time.perf_counter()
    counts = [int(w) for w in args.workers.split(",")]
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, max(counts) * args.threads_per_worker), include_dashboard=False,
             object_store_memory=distributed.OBJECT_STORE_BYTES, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": distributed.WORKER_ENV})
    print(f"ray.init (local instance): {time.perf_counter() - start:.1f} s, not counted below")
    busy: list[tuple[int, float, float]] = []  # workers, wall s, actor-busy s
    try:
        for workers in counts:
            out = work / f"ray-{workers}"
            summary = distributed.score_dataset(
                [source], out, model, workers=workers, threads_per_worker=args.threads_per_worker,
                batch_size=args.batch_size, lines_per_part=math.ceil(args.n / (4 * workers)),
            )
            got = list(distributed.read_results(out))
            same = [s["label"] for r in got for s in r["statements"]] == [s["label"] for r in local for s in r["statements"]]
            if not same or len(got) != len(local):
                print(f"ray with {workers} workers: records differ from the local engine", file=sys.stderr)
                return 1
            rows.append((f"ray {workers} worker{'s' * (workers > 1)}", workers * args.threads_per_worker, summary.seconds))
            busy.append((workers, summary.seconds, summary.busy_seconds))
    finally:
        ray.shutdown()

    print(f"{statements} statements; every Ray run's labels equal the local run's\n")
    print(f"{'engine':<16}{'cores':>6}{'seconds':>9}{'articles/s':>12}{'statements/s':>14}{'articles/s/core':>17}")
    for name, cores, seconds in rows:
        print(f"{name:<16}{cores:>6}{seconds:>9.1f}{args.n / seconds:>12.2f}{statements / seconds:>14.1f}"
              f"{args.n / seconds / cores:>17.2f}")
    print("\nsteady state (time the actors spent on parts, i.e. without Ray/actor start-up and model loads):")
    for workers, wall, seconds in busy:
        rate = args.n / seconds / args.threads_per_worker
        print(f"  ray {workers} worker(s): {rate:.2f} articles/s per core ({rate * statements / args.n:.1f} statements/s), "
              f"{args.n / seconds * workers:.2f} articles/s in all; start-up and scheduling {wall - seconds / workers:.1f} s")
    best = max(args.n / seconds / args.threads_per_worker for _, _, seconds in busy)
    per_hour = 1e6 / 3600
    print(f"\nscaling model: {best:.2f} articles/s per core (best steady Ray rate; articles of "
          f"~{statements / args.n:.0f} statements)")
    print(f"1,000,000 articles/hour = {per_hour:.0f} articles/s -> about {math.ceil(per_hour / best)} such cores "
          f"(x {statements / args.n:.0f}/S for articles of S statements)")
    return 0


def cpu_flags() -> str:
    """The inference-relevant flags of this CPU (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(f"{flag}={'yes' if flag in flags else 'no'}" for flag in FLAGS)


if __name__ == "__main__":
    sys.exit(main())
