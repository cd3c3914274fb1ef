"""Exported inference graphs of a trained-model dir, cached in the dir and keyed by the weights' hash.

Why this layout: ``model.safetensors`` stays the one source of truth (``transformers.pipeline``
still loads the dir), and the graph is a derived, disposable file in ``DIR/exported/``. The graph
starts *after* the word-embedding lookup: the 250k x 384 table (~370 MB in fp32) would make the
graph file large and slow to load, while serving only needs a few thousand of its rows. The
table is read in place from ``model.safetensors`` as a read-only memory map
(:func:`word_embeddings`), so neither a copy of it nor its pages that no text uses are ever in
memory, and the values are exactly the trained ones.

``exported/manifest.json`` records the SHA-256, size and mtime of ``model.safetensors`` the graph
was made from; a graph whose weights changed is rebuilt (:func:`ensure_exported`). Building needs
torch; using the graph does not.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_DIR = "exported"
MANIFEST = "manifest.json"
GRAPH_FP32 = "encoder.onnx"
GRAPH_INT8 = "encoder.int8.onnx"
# OpenVINO's compiled-model cache. Its key did not change when encoder.onnx was rewritten in
# place (a stale blob was loaded), so a new export always empties it; serve.engines keeps one
# subdir per precision for the same reason.
OPENVINO_CACHE = "openvino_cache"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
# Opset 17 has LayerNormalization as one op, which both runtimes fuse well.
OPSET = 17
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


class ExportError(RuntimeError):
    """The model dir cannot be exported (architecture, weights); the torch engine still works."""


def weights_file(model_dir: Path) -> Path:
    return Path(model_dir) / "model.safetensors"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / EXPORT_DIR / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(model_dir: Path, manifest: dict[str, Any] | None = None) -> bool:
    """True if the exported graph was made from the dir's present weights.

    Size and mtime equal to the manifest's are taken as "same file" (cheap, every load); if they
    differ (a copy, a touched file), the SHA-256 decides, so copying a model dir keeps its graph.
    """
    manifest = manifest if manifest is not None else read_manifest(model_dir)
    weights = weights_file(model_dir)
    if not manifest or not weights.is_file() or not (Path(model_dir) / EXPORT_DIR / GRAPH_FP32).is_file():
        return False
    if manifest.get("weights_stamp") == _stamp(weights):
        return True
    return manifest.get("weights_sha256") == sha256(weights)


def ensure_exported(model_dir: Path, *, int8: bool = False) -> Path:
    """``DIR/exported`` with a current fp32 graph (and the int8 one if asked), built if missing or stale."""
    model_dir = Path(model_dir)
    out = model_dir / EXPORT_DIR
    if not is_current(model_dir):
        export_onnx(model_dir)
    if int8 and not (out / GRAPH_INT8).is_file():
        quantize_int8(out)
    return out


def export_onnx(model_dir: Path) -> Path:
    """Write ``DIR/exported/encoder.onnx`` (inputs ``word_embeds``, ``attention_mask``; output ``logits``).

    Needs torch; the graph is traced from :mod:`exportstance.model.encoder`, the same module the
    torch engine runs, so both compute the same function.
    """
    import torch

    from . import encoder
    from .format import is_plain_bert, read_config

    model_dir = Path(model_dir)
    raw = read_config(model_dir)
    if not is_plain_bert(raw) or not weights_file(model_dir).is_file():
        raise ExportError(f"{model_dir}: only plain BERT classifiers with model.safetensors are exported")
    model = encoder.load_bert_classifier(model_dir, raw)
    out = model_dir / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for stale in (GRAPH_FP32, GRAPH_INT8, MANIFEST):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / OPENVINO_CACHE, ignore_errors=True)
    hidden = model.config.hidden_size
    example = (torch.zeros(2, 7, hidden), torch.ones(2, 7, dtype=torch.long))
    tmp = out / (GRAPH_FP32 + ".tmp")
    with warnings.catch_warnings(), torch.inference_mode():
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
    os.replace(tmp, out / GRAPH_FP32)
    weights = weights_file(model_dir)
    manifest = {
        "weights_sha256": sha256(weights),
        "weights_stamp": _stamp(weights),
        "opset": OPSET,
        "torch": torch.__version__,
        "inputs": ["word_embeds", "attention_mask"],
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out / GRAPH_FP32


def quantize_int8(out: Path) -> Path:
    """``encoder.int8.onnx``: ONNX Runtime dynamic int8, weights per channel in 7 bits (reduce_range).

    Why these settings: reduce_range avoids the int16 saturation of u8s8 products on AVX2 CPUs
    without VNNI (ONNX Runtime's own advice), and per-channel weights keep more precision. Only
    MatMul is quantised (attention score products and the classifier head read as MatMul too;
    they are excluded by name below because the label-deciding logits are sensitive to them).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = out / GRAPH_FP32
    graph = onnx.load(str(src), load_external_data=False)
    # Keep fp32: the pooler and classifier head (3 logits decide the label) and any MatMul between two
    # activations (attention scores and context), which dynamic quantisation handles poorly.
    initializers = {init.name for init in graph.graph.initializer}
    exclude = [
        node.name
        for node in graph.graph.node
        if node.op_type in ("MatMul", "Gemm")
        and (not any(name in initializers for name in node.input) or "pooler" in node.name or "classifier" in node.name)
    ]
    tmp = out / (GRAPH_INT8 + ".tmp")
    quantize_dynamic(
        str(src),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
    )
    os.replace(tmp, out / GRAPH_INT8)
    return out / GRAPH_INT8


def word_embeddings(model_dir: Path) -> np.ndarray:
    """The word-embedding table as a read-only memory map into ``model.safetensors`` (no copy).

    The safetensors layout is an 8-byte little-endian header length, a JSON header with each
    tensor's dtype, shape and byte range, then the raw little-endian data.
    """
    path = weights_file(model_dir)
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    info = header.get(WORD_EMBEDDINGS)
    if info is None or info["dtype"] not in _SAFETENSORS_DTYPES:
        raise ExportError(f"{path}: no {WORD_EMBEDDINGS} in F32/F16")
    start, _end = info["data_offsets"]
    return np.memmap(path, dtype=_SAFETENSORS_DTYPES[info["dtype"]], mode="r", offset=8 + n + start,
                     shape=tuple(info["shape"]))
