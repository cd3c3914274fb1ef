"""Engines: every backend/precision gives torch's labels, the exported graph is cached by weights hash,
the default engine is chosen by CPU flags, and a graph engine loads without torch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from exportstance.model import export
from exportstance.serve import engines
from exportstance.serve.classifier import StanceClassifier

TEXTS = [
    "Die US-Regierung verschärft die Exportkontrollen für KI-Chips nach China.",
    "Kritiker sagen, die Sperren schaden amerikanischen Firmen und helfen Huawei.",
    "Der Senator fordert, Schmuggel über Singapur härter zu verfolgen.",
    "Peking wirft Washington vor, den Handel zu politisieren.",
    "Das Verbot gilt seit dem 17. Oktober.",
    "Gut.",
    "Nvidia darf den H20 wieder verkaufen, muss aber 15 Prozent der Umsätze abgeben. " * 6,  # windowed
]
GRAPH_ENGINES = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]


@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fitted for a few steps to give these texts all three labels with clear margins
    (its random weights give every text nearly the same output), saved as a model dir."""
    import torch

    from exportstance.model.format import load_classifier, read_meta, save_classifier

    model, tokenizer, _ = load_classifier(tiny_model_dir)
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    labels = torch.arange(len(TEXTS)) % 3
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        optimiser.zero_grad()
        model(**enc, labels=labels).loss.backward()
        optimiser.step()
    model.eval()
    out = tmp_path_factory.mktemp("fitted")
    return save_classifier(model, tokenizer, out, read_meta(model.config))


@pytest.fixture(scope="module")
def reference(fitted_dir):
    return StanceClassifier.load(fitted_dir, backend="torch", threads=1).predict_proba(TEXTS)


@pytest.mark.parametrize(("backend", "precision"), GRAPH_ENGINES)
def test_every_engine_gives_torchs_labels(fitted_dir, reference, backend, precision):
    clf = StanceClassifier.load(fitted_dir, backend=backend, precision=precision, threads=1)
    assert (clf.backend, clf.precision) == (backend, precision)
    probs = clf.predict_proba(TEXTS)
    assert (probs.argmax(axis=1) == reference.argmax(axis=1)).all()
    # fp32 graphs compute torch's function (the head magnifies rounding ~1000x: atol 1e-4 is 1e-7
    # before it); int8/bf16 round more, but stay close on this model
    np.testing.assert_allclose(probs, reference, atol=1e-4 if precision == "fp32" else 0.05)
    assert len(set(reference.argmax(axis=1))) > 1  # the texts do get different labels


@pytest.mark.parametrize(("margin", "everything"), [(0.0, False), (1.01, True)])
def test_int8_rechecks_unsure_rows_in_fp32(fitted_dir, margin, everything):
    """Margin 0 is plain int8 (nothing rechecked); above 1 every row is rechecked and so gets the
    fp32 graph's output exactly; the default margin lies between (bench/recheck_margin.py)."""
    fp32 = StanceClassifier.load(fitted_dir, backend="onnx", precision="fp32", threads=1)
    clf = StanceClassifier.load(fitted_dir, backend="onnx", precision="int8", threads=1)
    assert 0 < clf.engine.recheck_margin == engines.OnnxRuntimeEngine.RECHECK_MARGIN < 1
    clf.engine = engines.OnnxRuntimeEngine(fitted_dir, "int8", 1, recheck_margin=margin)
    predictions = clf.predict(TEXTS)
    probs = np.array([list(p.scores.values()) for p in predictions])
    assert clf.engine.rechecked == (sum(p.n_windows for p in predictions) if everything else 0)
    exact = fp32.predict_proba(TEXTS)
    if everything:
        np.testing.assert_allclose(probs, exact, atol=1e-6)
    else:
        assert np.abs(probs - exact).max() > 1e-6  # int8 really ran


def test_top_two_margin():
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    np.testing.assert_allclose(engines.top_two_margin(logits), [0.2, 0.7])


def test_predictions_carry_windows_on_graph_engines(fitted_dir):
    predictions = StanceClassifier.load(fitted_dir, backend="openvino", precision="fp32", threads=1).predict(TEXTS)
    assert predictions[-1].n_windows > 1 and predictions[5].n_windows == 1


def test_export_is_cached_and_rebuilt_when_the_weights_change(fitted_dir, tmp_path):
    model_dir = shutil.copytree(fitted_dir, tmp_path / "m")
    graph = export.ensure_exported(model_dir) / export.GRAPH_FP32
    built = graph.stat().st_mtime_ns
    export.ensure_exported(model_dir)
    assert graph.stat().st_mtime_ns == built  # cached
    # A copy with new mtimes but the same bytes keeps its graph (the hash decides).
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert export.is_current(copy)
    # Changed weights: stale, and the next load re-exports from the new weights.
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # the last float of the last tensor becomes 1.0
    weights.write_bytes(bytes(data))
    assert not export.is_current(model_dir)
    export.ensure_exported(model_dir)
    assert export.is_current(model_dir) and graph.stat().st_mtime_ns != built


def _read_only(*args, **kwargs):
    """Stands in for ``export._locked`` on a dir that cannot be written."""
    raise PermissionError(13, "Read-only file system")


def test_onnxruntime_saves_its_optimised_graph_once_with_the_same_logits(fitted_dir, tmp_path, monkeypatch):
    model_dir = shutil.copytree(fitted_dir, tmp_path / "m")
    cache = model_dir / export.EXPORT_DIR / export.ONNXRUNTIME_CACHE
    first = StanceClassifier.load(model_dir, backend="onnx", precision="int8", threads=1)
    saved = sorted(cache.rglob("*.onnx"))
    assert sorted(p.name for p in saved) == sorted([export.GRAPH_FP32, export.GRAPH_INT8])  # int8 + its recheck
    assert Path(first.engine._session._model_path) in saved
    stamps = [p.stat().st_mtime_ns for p in saved]
    StanceClassifier.load(model_dir, backend="onnx", precision="int8", threads=1)
    assert [p.stat().st_mtime_ns for p in saved] == stamps  # reused, not rebuilt

    shutil.rmtree(cache)
    monkeypatch.setattr(export, "_locked", _read_only)
    unwritable = StanceClassifier.load(model_dir, backend="onnx", precision="int8", threads=1)
    assert not cache.exists() and Path(unwritable.engine._session._model_path).parent == model_dir / export.EXPORT_DIR
    np.testing.assert_allclose(first.predict_proba(TEXTS), unwritable.predict_proba(TEXTS), atol=1e-6)


def test_a_changed_config_or_export_version_is_stale(fitted_dir, tmp_path, monkeypatch):
    model_dir = shutil.copytree(fitted_dir, tmp_path / "m")
    export.ensure_exported(model_dir)
    monkeypatch.setattr(export, "EXPORT_VERSION", export.EXPORT_VERSION + 1)
    assert not export.is_current(model_dir)
    monkeypatch.undo()
    assert export.is_current(model_dir)
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace('"gelu"', '"gelu" '))
    assert not export.is_current(model_dir)


def test_processes_loading_one_fresh_dir_at_once_share_one_export(fitted_dir, tmp_path, reference):
    """Ray workers load the same dir together: the lock makes one export it, the others reuse it."""
    model_dir = shutil.copytree(fitted_dir, tmp_path / "m", ignore=shutil.ignore_patterns(export.EXPORT_DIR))
    code = (
        "import sys, numpy as np; from exportstance.serve.classifier import StanceClassifier; "
        f"p = StanceClassifier.load({str(model_dir)!r}, backend='onnx', threads=1).predict_proba({TEXTS!r}); "
        "np.save(sys.argv[1], p)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{i}.npy")], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    for i in range(3):
        np.testing.assert_allclose(np.load(tmp_path / f"{i}.npy"), reference, atol=1e-4)
    assert export.is_current(model_dir)
    assert not [p for p in (model_dir / export.EXPORT_DIR).iterdir() if p.suffix == ".tmp"]


def test_an_unwritable_dir_is_served_by_torch(fitted_dir, tmp_path, monkeypatch):
    model_dir = shutil.copytree(fitted_dir, tmp_path / "m", ignore=shutil.ignore_patterns(export.EXPORT_DIR))
    monkeypatch.setattr(export, "_locked", _read_only)
    assert StanceClassifier.load(model_dir, threads=1).backend == "torch"
    with pytest.raises(export.ExportError, match="cannot write"):
        StanceClassifier.load(model_dir, backend="openvino", threads=1)


def test_word_embeddings_are_the_checkpoints_rows(fitted_dir):
    from safetensors.numpy import load_file

    table = load_file(fitted_dir / "model.safetensors")[export.WORD_EMBEDDINGS]
    rows = export.WordEmbeddings(fitted_dir, cache_rows=3)  # a small cache: it gets cleared on the way
    ids = np.array([[0, 5, 5, 7], [len(table) - 1, 1, 2, 3]])
    for _ in range(2):
        np.testing.assert_array_equal(rows(ids), table[ids])
    with pytest.raises(IndexError, match="outside"):
        rows(np.array([[len(table)]]))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, ("openvino", "bf16")),
        ({"avx2", "amx_bf16"}, ("openvino", "bf16")),
        ({"avx2", "avx512f", "avx512_vnni"}, ("onnx", "int8")),
        ({"avx2"}, ("onnx", "int8")),
        ({"sse4_2"}, ("openvino", "fp32")),
    ],
)
def test_default_engine_is_chosen_by_cpu_flags(flags, expected):
    choice = engines.choose("auto", None, frozenset(flags))
    assert (choice.backend, choice.precision) == expected and choice.reason


def test_explicit_choices_and_bad_ones():
    assert engines.choose("torch", None, frozenset()).precision == "fp32"
    assert engines.choose("onnx", "int8", frozenset()) == engines.Choice("onnx", "int8", "asked")
    assert engines.choose("auto", "int8", frozenset()).backend == "onnx"
    with pytest.raises(ValueError, match="backend"):
        engines.choose("tensorrt", None)


def test_engine_refuses_a_precision_it_does_not_run(fitted_dir):
    with pytest.raises(ValueError, match="openvino"):
        StanceClassifier.load(fitted_dir, backend="openvino", precision="int8")


def test_a_model_that_cannot_be_exported_falls_back_to_torch(tiny_model_dir, tmp_path):
    import json

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns(export.EXPORT_DIR))
    config = json.loads((model_dir / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"  # a BERT variant our encoder (and export) does not do
    (model_dir / "config.json").write_text(json.dumps(config))
    clf = StanceClassifier.load(model_dir, threads=1)
    assert clf.backend == "torch"
    with pytest.raises(export.ExportError):
        StanceClassifier.load(model_dir, backend="openvino", threads=1)


_NO_TORCH = (
    "; bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]; "
    "assert not bad, bad[:5]"
)


@pytest.mark.parametrize("entry", ["api", "cli"])
def test_the_default_engine_loads_neither_torch_nor_transformers(fitted_dir, tmp_path, entry):
    """Through the Python API and the score command (the graph is built at training time)."""
    export.ensure_exported(fitted_dir)
    if entry == "api":
        run = (f"from exportstance.serve.classifier import StanceClassifier; "
               f"clf = StanceClassifier.load({str(fitted_dir)!r}); clf.predict(['Gut.']); "
               "assert clf.backend in ('openvino', 'onnx'), clf.backend")
    else:
        run = (f"from exportstance.cli import main; assert main(['score', {str(REPO / 'examples')!r}, '-o', "
               f"{str(tmp_path / 'out.jsonl')!r}, '--model', {str(fitted_dir)!r}]) == 0")
    done = subprocess.run([sys.executable, "-c", "import sys; " + run + _NO_TORCH],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
