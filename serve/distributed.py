"""Scale-out scoring on a Ray cluster (Ray Data): the same records as ``exportstance score``, in part files.

Why Ray Data is fed *work units* and not its own file readers: the records must be identical to the
local engine's, and Ray's readers cannot give that. ``read_json`` fails the whole job on one broken
line and names no line; rows read through Arrow get one unified schema (a key missing in one row
becomes ``null``, an int id next to a string id is an error), and there are no ``FILE:LINE`` ids.
So the driver splits the inputs into units (see :func:`plan`), Ray Data spreads the units over an
actor pool (``map_batches`` with one loaded :class:`StanceClassifier` per actor), and each actor
reads its unit with the local engine's own readers (:mod:`exportstance.serve.io`: same ids, same
error records for bad lines) and scores it with :func:`exportstance.serve.articles.score_articles`.
Records never pass through Arrow: the actor writes them itself with the local JSONL writer, so a
part file's lines are what the local engine writes for those articles (probabilities up to float
rounding: a unit's statements are batched with other neighbours than in one local run).

Units (also the **resume unit**): a chunk of ``lines_per_part`` lines of a JSONL file, a whole CSV
file (a quoted field may span lines, so CSV is not cut), a run of up to ``files_per_part``
consecutive ``.txt`` files of a directory, or one row group of a Parquet file. Each unit becomes
one part file ``part-<digest>.jsonl`` (or ``.parquet``), written under a temporary name and renamed
when complete, so a part file that exists is complete; ``resume=True`` skips units whose part file
exists. ``_manifest.json`` lists the parts in input order (the local engine's order), so
:func:`read_results` gives back the local engine's records in its order.

Parquet input (read here only; the local engine does not read Parquet): columns ``id`` and
``text``, other columns passed through; ids and errors follow the JSONL rules with the 1-based
row number in place of the line number (``FILE:ROW``).

``ray`` is imported only inside the functions of this module, so the core package never needs it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import io

FORMATS = ("jsonl", "parquet")
MANIFEST = "_manifest.json"
SUFFIXES = (*io.INPUT_SUFFIXES, ".parquet")
# A unit should take seconds to minutes on one actor: long enough to amortise Ray's per-task
# overhead (~ms), short enough that a lost node costs little and resume is fine-grained.
LINES_PER_PART = 2000
FILES_PER_PART = 200
# Local Ray instance: a small object store (only unit descriptors and per-part counts travel
# through it), so machines with a small /dev/shm are fine.
OBJECT_STORE_BYTES = 256 * 2**20
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
_PART = re.compile(r"^part-[0-9a-f]{16}\.(jsonl|parquet)$")
_INDEX_COLUMN = re.compile(r"^__index_level_\d+__$")  # pandas' index, stored as a Parquet column


@dataclass
class RunSummary:
    """What a run did: parts (units) scored and skipped, articles, failures, statement labels."""

    output_dir: Path
    parts: int = 0
    skipped_parts: int = 0
    articles: int = 0
    failed: int = 0
    skipped_articles: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    workers: int = 0
    threads_per_worker: int = 0
    seconds: float = 0.0  # wall clock of the whole call (planning, Ray start, actors, scoring)
    busy_seconds: float = 0.0  # summed over parts: time actors spent reading, scoring and writing


def score_dataset(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    model: str | Path | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    address: str | None = None,
    batch_size: int = 16,
    fmt: str = "jsonl",
    resume: bool = False,
    lines_per_part: int = LINES_PER_PART,
    files_per_part: int = FILES_PER_PART,
    runtime_env: dict[str, Any] | None = None,
    progress: bool = False,
    **load_kwargs: Any,
) -> RunSummary:
    """Score ``inputs`` (.txt/.jsonl/.csv/.parquet files or directories) on Ray into part files in ``output_dir``.

    Ray: an already initialised Ray is used as is; otherwise ``address`` (or ``$RAY_ADDRESS``)
    connects to a running cluster, and without either a local instance is started and shut down
    at the end. ``workers`` actors (default: the cluster's CPUs // ``threads_per_worker``) each load
    ``StanceClassifier.load(model, batch_size=, threads=threads_per_worker, **load_kwargs)`` once;
    the model dir must be readable at the same path on every node. ``fmt`` is ``jsonl`` (the local
    engine's lines) or ``parquet`` (columns ``id``, ``error``, ``n_statements``, ``dominant`` and
    ``record``, the record as JSON). Without ``resume`` earlier part files in ``output_dir`` are removed first.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    for name, value in (("threads_per_worker", threads_per_worker), ("lines_per_part", lines_per_part),
                        ("files_per_part", files_per_part), ("batch_size", batch_size), ("workers", workers or 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    ray = _import_ray()
    start = time.perf_counter()
    out = Path(output_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} exists and is not a directory (the ray engine writes part files into a directory)")
    cluster = address or os.environ.get("RAY_ADDRESS")
    model_dir = _model_dir(model, check=not cluster and not ray.is_initialized())
    units = plan([Path(p) for p in inputs], exclude=out, lines_per_part=lines_per_part, files_per_part=files_per_part)
    if not units:
        raise ValueError(f"no input files to score in {', '.join(map(str, inputs))} (files under the output "
                         f"directory {out} are never read)")
    parts = [_part_name(unit, fmt) for unit in units]
    summary = RunSummary(output_dir=out, threads_per_worker=threads_per_worker)
    out.mkdir(parents=True, exist_ok=True)
    _clean(out, remove_parts=not resume)
    _write_manifest(out, fmt, units, parts)
    todo = []
    for unit, part in zip(units, parts):
        if resume and (out / part).exists():
            summary.skipped_parts += 1
            summary.skipped_articles += _count_records(out / part)
        else:
            todo.append({**unit, "part": part})
    if todo:  # nothing left to do (a finished run resumed) needs no Ray
        started = not ray.is_initialized()
        if started:
            _init(ray, cluster, workers, threads_per_worker, runtime_env)
        try:
            summary.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads_per_worker))
            summary.workers = min(summary.workers, len(todo))  # an actor without a unit would only load a model
            _run(ray, todo, summary, model_dir, out, fmt, batch_size, load_kwargs, progress)
        finally:
            if started:
                ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def read_results(output_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a finished run in input order (the manifest's part order, then line order)."""
    out = Path(output_dir)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    for entry in manifest["parts"]:
        path = out / entry["part"]
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the run did not finish (rerun it with resume)")
        if manifest["format"] == "parquet":
            import pyarrow.parquet as pq

            yield from (json.loads(text) for text in pq.read_table(path, columns=["record"]).column("record").to_pylist())
        else:
            with path.open(encoding="utf-8") as fh:
                yield from (json.loads(line) for line in fh if line.strip())


def plan(
    paths: Sequence[Path], exclude: Path | None = None, lines_per_part: int = LINES_PER_PART,
    files_per_part: int = FILES_PER_PART,
) -> list[dict[str, Any]]:
    """The work units in input order (files in the local engine's walk order, each cut as the module says).

    ``exclude`` (the output directory) is never read. Reading a unit's contents happens on the
    workers; here JSONL files are only scanned for line starts and Parquet files for their row groups.
    """
    skip = exclude.resolve() if exclude is not None else None
    units: list[dict[str, Any]] = []
    texts: list[list[str]] = []
    for path in paths:
        for file, file_id in io._files(path, SUFFIXES):
            if skip is not None and file.resolve().is_relative_to(skip):
                continue
            suffix = file.suffix.lower()
            if suffix == ".txt":
                if not texts or len(texts) >= files_per_part:
                    texts = []
                    units.append({"kind": "txt", "files": texts})
                texts.append([str(file.absolute()), file_id])
                continue
            texts = []  # a later .txt starts a new unit, so units stay in walk order
            if suffix == ".jsonl":
                units.extend(_jsonl_units(file, file_id, lines_per_part))
            elif suffix == ".parquet":
                units.extend(_parquet_units(file, file_id))
            else:
                units.append({"kind": "file", "file": str(file.absolute()), "file_id": file_id})
    return units


def read_unit(unit: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A unit's articles and error records, from the local engine's readers."""
    kind = unit["kind"]
    if kind == "txt":
        for file, file_id in unit["files"]:
            yield from io._read(Path(file), file_id)
    elif kind == "file":
        yield from io._read(Path(unit["file"]), unit["file_id"])
    elif kind == "jsonl":
        yield from io._read(Path(unit["file"]), unit["file_id"], start=unit["start"], stop=unit["stop"],
                            first_line=unit["first_line"])
    elif kind == "parquet":
        yield from _read_parquet(Path(unit["file"]), unit["file_id"], unit["row_group"], unit["first_row"])
    elif kind == "error":
        yield unit["record"]
    else:
        raise ValueError(f"unknown unit kind {kind!r}")


# --- planning ------------------------------------------------------------------------------------

def _jsonl_units(file: Path, file_id: str, lines_per_part: int) -> list[dict[str, Any]]:
    """Byte ranges of ``lines_per_part`` lines each; an unreadable file is one unit (the reader reports it)."""
    whole = [{"kind": "file", "file": str(file.absolute()), "file_id": file_id}]
    units: list[dict[str, Any]] = []
    try:
        with file.open("rb") as fh:
            start = offset = 0
            first = lineno = 1
            for raw in fh:
                offset += len(raw)
                if lineno - first + 1 == lines_per_part:
                    units.append(_jsonl_unit(file, file_id, start, offset, first))
                    start, first = offset, lineno + 1
                lineno += 1
            if offset > start:
                units.append(_jsonl_unit(file, file_id, start, offset, first))
    except OSError:
        return whole
    return units


def _jsonl_unit(file: Path, file_id: str, start: int, stop: int, first_line: int) -> dict[str, Any]:
    return {"kind": "jsonl", "file": str(file.absolute()), "file_id": file_id, "start": start, "stop": stop,
            "first_line": first_line}


def _parquet_units(file: Path, file_id: str) -> list[dict[str, Any]]:
    """One unit per row group; a file whose footer cannot be read is one error record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(file).metadata
    except (OSError, pa.ArrowException) as exc:
        return [{"kind": "error", "file": str(file.absolute()), "record": io.error_record(file_id, file_id, None, exc)}]
    units, first = [], 1
    for group in range(meta.num_row_groups):
        units.append({"kind": "parquet", "file": str(file.absolute()), "file_id": file_id, "row_group": group,
                      "first_row": first})
        first += meta.row_group(group).num_rows
    return units


def _read_parquet(file: Path, file_id: str, row_group: int, first_row: int) -> Iterator[dict[str, Any]]:
    """Rows of one row group as articles (JSONL's rules, row numbers for line numbers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(file).read_row_group(row_group).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        yield io.error_record(f"{file_id}:{first_row}", file_id, first_row, f"row group {row_group}: {exc}",
                              type(exc).__name__)
        return
    for row_no, row in enumerate(rows, first_row):
        # Arrow values (timestamps, decimals, bytes) as JSON types, so the record is writable as JSON.
        obj = json.loads(json.dumps({k: v for k, v in row.items() if not _INDEX_COLUMN.match(k)}, default=str))
        yield io._article(obj, f"{file_id}:{row_no}", file_id, row_no)


def _part_name(unit: dict[str, Any], fmt: str) -> str:
    """Named by what the unit reads, so a rerun over the same inputs finds its parts (resume)."""
    digest = hashlib.sha1(json.dumps(unit, sort_keys=True).encode()).hexdigest()[:16]
    return f"part-{digest}.{fmt}"


def _model_dir(model: str | Path | None, check: bool) -> str:
    """The model dir as an absolute path (what every worker opens); checked here when the driver can see it."""
    from ..model.format import ModelNotFoundError, read_config
    from ..model.paths import default_model_dir

    path = (Path(model).expanduser() if model is not None else default_model_dir()).absolute()
    if check:
        try:
            read_config(path)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{exc}. Build the default model with `make demo` (or `exportstance train`).") from None
    return str(path)


# --- output directory ----------------------------------------------------------------------------

def _clean(out: Path, remove_parts: bool) -> None:
    """Remove our temporary files, and (a fresh run, not a resume) the part files of earlier runs.

    A resume never deletes a complete part, even one the new plan does not name (inputs moved or
    changed): the manifest lists the parts of this run, and ``read_results`` reads only those."""
    for path in out.iterdir():
        if (path.name.startswith(".part-") and path.name.endswith(".tmp")) or (remove_parts and _PART.match(path.name)):
            path.unlink()


def _write_manifest(out: Path, fmt: str, units: list[dict[str, Any]], parts: list[str]) -> None:
    manifest = {"format": fmt, "parts": [{"part": p, "unit": u} for p, u in zip(parts, units)]}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def _count_records(part: Path) -> int:
    if part.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(part).metadata.num_rows
    with part.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


# --- Ray -----------------------------------------------------------------------------------------

def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the ray engine needs Ray Data ({exc}); install the extra: pip install 'exportstance[ray]'"
        ) from None
    return ray


def _init(ray: Any, cluster: str | None, workers: int | None, threads: int, runtime_env: dict[str, Any] | None) -> None:
    """Connect to ``cluster``, or start a quiet local instance sized for ``workers`` x ``threads``."""
    env = dict(runtime_env or {})
    env["env_vars"] = {**WORKER_ENV, **env.get("env_vars", {})}
    common = {"runtime_env": env, "log_to_driver": False, "configure_logging": False}
    if cluster:
        try:
            ray.init(address=cluster, **common)
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError(
                f"cannot join the Ray cluster at {cluster} ({str(exc).splitlines()[-1]}); a cluster started with "
                "token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token here"
            ) from None
    else:
        cpus = max(os.cpu_count() or 1, (workers or 1) * threads)
        # address="local": a new instance even if a `ray start` on this machine left its address behind.
        ray.init(address="local", num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 **common)


def _run(
    ray: Any, todo: list[dict[str, Any]], summary: RunSummary, model_dir: str, out: Path, fmt: str,
    batch_size: int, load_kwargs: dict[str, Any], progress: bool,
) -> None:
    """One Ray Data pass: units -> actor pool (one unit per call) -> per-part counts."""
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    dataset = ray.data.from_items([{"unit": json.dumps(unit)} for unit in todo],
                                  override_num_blocks=min(len(todo), 4096))
    scored = dataset.map_batches(
        _Scorer,
        fn_constructor_kwargs={"model_dir": model_dir, "out": str(out), "fmt": fmt, "batch_size": batch_size,
                               "threads": summary.threads_per_worker, "load_kwargs": load_kwargs},
        compute=ray.data.ActorPoolStrategy(size=summary.workers),
        num_cpus=summary.threads_per_worker,
        batch_size=1,
    )
    for row in scored.iter_rows():
        result = json.loads(row["result"])
        summary.parts += 1
        summary.articles += result["articles"]
        summary.failed += result["failed"]
        summary.labels.update(result["labels"])
        summary.busy_seconds += result["seconds"]


class _Scorer:
    """A Ray Data actor: loads the classifier once, then scores one unit per call into its part file."""

    def __init__(self, model_dir: str, out: str, fmt: str, batch_size: int, threads: int,
                 load_kwargs: dict[str, Any]) -> None:
        from .classifier import StanceClassifier

        self.clf = StanceClassifier.load(model_dir, batch_size=batch_size, threads=threads, **load_kwargs)
        self.out = Path(out)
        self.fmt = fmt

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        return {"result": np.array([json.dumps(self.score_unit(json.loads(unit))) for unit in batch["unit"]])}

    def score_unit(self, unit: dict[str, Any]) -> dict[str, Any]:
        """Write the unit's records to ``part`` (temp name, renamed when complete); return its counts."""
        from .articles import score_articles

        start = time.perf_counter()
        counts: dict[str, Any] = {"articles": 0, "failed": 0, "labels": Counter()}
        records = _counted(score_articles(read_unit(unit), model=self.clf, keep_text=True), counts)
        final = self.out / unit["part"]
        tmp = self.out / f".{unit['part']}.{uuid.uuid4().hex}.tmp"  # unique across nodes sharing the dir
        (_write_parquet if self.fmt == "parquet" else _write_jsonl)(tmp, records)
        os.replace(tmp, final)
        counts["seconds"] = time.perf_counter() - start
        return counts


def _counted(records: Iterable[dict[str, Any]], counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for record in records:
        if "error" in record:
            counts["failed"] += 1
        else:
            counts["articles"] += 1
            counts["labels"].update(s["label"] for s in record["statements"])
        yield record


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """The local engine's JSONL writer, then fsync: the rename must not publish a half-written file."""
    with io.JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
    _fsync(path)


def _write_parquet(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Columns ``id`` (as text, like CSV), ``error``, ``n_statements``, ``dominant`` and ``record`` (the JSON record)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": io.record_key(r.get("id")), "error": r.get("error"),
         "n_statements": r["summary"]["n_statements"] if "summary" in r else None,
         "dominant": r["summary"]["dominant"] if "summary" in r else None,
         "record": json.dumps(r, ensure_ascii=False)}
        for r in records
    ]
    schema = pa.schema([("id", pa.string()), ("error", pa.string()), ("n_statements", pa.int64()),
                        ("dominant", pa.string()), ("record", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    _fsync(path)


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


__all__ = ["FORMATS", "RunSummary", "plan", "read_results", "read_unit", "score_dataset"]
