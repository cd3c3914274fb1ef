"""`exportstance score` and `exportstance demo`: inputs, error records, exit status, --resume, CSV."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from exportstance.cli import main

ARTICLE = "Washington lockert Chip-Exporte\nDie US-Regierung erlaubt den Verkauf. Peking schweigt."


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A directory with every input kind: .txt (nested), .jsonl, .csv."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(ARTICLE, encoding="utf-8")
    (root / "sub" / "b.txt").write_text("Die Sperren wirken. Gut so.", encoding="utf-8")
    (root / "c.jsonl").write_text(
        "".join(json.dumps({"id": f"j{i}", "text": f"Satz {i}. Noch einer.", "src": "x"}) + "\n" for i in range(5)),
        encoding="utf-8",
    )
    with (root / "d.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "source"])
        writer.writerows([["c1", "Erster Satz.\nZweite Zeile.", "dpa"], ["c2", "", "afp"], ["c3", "Dritter.", "ap"]])
    (root / "ignored.md").write_text("not an input", encoding="utf-8")
    return root


def score(*args: object) -> int:
    return main(["score", "--threads", "1", *map(str, args)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_directory_of_all_input_kinds(corpus, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out.jsonl"
    assert score(corpus, "-o", out, "--model", tiny_model_dir) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["a.txt", *(f"j{i}" for i in range(5)), "c1", "c2", "c3", "sub/b.txt"]
    by_id = {r["id"]: r for r in records}
    assert by_id["j0"]["src"] == "x" and by_id["c1"]["source"] == "dpa"
    assert [s["text"] for s in by_id["a.txt"]["statements"]][0] == "Washington lockert Chip-Exporte"
    assert by_id["c2"]["statements"] == []
    table = capsys.readouterr().out
    assert "articles" in table and "10" in table and "statements" in table


def test_file_arguments_keep_their_path_as_id(corpus, tmp_path, tiny_model_dir):
    out = tmp_path / "out.jsonl"
    assert score(corpus / "a.txt", corpus / "sub" / "b.txt", "-o", out, "--model", tiny_model_dir) == 0
    assert [r["id"] for r in read_jsonl(out)] == [str(corpus / "a.txt"), str(corpus / "sub" / "b.txt")]


def test_bad_items_become_error_records_and_exit_1(tmp_path, tiny_model_dir, capsys):
    good = json.dumps({"id": "ok1", "text": "Gut."})
    broken = f'{good}\n{{"id": "x", "text": \n[1, 2]\n{{"id": "n", "text": null}}\n'
    (tmp_path / "broken.jsonl").write_text(broken, encoding="utf-8")
    latin1 = "Zeile eins\nDie Sperren schaden der Industrie südlich von Peking.".encode("latin-1")
    (tmp_path / "latin1.txt").write_bytes(latin1)
    (tmp_path / "rows.csv").write_text('id,text\nr1,"Gut."\nr2,"Zu",viele\nr3,"Auch gut."\n', encoding="utf-8")
    out = tmp_path / "out" / "result.jsonl"
    assert score(tmp_path, "-o", out, "--model", tiny_model_dir) == 1
    records = {r["id"]: r for r in read_jsonl(out)}
    assert "error" not in records["ok1"] and "error" not in records["r1"] and "error" not in records["r3"]
    assert records["broken.jsonl:2"]["error"].startswith("JSONDecodeError: broken.jsonl line 2")
    assert records["broken.jsonl:3"]["error"].startswith("TypeError: broken.jsonl line 3")
    assert records["n"]["error"] == "TypeError: broken.jsonl line 4: 'text' is NoneType, expected str"
    assert records["latin1.txt"]["error"].startswith("UnicodeDecodeError: latin1.txt line 2")
    assert (records["latin1.txt"]["file"], records["latin1.txt"]["line"]) == ("latin1.txt", 2)
    assert records["rows.csv:3"]["error"].startswith("ValueError: rows.csv line 3")
    assert "failed" in capsys.readouterr().out


def test_undecodable_csv_line_is_an_error_record(tmp_path, tiny_model_dir):
    (tmp_path / "t.csv").write_bytes(b"id,text\na,Gut.\nb,Schlecht \xff.\nc,Neutral.\n")
    out = tmp_path / "o.jsonl"
    assert score(tmp_path / "t.csv", "-o", out, "--model", tiny_model_dir) == 1
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["a", f"{tmp_path / 't.csv'}:3", "c"]
    assert records[1]["error"].startswith(f"UnicodeDecodeError: {tmp_path / 't.csv'} line 3")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_after_a_killed_run_gives_each_id_once(corpus, tmp_path, tiny_model_dir, fmt):
    out = tmp_path / f"out.{fmt}"
    assert score(corpus, "-o", out, "--model", tiny_model_dir) == 0
    full = out.read_text(encoding="utf-8")
    lines = full.splitlines(keepends=True)
    for k in (0, 2, 5, len(lines) - 1):
        # a killed run: the first k lines, then half of the next one
        out.write_text("".join(lines[:k]) + lines[k][: len(lines[k]) // 2], encoding="utf-8")
        assert score(corpus, "-o", out, "--model", tiny_model_dir, "--resume") == 0
        # same rows, each once (scores may differ in the last digits: batches are composed differently)
        assert sorted(_without_scores(out.read_text(encoding="utf-8"), fmt)) == sorted(_without_scores(full, fmt))


def _without_scores(output: str, fmt: str) -> list[str]:
    if fmt == "csv":
        return [",".join(row[:5] + row[8:]) for row in csv.reader(output.splitlines())]
    return [json.dumps([r["id"], [(s["start"], s["end"], s["label"]) for s in r["statements"]]])
            for r in map(json.loads, output.splitlines())]


def test_resume_skips_everything_already_done(corpus, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out.jsonl"
    score(corpus, "-o", out, "--model", tiny_model_dir)
    before = out.read_text(encoding="utf-8")
    assert score(corpus, "-o", out, "--model", tiny_model_dir, "--resume") == 0
    assert out.read_text(encoding="utf-8") == before
    assert "skipped" in capsys.readouterr().out


def test_csv_output_has_one_row_per_statement(corpus, tmp_path, tiny_model_dir):
    out = tmp_path / "out.csv"
    assert score(corpus, "-o", out, "--model", tiny_model_dir) == 0
    with out.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["article_id", "statement", "start", "end", "label", "p_pro", "p_anti", "p_neutral",
                             "text", "error"]
    per_article = Counter(r["article_id"] for r in rows)
    assert per_article["a.txt"] == 3 and per_article["c2"] == 1  # an empty article still has its row
    first = rows[0]
    assert ARTICLE[int(first["start"]) : int(first["end"])] == first["text"]
    assert abs(sum(float(first[f"p_{label}"]) for label in ("pro", "anti", "neutral")) - 1) < 1e-5
    c1 = [r for r in rows if r["article_id"] == "c1"]
    assert [r["text"] for r in c1] == ["Erster Satz.", "Zweite Zeile."]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_unicode_line_breaks_keep_one_line_per_record(tmp_path, tiny_model_dir, fmt):
    (tmp_path / "u.txt").write_text("Erster Satz\u2028geht weiter.\x85Zweiter\u2029Satz.\r\nDritter.", encoding="utf-8")
    out = tmp_path / f"o.{fmt}"
    assert score(tmp_path / "u.txt", "-o", out, "--format", fmt, "--model", tiny_model_dir) == 0
    lines = out.read_bytes().split(b"\n")[:-1]
    assert len(lines) == (1 if fmt == "jsonl" else 1 + 4)
    if fmt == "jsonl":
        (record,) = map(json.loads, lines)
        text = (tmp_path / "u.txt").read_bytes().decode("utf-8")  # offsets index the file as is, CRLF kept
        assert all(text[s["start"] : s["end"]] == s["text"] for s in record["statements"])


def test_the_output_file_is_never_read_as_input(corpus, tiny_model_dir):
    out = corpus / "result.jsonl"
    assert score(corpus, "-o", out, "--model", tiny_model_dir) == 0
    assert score(corpus, "-o", out, "--model", tiny_model_dir, "--resume") == 0
    assert all(not str(r["id"]).startswith("result.jsonl") for r in read_jsonl(out))


def test_missing_inputs_and_model_are_clear_errors(tmp_path, capsys):
    assert score(tmp_path / "nope.txt", "-o", tmp_path / "o.jsonl") == 2
    (tmp_path / "a.txt").write_text("Gut.", encoding="utf-8")
    assert score(tmp_path / "a.txt", "-o", tmp_path / "o.jsonl", "--model", tmp_path / "no-model") == 1
    assert "make demo" in capsys.readouterr().err


def test_demo_scores_examples_and_seeds(tmp_path, tiny_model_dir, capsys):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "s1.txt").write_text(ARTICLE, encoding="utf-8")
    out = tmp_path / "out"
    args = ["demo", "--out", out, "--seeds", seeds, "--model", tiny_model_dir, "--threads", 1]
    assert main(list(map(str, args))) == 0
    examples = read_jsonl(out / "demo_examples.jsonl")
    assert len(examples) == len(list((Path(__file__).parents[1] / "examples").glob("*.txt"))) > 0
    assert [r["id"] for r in read_jsonl(out / "demo_seeds.jsonl")] == ["s1.txt"]
    printed = capsys.readouterr().out
    assert "s1.txt: 3 statements" in printed and "dominant" in printed
    report = out / "report.html"
    assert f"-> {report}" in printed
    html = report.read_text(encoding="utf-8")
    assert html.count('data-article-id="s1.txt"') == 1 and html.count("data-article-id=") == len(examples) + 1


def test_serve_never_imports_training():
    code = (
        "import sys, exportstance.serve.cli, exportstance.serve.articles, exportstance.serve.io; "
        "bad = [m for m in sys.modules if m.startswith('exportstance.training')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
