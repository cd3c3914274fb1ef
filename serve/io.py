"""Files in and out for ``exportstance score``: article readers and crash-safe, resumable writers.

Inputs: ``.txt`` (one article per file; UTF-8 decoded as is, without newline translation, so
offsets index the file's text), ``.jsonl`` (one article object per line) and ``.csv`` (header with
``id`` and ``text``), given as files or found recursively in directories. A file or line that
cannot be used becomes an error record naming file and line; reading goes on.

Outputs are appended one article at a time and flushed, so a killed run loses at most the
article being written, and ``resume`` drops such a partial tail before carrying on: every id ends
up in the output exactly once.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..model.labels import LABELS

INPUT_SUFFIXES = (".txt", ".jsonl", ".csv")
CSV_COLUMNS = (
    "article_id", "statement", "start", "end", "label", *(f"p_{label}" for label in LABELS), "text", "error"
)
_LINE_BREAKS = {ord(c): " " for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
# Valid unescaped in JSON, but line breaks to str.splitlines() and JavaScript: escape them.
_JSON_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}
# csv's default field limit (128 KiB) is smaller than a long article.
csv.field_size_limit(2**31 - 1)


def iter_articles(paths: Sequence[Path], exclude: Path | None = None) -> Iterator[dict[str, Any]]:
    """Article mappings (``id``, ``text``, passthrough keys) or error records, file by file, lazily.

    Ids: for a directory argument, each file's path relative to it (``a/b.txt``); for a file
    argument, the path as given; JSONL/CSV rows use their ``id`` or else ``FILE:LINE``.
    ``exclude`` (the output file) is never read.
    """
    skip = exclude.resolve() if exclude is not None else None
    for path in paths:
        for file, file_id in _files(path):
            if skip is None or file.resolve() != skip:
                yield from _read(file, file_id)


def error_record(
    item_id: str, file_id: str, line: int | None, exc: BaseException | str, kind: str = ""
) -> dict[str, Any]:
    """``{"id", "error", "file", "line"}``; the message names the file (and line) too."""
    where = file_id if line is None else f"{file_id} line {line}"
    return {"id": item_id, "error": f"{kind or type(exc).__name__}: {where}: {exc}", "file": file_id, "line": line}


def _files(path: Path, suffixes: tuple[str, ...] = INPUT_SUFFIXES) -> Iterator[tuple[Path, str]]:
    """(file, id) pairs; directories are walked in sorted order without listing the whole tree first."""
    if not path.is_dir():
        yield path, str(path)
        return
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(suffixes):
                file = Path(root) / name
                yield file, file.relative_to(path).as_posix()


def _read(file: Path, file_id: str, **jsonl_chunk: int) -> Iterator[dict[str, Any]]:
    """One file's articles or error records; ``jsonl_chunk``: see ``_read_jsonl``."""
    suffix = file.suffix.lower()
    try:
        if suffix == ".jsonl":
            yield from _read_jsonl(file, file_id, **jsonl_chunk)
        elif suffix == ".csv":
            yield from _read_csv(file, file_id)
        else:
            yield _read_txt(file, file_id)
    except OSError as exc:
        yield error_record(file_id, file_id, None, exc.strerror or exc, type(exc).__name__)


def _read_txt(file: Path, file_id: str) -> dict[str, Any]:
    data = file.read_bytes()
    try:
        return {"id": file_id, "text": data.decode("utf-8-sig")}
    except UnicodeDecodeError as exc:
        return error_record(file_id, file_id, data.count(b"\n", 0, exc.start) + 1, exc)


def _read_jsonl(
    file: Path, file_id: str, start: int = 0, stop: int | None = None, first_line: int = 1
) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; ``start``/``stop`` (byte offsets at line starts) and ``first_line`` read one
    chunk of it with the whole file's line numbers (the Ray engine scores large files in chunks)."""
    for lineno, obj, ok in json_lines(file, file_id, start, stop, first_line):
        yield _article(obj, f"{file_id}:{lineno}", file_id, lineno) if ok else obj


def json_lines(
    file: Path, file_id: str, start: int = 0, stop: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """(line number, object, True) per non-blank line of a JSONL file, or (line number, error record,
    False) for a line that is not a JSON object (bad UTF-8 or JSON, another JSON type); see ``_read_jsonl``."""
    with file.open("rb") as fh:
        fh.seek(start)
        lines = fh if stop is None else _lines_before(fh, stop - start)
        for lineno, raw in enumerate(lines, first_line):
            if not raw.strip():
                continue
            fallback_id = f"{file_id}:{lineno}"
            try:
                obj = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield lineno, error_record(fallback_id, file_id, lineno, exc), False
                continue
            if not isinstance(obj, dict):
                found = f"expected a JSON object, got {type(obj).__name__}"
                yield lineno, error_record(fallback_id, file_id, lineno, found, "TypeError"), False
                continue
            yield lineno, obj, True


def _lines_before(fh: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Lines of ``fh`` until ``size`` bytes have been read."""
    for raw in fh:
        if size <= 0:
            return
        size -= len(raw)
        yield raw


def _read_csv(file: Path, file_id: str) -> Iterator[dict[str, Any]]:
    bad_lines: dict[int, UnicodeDecodeError] = {}
    with file.open("rb") as fh:
        reader = csv.reader(_decoded_lines(fh, bad_lines))
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield error_record(file_id, file_id, 1, exc)
            return
        if "text" not in header:
            yield error_record(file_id, file_id, 1, "CSV header has no 'text' column", "ValueError")
            return
        first = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield error_record(f"{file_id}:{first}", file_id, first, exc)
                first = reader.line_num + 1
                continue
            lineno, first = first, reader.line_num + 1
            fallback_id = f"{file_id}:{lineno}"
            undecodable = [line for line in bad_lines if lineno <= line < first]
            if undecodable:
                yield error_record(fallback_id, file_id, undecodable[0], bad_lines[undecodable[0]])
            elif not any(field.strip() for field in row):
                continue
            elif len(row) != len(header):
                message = f"row has {len(row)} fields, the header {len(header)}"
                yield error_record(fallback_id, file_id, lineno, message, "ValueError")
            else:
                yield _article(dict(zip(header, row)), fallback_id, file_id, lineno)


def _decoded_lines(fh: Iterable[bytes], bad: dict[int, UnicodeDecodeError]) -> Iterator[str]:
    """UTF-8 lines for csv; an undecodable line is noted in ``bad`` (by line number) and replaced."""
    for lineno, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            bad[lineno] = exc
            yield raw.decode("utf-8", errors="replace")


def _article(obj: dict[str, Any], fallback_id: str, file_id: str, lineno: int) -> dict[str, Any]:
    """A JSONL/CSV row as an article, or an error record if its text is missing or not a string."""
    item_id = fallback_id if obj.get("id") in (None, "") else obj["id"]
    text = obj.get("text")
    if not isinstance(text, str):
        found = "no 'text'" if "text" not in obj else f"'text' is {type(text).__name__}, expected str"
        return error_record(item_id, file_id, lineno, found, "TypeError")
    return {**obj, "id": item_id}


def record_key(item_id: Any) -> str:
    """How ids are compared when resuming (CSV stores every id as text, one line each)."""
    return _one_line(str(item_id))


def _one_line(value: str) -> str:
    """Line breaks as spaces (same length, so start/end still index the original text)."""
    return value.translate(_LINE_BREAKS)


class _Writer:
    """Appends records to a file, flushing after each article; ``done`` holds ids found when resuming."""

    done: set[str]
    _fh: TextIO

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlWriter(_Writer):
    """One article record per line."""

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.done = _recover_jsonl(path) if resume else set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a" if resume else "w", encoding="utf-8", newline="\n")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False).translate(_JSON_ESCAPES) + "\n")
        self._fh.flush()


class CsvWriter(_Writer):
    """One row per statement, at least one row per article (so every id is on record).

    Line breaks inside fields are written as spaces so that every row is exactly one line.
    Passthrough keys are not written (JSONL keeps them).
    """

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.done = _recover_csv(path) if resume else set()
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not resume or not path.exists() or path.stat().st_size == 0
        self._fh = path.open("a" if resume else "w", encoding="utf-8", newline="")
        if fresh:
            self._write_rows([list(CSV_COLUMNS)])

    def write(self, record: dict[str, Any]) -> None:
        article_id = record_key(record.get("id"))
        blank = [""] * (len(CSV_COLUMNS) - 2)
        if "error" in record:
            rows = [[article_id, *blank, _one_line(str(record["error"]))]]
        else:
            rows = [
                [article_id, i, s["start"], s["end"], s["label"],
                 *(f"{s['scores'][label]:.6f}" for label in LABELS), _one_line(s["text"]), ""]
                for i, s in enumerate(record["statements"])
            ] or [[article_id, *blank, ""]]
        self._write_rows(rows)

    def _write_rows(self, rows: list[list[Any]]) -> None:
        """All rows of an article in one write, then flush."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self._fh.write(buffer.getvalue())
        self._fh.flush()


def open_writer(path: Path, fmt: str, resume: bool = False) -> _Writer:
    """A JSONL or CSV writer; with ``resume`` its ``done`` holds the ids (``record_key``) already in ``path``."""
    return (CsvWriter if fmt == "csv" else JsonlWriter)(path, resume)


def _complete_lines(path: Path) -> bytes:
    """The file up to its last line break; a half-written last line (killed run) is cut off the file."""
    if not path.exists():
        return b""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as fh:
            fh.truncate(keep)
    return data[:keep]


def _recover_jsonl(path: Path) -> set[str]:
    done = set()
    for line in _complete_lines(path).split(b"\n"):
        if not line.strip():
            continue
        try:
            done.add(record_key(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def _recover_csv(path: Path) -> set[str]:
    """Ids in a CSV output; the last article's rows are dropped too, since a kill may have cut them short."""
    data = _complete_lines(path)
    rows: list[tuple[int, str]] = []
    offset = 0
    for line in data.split(b"\n")[:-1]:
        line += b"\n"
        fields = next(csv.reader([line.decode("utf-8", errors="replace")]), [])
        if offset and fields:
            rows.append((offset, fields[0]))
        offset += len(line)
    if not rows:
        return set()
    last = rows[-1][1]
    cut = len(rows)
    while cut and rows[cut - 1][1] == last:
        cut -= 1
    with path.open("r+b") as fh:
        fh.truncate(rows[cut][0])
    return {article_id for _, article_id in rows[:cut]}
