"""The Ray engine (serve/distributed.py) against the local path: same records, resume, Parquet, CLI.

One local Ray (2 CPUs) for the module; every run uses 2 workers on the tiny model.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the extra: pip install -e '.[dev,ray]' (make install does)")

from exportstance.cli import main  # noqa: E402
from exportstance.serve import distributed  # noqa: E402
from exportstance.serve.articles import score_articles  # noqa: E402
from exportstance.serve.classifier import StanceClassifier  # noqa: E402
from exportstance.serve.io import iter_articles  # noqa: E402

SENTENCES = [
    "Die US-Regierung verschärft die Exportkontrollen für KI-Chips nach China.",
    "Kritiker sagen, die Sperren schaden amerikanischen Firmen und helfen Huawei.",
    "Der Senator fordert, Schmuggel über Singapur und Malaysia härter zu verfolgen.",
    "Peking wirft Washington vor, den Handel zu politisieren.",
    "Das Verbot gilt seit dem 17. Oktober, teilte das Handelsministerium mit.",
    "Z. B. meldete Dr. Müller am 28. November höhere Umsätze in Europa und Asien.",
]
# Longer than the tiny model's 32-token window: scored in several windows.
LONG = " ".join(["Nvidia darf den H20 wieder verkaufen, muss aber 15 Prozent der Umsätze abgeben"] * 6) + "."
TOL = 1e-5


def article(i: int) -> str:
    picked = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(1 + i % 4)]
    return ("Schlagzeile %d\n" % i) + " ".join(picked) + (" " + LONG if i % 7 == 0 else "")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=distributed.OBJECT_STORE_BYTES,
             log_to_driver=False, configure_logging=False, runtime_env={"env_vars": distributed.WORKER_ENV})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """201 items: 60 .txt (2 not UTF-8) and a dangling link, a 100-line JSONL (6 broken lines), a 40-row CSV (1 broken row)."""
    root = tmp_path_factory.mktemp("archive")
    (root / "txt" / "sub").mkdir(parents=True)
    for i in range(60):
        folder = root / "txt" / ("sub" if i % 3 == 0 else "")
        data = article(i).encode() if i not in (11, 42) else b"Ung\xfcltig: kein UTF-8 \xff\n"
        (folder / f"{i:03d}.txt").write_bytes(data)
    (root / "txt" / "gone.txt").symlink_to(root / "nowhere.txt")  # unreadable: an OSError record
    lines = []
    for i in range(100):
        row = {"id": f"j{i}", "text": article(100 + i), "outlet": ["dpa", "afp"][i % 2]}
        if i % 5 == 0:
            del row["id"]  # id becomes FILE:LINE
        lines.append(json.dumps(row, ensure_ascii=False))
    lines[7] = '{"id": "broken", "text": "kein Ende'  # not JSON
    lines[30] = json.dumps({"id": "no-text", "outlet": "x"})
    lines[31] = json.dumps({"id": "bad-text", "text": 5})
    lines[55] = "[1, 2]"
    lines[70] = json.dumps({"id": "null-text", "text": None})
    lines[99] = '{"id": 3'
    (root / "feed.jsonl").write_text("\n".join(lines[:50]) + "\n\n" + "\n".join(lines[50:]) + "\n", encoding="utf-8")
    with (root / "table.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "source"])
        for i in range(40):
            writer.writerow([f"c{i}", article(300 + i), "ap"] if i != 17 else ["c17", "zu", "viele", "Felder"])
    return root


@pytest.fixture(scope="module")
def local_records(archive, tiny_model_dir) -> list[dict]:
    clf = StanceClassifier.load(tiny_model_dir, threads=1)
    return list(score_articles(iter_articles([archive]), model=clf, keep_text=True))


@pytest.fixture(scope="module")
def ray_run(ray_session, archive, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-out")
    summary = distributed.score_dataset([archive], out, tiny_model_dir, workers=2, lines_per_part=25,
                                        files_per_part=16)
    return out, summary


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Equal records; probabilities (scores, confidence, strongest_*.score) within TOL."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert _close(a, b), (a["id"], a, b)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_close, a, b))
    return type(a) is type(b) and a == b


def test_same_records_as_local_path(ray_run, local_records):
    out, summary = ray_run
    assert len(local_records) == 61 + 100 + 40  # count in: every item (the blank line is none)
    got = list(distributed.read_results(out))
    assert_same_records(got, local_records)  # ids, statements, offsets, labels, scores, summary, errors, order
    failed = [r for r in local_records if "error" in r]
    assert {r["id"] for r in failed} == {
        "txt/011.txt", "txt/sub/042.txt", "txt/gone.txt", "feed.jsonl:8", "no-text", "bad-text", "feed.jsonl:57", "null-text",
        "feed.jsonl:101", "table.csv:36",  # CSV rows span 2 lines (quoted line break)
    }
    assert (summary.articles, summary.failed, summary.workers) == (len(local_records) - 10, 10, 2)
    assert summary.parts == len(json.loads((out / distributed.MANIFEST).read_text())["parts"]) > 2


def test_part_files_hold_every_record_once_and_order_is_recoverable_by_id(ray_run, local_records):
    out, _ = ray_run
    raw = [json.loads(line) for part in sorted(out.glob("part-*.jsonl")) for line in part.read_text().splitlines()]
    assert not list(out.glob(".part-*"))  # no temporary files left
    ids = [r["id"] for r in raw]
    assert len(ids) == len(set(ids)) == len(local_records)  # count in == count out, ids unique
    position = {r["id"]: i for i, r in enumerate(local_records)}
    assert_same_records(sorted(raw, key=lambda r: position[r["id"]]), local_records)


def test_resume_skips_complete_parts_only(ray_run, archive, tiny_model_dir, tmp_path, local_records, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(ray_run[0], out)
    first = ray_run[1]
    parts = sorted(out.glob("part-*.jsonl"))
    kept = {p.name: p.stat().st_mtime_ns for p in parts[1:]}
    lost = parts[0].read_text().count("\n")
    parts[0].unlink()  # as if a worker died before renaming its part
    (out / f".{parts[0].name}.999.tmp").write_text('{"id": "half', encoding="utf-8")
    again = distributed.score_dataset([archive], out, tiny_model_dir, workers=2, lines_per_part=25,
                                      files_per_part=16, resume=True)
    assert (again.parts, again.skipped_parts) == (1, first.parts - 1)
    assert again.skipped_articles + again.articles + again.failed == len(local_records)
    assert again.articles + again.failed == lost
    assert {p.name: p.stat().st_mtime_ns for p in parts[1:]} == kept
    assert not list(out.glob(".part-*"))
    assert_same_records(list(distributed.read_results(out)), local_records)
    def no_ray(*args, **kwargs):
        raise AssertionError("a finished resume started Ray or an actor pool")

    monkeypatch.setattr(distributed, "_init", no_ray)
    monkeypatch.setattr(distributed, "_run", no_ray)
    done = distributed.score_dataset([archive], out, tiny_model_dir, lines_per_part=25, files_per_part=16, resume=True)
    assert (done.parts, done.skipped_parts, done.skipped_articles) == (0, first.parts, len(local_records))
    monkeypatch.undo()
    # A resume over other inputs (a moved archive, say) scores them but deletes no complete part.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.txt").write_text("Die Sperren wirken.", encoding="utf-8")
    before = {p.name for p in out.glob("part-*")}
    other = distributed.score_dataset([elsewhere], out, tiny_model_dir, workers=1, resume=True)
    assert other.parts == 1 and before < {p.name for p in out.glob("part-*")}
    assert [r["id"] for r in distributed.read_results(out)] == ["x.txt"]


def test_no_inputs_outside_the_output_dir_is_an_error(ray_session, tiny_model_dir, tmp_path):
    (tmp_path / "a.txt").write_text("Die Sperren wirken.", encoding="utf-8")
    with pytest.raises(ValueError, match="no input files"):
        distributed.score_dataset([tmp_path], tmp_path, tiny_model_dir)


def test_parquet_in_and_out(ray_session, tiny_model_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"id": f"p{i}", "text": article(i), "outlet": "dpa"} for i in range(30)]
    rows[12]["text"] = None
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), src / "rows.parquet", row_group_size=10)
    (src / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    summary = distributed.score_dataset([src / "rows.parquet"], out, tiny_model_dir, workers=2, fmt="parquet")
    assert (summary.parts, summary.articles, summary.failed) == (3, 29, 1)  # one part per row group
    got = list(distributed.read_results(out))
    want = list(score_articles(iter_articles([src / "rows.jsonl"]), model=StanceClassifier.load(tiny_model_dir, threads=1), keep_text=True))
    assert [r["id"] for r in got] == [r["id"] for r in want]
    ok = [i for i, r in enumerate(want) if "error" not in r]
    assert_same_records([got[i] for i in ok], [want[i] for i in ok])
    assert got[12]["line"] == 13 and got[12]["error"].startswith(f"TypeError: {src / 'rows.parquet'} line 13:")
    table = pq.read_table(out / json.loads((out / distributed.MANIFEST).read_text())["parts"][1]["part"])
    assert table.column_names == ["id", "error", "n_statements", "dominant", "record"]


def test_cli_engine_ray(ray_session, archive, tiny_model_dir, tmp_path, capsys, local_records):
    out = tmp_path / "scored"
    code = main(["score", str(archive), "-o", str(out), "--engine", "ray", "--workers", "2",
                 "--model", str(tiny_model_dir)])
    assert code == 1  # some items failed; their error records are in the output
    table = capsys.readouterr().out
    assert f"{'failed':<12}{10:>8}" in table and "worker(s)" in table
    assert [r["id"] for r in distributed.read_results(out)] == [r["id"] for r in local_records]
    assert main(["score", str(archive), "-o", str(out), "--engine", "ray", "--format", "csv",
                 "--model", str(tiny_model_dir)]) == 2
    assert main(["score", str(archive), "-o", str(tmp_path / "x.parquet"), "--format", "parquet",
                 "--model", str(tiny_model_dir)]) == 2  # parquet output is the ray engine's
    file = tmp_path / "a-file"
    file.write_text("", encoding="utf-8")
    assert main(["score", str(archive), "-o", str(file), "--engine", "ray", "--model", str(tiny_model_dir)]) == 2


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'exportstance\[ray\]'"):
        distributed.score_dataset([tmp_path], tmp_path / "out")


def test_core_cli_never_imports_ray():
    code = "import sys, exportstance.cli as c; c.build_parser(); import exportstance.serve.cli; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
