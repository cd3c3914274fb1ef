"""Exported inference graphs of a trained-model dir, cached in the dir and keyed by the weights' hash.

Why this layout: ``model.safetensors`` stays the one source of truth (``transformers.pipeline``
still loads the dir), and the graph is a derived, disposable file in ``DIR/exported/``. The graph
starts *after* the word-embedding lookup: the 250k x 384 table (~370 MB in fp32) would make the
graph file large and slow to load, while serving only needs a few thousand of its rows. The
rows a batch uses are read from ``model.safetensors`` itself (:class:`WordEmbeddings`), so the
table is never copied or held in memory, and the values are exactly the trained ones. (So do not
retrain *into* a dir that a running process serves from: the file is rewritten under it.)

``exported/manifest.json`` records the key the graph was made for: the SHA-256 of
``model.safetensors`` and of ``config.json`` and :data:`EXPORT_VERSION`; a graph whose key differs
is rebuilt (:func:`ensure_exported`). Several processes may load one dir at once (Ray workers): the
check and the export run under an exclusive ``flock`` on ``exported/.lock``, and every file is
written to a unique temporary name and renamed into place. Building needs torch; using the graph
does not. The runtimes keep their own derived files under ``exported/`` too, keyed by the same
export key: OpenVINO's compiled graphs (:func:`openvino_cache`) and ONNX Runtime's fused graphs
(:func:`onnxruntime_optimized`), both saved once to shorten later loads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_DIR = "exported"
MANIFEST = "manifest.json"
GRAPH_FP32 = "encoder.onnx"
GRAPH_INT8 = "encoder.int8.onnx"
# OpenVINO's compiled-model cache lives in openvino_cache/<export key>/<precision>: OpenVINO
# 2026.4's own cache key left out both the precision hint (a bf16 run of the blob compiled for f32
# gave NaN) and the graph's contents (a re-exported graph got the old blob).
OPENVINO_CACHE = "openvino_cache"
# ONNX Runtime's graph after its portable (EXTENDED) fusions, saved once so that later loads skip
# them (about 0.2 s of cold start for the int8 graph and its fp32 recheck together); keyed by the
# export and the onnxruntime version, as the fused graph holds that version's contrib ops.
ONNXRUNTIME_CACHE = "onnxruntime_cache"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
# Bump when the exported function changes (model/encoder.py, the inputs, the opset): old graphs
# are then rebuilt on their next load.
EXPORT_VERSION = 2
# Opset 17 has LayerNormalization as one op, which both runtimes fuse well.
OPSET = 17
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


class ExportError(RuntimeError):
    """The model dir cannot be exported (architecture, weights, a read-only dir); torch still serves it."""


def weights_file(model_dir: Path) -> Path:
    return Path(model_dir) / "model.safetensors"


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / EXPORT_DIR / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(model_dir: Path, manifest: dict[str, Any] | None = None) -> bool:
    """True if the exported graph was made from the dir's present weights and config by this export code.

    Size and mtime of the weights equal to the manifest's are taken as "same file" (cheap, every
    load); if they differ (a copy, a touched file), the SHA-256 decides, so copying a model dir
    keeps its graph (and the manifest's stamp is refreshed where the dir is writable).
    """
    model_dir = Path(model_dir)
    manifest = manifest if manifest is not None else read_manifest(model_dir)
    weights = weights_file(model_dir)
    if not manifest or not weights.is_file() or not (model_dir / EXPORT_DIR / GRAPH_FP32).is_file():
        return False
    if manifest.get("export_version") != EXPORT_VERSION or manifest.get("config_sha256") != sha256(model_dir / "config.json"):
        return False
    if manifest.get("weights_stamp") == _stamp(weights):
        return True
    if manifest.get("weights_sha256") != sha256(weights):
        return False
    with contextlib.suppress(OSError):  # a read-only copy just hashes again next time
        _write_json(model_dir / EXPORT_DIR / MANIFEST, {**manifest, "weights_stamp": _stamp(weights)})
    return True


def ensure_exported(model_dir: Path, *, int8: bool = False) -> Path:
    """``DIR/exported`` with a current fp32 graph (and the int8 one if asked), built if missing or stale.

    A dir that cannot be written (a read-only mount) and has no current graph is an ExportError,
    so ``backend="auto"`` serves it with torch instead.
    """
    model_dir = Path(model_dir)
    out = model_dir / EXPORT_DIR
    if is_current(model_dir) and (not int8 or (out / GRAPH_INT8).is_file()):
        return out
    try:
        with _locked(out):
            if not is_current(model_dir):
                export_onnx(model_dir)
            if int8 and not (out / GRAPH_INT8).is_file():
                quantize_int8(out)
    except OSError as exc:
        raise ExportError(f"cannot write the exported graph into {out}: {exc}") from exc
    return out


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on ``out/.lock``: one process exports, the others wait and then reuse it."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def export_onnx(model_dir: Path) -> Path:
    """Write ``DIR/exported/encoder.onnx`` (inputs ``word_embeds``, ``attention_mask``; output ``logits``).

    Needs torch; the graph is traced from :mod:`exportstance.model.encoder`, the same module the
    torch engine runs, so both compute the same function. Call it through :func:`ensure_exported`,
    which holds the lock.
    """
    import torch

    from . import encoder
    from .format import is_plain_bert, read_config

    model_dir = Path(model_dir)
    raw = read_config(model_dir)
    weights = weights_file(model_dir)
    if not is_plain_bert(raw) or not weights.is_file():
        raise ExportError(f"{model_dir}: only plain BERT classifiers with model.safetensors are exported")
    # The key is computed before the weights are read, so a file replaced meanwhile reads as stale.
    key = {"weights_sha256": sha256(weights), "weights_stamp": _stamp(weights),
           "config_sha256": sha256(model_dir / "config.json"), "export_version": EXPORT_VERSION}
    model = encoder.load_bert_classifier(model_dir, raw)
    out = model_dir / EXPORT_DIR
    out.mkdir(exist_ok=True)
    hidden = model.config.hidden_size
    example = (torch.zeros(2, 7, hidden), torch.ones(2, 7, dtype=torch.long))
    with _temporary(out / GRAPH_FP32) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            encoder.FromWordEmbeddings(model),
            example,
            str(tmp),
            input_names=["word_embeds", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"word_embeds": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this BERT fully
        )
    (out / GRAPH_INT8).unlink(missing_ok=True)  # made from the previous graph
    _write_json(out / MANIFEST, {**key, "opset": OPSET, "torch": torch.__version__})
    return out / GRAPH_FP32


def quantize_int8(out: Path) -> Path:
    """``encoder.int8.onnx``: ONNX Runtime dynamic int8 of every MatMul with a weight matrix,
    weights per channel in 7 bits (reduce_range).

    Why these settings: reduce_range avoids the int16 saturation of u8s8 products on AVX2 CPUs
    without VNNI (ONNX Runtime's own advice), and per-channel weights keep more precision. MatMuls
    between two activations (attention scores and context) stay fp32, as do the pooler and the
    classifier head (Gemm, not quantised). This changes about 3% of labels on real news
    (``make bench``), so it is opt-in.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = out / GRAPH_FP32
    graph = onnx.load(str(src), load_external_data=False)
    initializers = {init.name for init in graph.graph.initializer}
    activations_only = [
        node.name for node in graph.graph.node
        if node.op_type == "MatMul" and not any(name in initializers for name in node.input)
    ]
    with _temporary(out / GRAPH_INT8) as tmp:
        quantize_dynamic(
            str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            op_types_to_quantize=["MatMul"], nodes_to_exclude=activations_only,
        )
    return out / GRAPH_INT8


def _export_key(model_dir: Path) -> str:
    """A short digest of the manifest's whole key: runtime caches of this export live under it."""
    manifest = read_manifest(model_dir) or {}
    key = json.dumps([manifest.get(k) for k in ("weights_sha256", "config_sha256", "export_version")])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def openvino_cache(model_dir: Path, precision: str) -> Path:
    """Where OpenVINO caches the compiled graph of this export (its whole key) in this precision."""
    return Path(model_dir) / EXPORT_DIR / OPENVINO_CACHE / _export_key(model_dir) / precision


def onnxruntime_optimized(model_dir: Path, graph: str) -> Path:
    """The exported ``graph`` after ONNX Runtime's EXTENDED optimisations, saved on first use.

    Only the hardware-independent fusions are saved; the session that loads the file still applies
    the CPU-specific layout ones, so the file can move between machines. Where the dir cannot be
    written, the exported graph itself (the runtime then optimises it on every load).
    """
    import onnxruntime as ort

    out = Path(model_dir) / EXPORT_DIR
    cached = out / ONNXRUNTIME_CACHE / _export_key(model_dir) / ort.__version__ / graph
    if cached.is_file():
        return cached
    try:
        with _locked(out):
            if not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                with _temporary(cached) as tmp:
                    options = ort.SessionOptions()
                    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                    options.optimized_model_filepath = str(tmp)
                    options.add_session_config_entry("session.save_model_format", "ONNX")
                    ort.InferenceSession(str(out / graph), options, providers=["CPUExecutionProvider"])
    except OSError:
        return out / graph
    return cached


@contextlib.contextmanager
def _temporary(final: Path) -> Iterator[Path]:
    """A unique temporary path next to ``final``, renamed onto it if the block succeeds."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with _temporary(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


class WordEmbeddings:
    """Rows of the word-embedding table, read on demand from ``model.safetensors`` (exact values).

    Why not the whole table in memory or a memory map: a text uses a few dozen of its 250k rows,
    but a map's pages stay resident once touched, so after a few thousand texts ~200 MB of the
    file counted in the process's RSS. Here each batch reads its distinct rows with ``os.pread``
    (from the page cache after the first time) into a small cache of recent rows, so memory stays
    bounded at ``cache_rows`` rows whatever the input. The safetensors layout: an 8-byte
    little-endian header length, a JSON header with each tensor's dtype, shape and byte range,
    then the raw little-endian data.
    """

    def __init__(self, model_dir: Path, cache_rows: int = 32768) -> None:
        path = weights_file(model_dir)
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        info = header.get(WORD_EMBEDDINGS)
        if info is None or info["dtype"] not in _SAFETENSORS_DTYPES or len(info["shape"]) != 2:
            raise ExportError(f"{path}: no 2-D {WORD_EMBEDDINGS} in F32/F16")
        self.dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        self.rows, self.dim = info["shape"]
        self._row_bytes = self.dim * self.dtype.itemsize
        self._offset = 8 + n + info["data_offsets"][0]
        self._fd = os.open(path, os.O_RDONLY)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_rows = cache_rows

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows for an int array of ids, shape ``ids.shape + (dim,)``."""
        ids = np.asarray(ids)
        distinct, inverse = np.unique(ids, return_inverse=True)
        out = np.empty((len(distinct), self.dim), dtype=np.float32)
        cache = self._cache
        for j, i in enumerate(distinct.tolist()):
            row = cache.get(i)
            if row is None:
                if not 0 <= i < self.rows:
                    raise IndexError(f"token id {i} is outside the embedding table (0..{self.rows - 1})")
                data = os.pread(self._fd, self._row_bytes, self._offset + i * self._row_bytes)
                row = np.frombuffer(data, dtype=self.dtype).astype(np.float32)
                if len(cache) >= self._cache_rows:
                    cache.clear()  # cheap and bounded; frequent rows come back at once
                cache[i] = row
            out[j] = row
        return out[inverse.reshape(-1)].reshape(ids.shape + (self.dim,))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self._fd)
