"""``exportstance score`` (batch-score files), ``exportstance report`` (scored JSONL -> HTML) and
``exportstance demo`` (score the bundled examples and write their report).

Heavy imports (torch, transformers) happen inside the commands, so ``exportstance --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..model.labels import LABELS
from . import BACKENDS, PRECISIONS

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "examples"
SEEDS_DIR = REPO.parent / "shared" / "seeds"


def register(subparsers: Any) -> None:
    score = subparsers.add_parser(
        "score",
        help="score articles (.txt files, directories, JSONL, CSV) into JSONL or CSV",
        description="Split each article into statements, classify them (pro/anti/neutral) and write one "
        "record per article (JSONL) or one row per statement (CSV). Exit status 1 if any item failed.",
    )
    score.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help=".txt/.jsonl/.csv file or directory (with --engine ray also .parquet)")
    score.add_argument("-o", "--output", required=True, type=Path,
                       help="output file (appended per article); with --engine ray a directory of part files")
    score.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                       help="default: from the output suffix, else jsonl; parquet only with --engine ray")
    score.add_argument("--resume", action="store_true",
                       help="skip ids already in OUTPUT and append the rest (ray: skip inputs whose part file is complete)")
    score.add_argument("--report", type=Path, metavar="HTML", help="also write an HTML report of OUTPUT (JSONL only)")
    _model_arguments(score)
    ray = score.add_argument_group("scale-out (pip install 'exportstance[ray]')")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: a Ray Data actor pool, one classifier per worker")
    ray.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray)")
    ray.add_argument("--workers", type=_positive, help="actors (default: the cluster's CPUs // threads per worker)")
    ray.add_argument("--threads-per-worker", type=_positive, default=1, help="inference threads (and Ray CPUs) per actor; --threads is for the local engine")
    score.set_defaults(func=run_score)

    demo = subparsers.add_parser(
        "demo",
        help="score examples/ (and ../shared/seeds) with the default model and print a summary",
        description="Score the repository's example articles and, if present, the seed articles; writes "
        "OUT/demo_examples.jsonl, OUT/demo_seeds.jsonl and OUT/report.html (both sources). Needs a built model "
        "(`make demo` builds it).",
    )
    demo.add_argument("--out", type=Path, default=Path("out"), help="output directory (default: out)")
    demo.add_argument("--seeds", type=Path, help=f"seed articles directory (default: {SEEDS_DIR} if present)")
    _model_arguments(demo)
    demo.set_defaults(func=run_demo)

    report = subparsers.add_parser(
        "report",
        help="render scored JSONL files (from `score`) as one self-contained HTML report",
        description="One HTML file (no network; CSS, JS and charts inline) with an overview, a sortable and "
        "filterable table of articles and every article's text with its statements highlighted by label. "
        "Each input file is a source (named by its file stem). Exit status 1 if any record is an error.",
    )
    report.add_argument("paths", nargs="+", type=Path, metavar="SCORED.jsonl", help="output of `exportstance score`")
    report.add_argument("-o", "--output", required=True, type=Path, metavar="HTML", help="report file to write")
    report.add_argument("--title", help="page title (default: exportstance report)")
    report.set_defaults(func=run_report)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="trained model dir (default: $EXPORTSTANCE_MODEL or the built one)")
    parser.add_argument("--batch-size", type=_positive, default=16)
    parser.add_argument("--threads", type=_positive, help="inference threads (default: physical cores)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference engine (default auto: by the CPU's flags; torch is the fp32 reference)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="default: the engine's best for this CPU (bf16 only with native bf16)")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def run_score(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"exportstance score: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.engine == "ray":
        return _run_score_ray(args)
    clf = _load(args)
    if clf is None:
        return 1
    from . import io
    from .articles import score_articles

    fmt = args.format or ("csv" if args.output.suffix.lower() == ".csv" else "jsonl")
    if args.report is not None and fmt != "jsonl":
        print("exportstance score: --report needs JSONL output (CSV rows lack the text and summary)", file=sys.stderr)
        return 2
    if args.report is not None and args.report.resolve() == args.output.resolve():
        print("exportstance score: --report must not be the output file", file=sys.stderr)
        return 2
    if fmt == "parquet":
        print("exportstance score: --format parquet needs --engine ray", file=sys.stderr)
        return 2
    stats = Stats()
    with io.open_writer(args.output, fmt, resume=args.resume) as writer:
        todo = _skip_done(io.iter_articles(args.paths, exclude=args.output), writer.done, stats)
        try:
            for record in score_articles(todo, model=clf, progress=True, keep_text=fmt == "jsonl"):
                writer.write(record)
                stats.add(record)
        except KeyboardInterrupt:
            print(f"\ninterrupted; finished articles are in {args.output}, continue with --resume", file=sys.stderr)
            print(stats.table())
            return 130
    print(stats.table())
    if args.report is not None:
        from .report import file_sources

        _write_report(file_sources([args.output]), args.report)
    return 1 if stats.failed else 0


def run_report(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        print(f"exportstance report: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.output.resolve() in {p.resolve() for p in args.paths}:
        print(f"exportstance report: the output {args.output} is one of the inputs", file=sys.stderr)
        return 2
    from .report import file_sources

    overview = _write_report(file_sources(args.paths), args.output, title=args.title)
    return 1 if overview.failed else 0


def _write_report(sources: list[tuple[str, Any]], output: Path, title: str | None = None) -> Any:
    """Write the HTML report of (name, records) sources and print where it is (and what is in it)."""
    from .report import write_report

    overview = write_report(sources, output, title=title)
    print(f"report: {overview.articles} articles, {overview.statements} statements, "
          f"{overview.failed} failed -> {output}")
    return overview


def _run_score_ray(args: argparse.Namespace) -> int:
    """``--engine ray``: :func:`exportstance.serve.distributed.score_dataset` into the directory ``-o``."""
    from ..model.format import ModelNotFoundError
    from .distributed import score_dataset

    fmt = args.format or ("parquet" if args.output.suffix.lower() == ".parquet" else "jsonl")
    if fmt == "csv":
        print("exportstance score: --engine ray writes jsonl or parquet part files, not csv", file=sys.stderr)
        return 2
    try:
        summary = score_dataset(
            args.paths, args.output, args.model, workers=args.workers, threads_per_worker=args.threads_per_worker,
            address=args.address, batch_size=args.batch_size, fmt=fmt, resume=args.resume, progress=True,
            precision=args.precision, backend=args.backend,  # passed through to every worker's StanceClassifier.load
        )
    except (ImportError, ModelNotFoundError, NotADirectoryError, ConnectionError, ValueError) as exc:
        print(f"exportstance score: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ModelNotFoundError) else 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; complete parts are in {args.output}, continue with --resume", file=sys.stderr)
        return 130
    stats = Stats()
    stats.articles, stats.failed, stats.skipped = summary.articles, summary.failed, summary.skipped_articles
    stats.labels.update(summary.labels)
    print(stats.table())
    print(f"{summary.parts} parts scored, {summary.skipped_parts} skipped (complete), by {summary.workers} worker(s) "
          f"x {summary.threads_per_worker} thread(s) in {summary.seconds:.1f} s -> {summary.output_dir}")
    if args.report is not None:  # from the part files, in input order
        from .distributed import read_results

        _write_report([(args.output.name, read_results(args.output))], args.report)
    return 1 if stats.failed else 0


def run_demo(args: argparse.Namespace) -> int:
    if args.seeds is not None and not args.seeds.is_dir():
        print(f"exportstance demo: no seeds directory {args.seeds}", file=sys.stderr)
        return 2
    sources = {"examples": EXAMPLES_DIR, "seeds": args.seeds or (SEEDS_DIR if SEEDS_DIR.is_dir() else None)}
    if sources["seeds"] is None:
        print(f"(no seed articles at {SEEDS_DIR}; scoring examples only)")
    clf = _load(args)
    if clf is None:
        return 1
    from .articles import score_articles
    from .io import JsonlWriter, iter_articles

    failed = 0
    written: dict[str, Path] = {}
    for name, directory in sources.items():
        if directory is None:
            continue
        out = written[name] = args.out / f"demo_{name}.jsonl"
        print(f"\n== {name}: {directory} -> {out}")
        stats = Stats()
        with JsonlWriter(out) as writer:
            for record in score_articles(iter_articles([directory]), model=clf, keep_text=True):
                writer.write(record)
                stats.add(record)
                print(describe(record))
        print(stats.table())
        failed += stats.failed
    print()
    from .report import file_sources

    _write_report(file_sources(list(written.values()), names=list(written)), args.out / "report.html",
                  title="exportstance demo report")
    return 1 if failed else 0


def _load(args: argparse.Namespace) -> Any:
    """The classifier, or None after printing why not (a missing model names the command that builds it)."""
    import os

    from ..model.format import ModelNotFoundError
    from .classifier import StanceClassifier

    # transformers' "Loading weights" bar (models served through it) is noise in a batch command's
    # output; the environment switch needs no import of transformers on the default path.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return StanceClassifier.load(
            args.model, batch_size=args.batch_size, threads=args.threads, precision=args.precision,
            backend=args.backend,
        )
    except ModelNotFoundError as exc:
        print(f"exportstance {args.command}: {exc}", file=sys.stderr)
        return None


def _skip_done(articles: Iterable[dict[str, Any]], done: set[str], stats: Stats) -> Iterator[dict[str, Any]]:
    """Articles whose id is not yet in the output (``--resume``); counts the skipped ones."""
    from .io import record_key

    for article in articles:
        if done and record_key(article.get("id")) in done:
            stats.skipped += 1
        else:
            yield article


class Stats:
    """Running totals for the end-of-run table."""

    def __init__(self) -> None:
        self.articles = 0
        self.failed = 0
        self.skipped = 0
        self.labels: Counter[str] = Counter()

    def add(self, record: dict[str, Any]) -> None:
        if "error" in record:
            self.failed += 1
        else:
            self.articles += 1
            self.labels.update(s["label"] for s in record["statements"])

    def table(self) -> str:
        n = sum(self.labels.values())
        lines = [
            f"{'articles':<12}{self.articles:>8}",
            f"{'failed':<12}{self.failed:>8}",
            *([f"{'skipped':<12}{self.skipped:>8}  (already in output)"] if self.skipped else []),
            f"{'statements':<12}{n:>8}",
            *(f"  {label:<10}{self.labels[label]:>8}  {self.labels[label] / n if n else 0:6.1%}" for label in LABELS),
        ]
        return "\n".join(lines)


def describe(record: dict[str, Any], width: int = 100) -> str:
    """A few readable lines about one scored article (or its error)."""
    if "error" in record:
        return f"{record['id']}: ERROR {record['error']}"
    summary = record["summary"]
    shares = "  ".join(f"{label} {summary['shares'][label]:.0%}" for label in LABELS)
    index = "n/a" if summary["stance_index"] is None else f"{summary['stance_index']:+.2f}"
    lines = [
        f"{record['id']}: {summary['n_statements']} statements  {shares}  "
        f"stance index {index}  dominant {summary['dominant']}"
    ]
    for label, sign in (("pro", "+"), ("anti", "-")):
        strongest = summary[f"strongest_{label}"]
        if strongest:
            lines.append(f"   {sign} {_shorten(strongest['text'], width)} ({strongest['score']:.2f})")
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
