"""Inference engines behind ``StanceClassifier``: torch (the reference), ONNX Runtime, OpenVINO.

Every engine maps a padded batch of token ids and its attention mask (numpy int64, shape
(batch, tokens)) to logits (batch, labels) in the model's own label order; the classifier does
tokenising, windowing, batching and calibration once for all of them. This is the
sentence-transformers pattern: one ``backend=`` argument, the exported graph cached in the model
dir (:mod:`exportstance.model.export`), and the runtime imported only by the engine that uses it.

``backend="auto"`` (the default) picks by the CPU's flags at load time (:func:`choose`): with
native bf16 (AVX512-BF16 or AMX) OpenVINO in bf16, the fastest engine that kept >= 99% of labels
on real news; otherwise (AVX2, AVX-512 VNNI) ONNX Runtime int8 with an fp32 recheck of the rows
int8 is unsure about, which keeps >= 99% of labels at most of int8's speed; OpenVINO fp32 on a CPU
without AVX2 (see the README's speed section for the measurements behind this).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..model.inference import cpu_flags
from ..model.inference import has_native_bf16 as native_bf16
from . import BACKENDS

LOG = logging.getLogger("exportstance.serve")


class Engine(Protocol):
    """What the classifier needs of an engine."""

    name: str
    precision: str
    id2label: Mapping[int, str]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    reason: str


def flags_summary(flags: frozenset[str] | None = None) -> str:
    """The flags that decide engine speed, e.g. ``avx2 avx512_vnni avx512_bf16 amx_bf16``."""
    flags = cpu_flags() if flags is None else flags
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "(none of avx2/avx512/amx)"


def choose(backend: str, precision: str | None, flags: frozenset[str] | None = None) -> Choice:
    """Resolve ``backend="auto"`` and ``precision=None`` from the CPU flags.

    ``auto`` with a precision takes the fastest engine for it (``make bench``): OpenVINO for fp32
    and bf16, ONNX Runtime for int8 (with its fp32 recheck, see :class:`OnnxRuntimeEngine`). A
    named backend with ``precision=None`` runs bf16 on OpenVINO where the CPU has native bf16,
    else fp32.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    flags = cpu_flags() if flags is None else flags
    bf16 = native_bf16(flags)
    if backend == "auto":
        if precision is None:
            if bf16:
                return Choice("openvino", "bf16", "native bf16 (avx512_bf16/amx_bf16)")
            if "avx2" in flags:
                return Choice("onnx", "int8", "no native bf16: int8 with an fp32 recheck of unsure rows")
            return Choice("openvino", "fp32", "no avx2: int8 would be slow")
        return Choice("onnx" if precision == "int8" else "openvino", precision, f"precision {precision} asked")
    if precision is None:
        precision = "bf16" if bf16 and backend == "openvino" else "fp32"
    return Choice(backend, precision, "asked")


def build(model_dir: Path, backend: str, precision: str, threads: int) -> Engine:
    """An ONNX Runtime or OpenVINO engine for an exported-graph-capable model dir."""
    if backend == "onnx":
        return OnnxRuntimeEngine(model_dir, precision, threads)
    if backend == "openvino":
        return OpenVINOEngine(model_dir, precision, threads)
    raise ValueError(f"no graph engine called {backend!r}")


class GraphEngine:
    """Shared part of the graph engines: the embedding lookup (rows read from model.safetensors),
    the label order (from config.json, like the torch model's) and a lock, so one engine may be
    called from several threads (one inference request at a time; its threads do the parallel work)."""

    name = "graph"

    def __init__(self, model_dir: Path, precision: str, threads: int, *, int8: bool = False) -> None:
        from ..model import export
        from ..model.format import read_config

        self.precision = precision
        self.threads = threads
        self.dir = export.ensure_exported(model_dir, int8=int8)
        self.id2label = {int(k): str(v) for k, v in read_config(model_dir)["id2label"].items()}
        self.embed = export.WordEmbeddings(model_dir)  # token ids -> float32 rows (batch, tokens, hidden)
        self._lock = threading.Lock()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        words = self.embed(input_ids)
        with self._lock:
            return self._run(words, attention_mask)

    def _run(self, words: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeEngine(GraphEngine):
    """ONNX Runtime, CPU provider: fp32 graph, or dynamic int8 (weights per channel, 7 bits) with an
    fp32 recheck of the rows int8 is unsure about.

    Plain dynamic int8 changes about 3% of the labels on real news (``make bench``): real text sits
    near the decision boundaries, where int8's rounding tips it over. Those flips happen where int8's
    own top-two probabilities (softmax of the raw logits) are close, so the classifier runs the rows
    with a margin below ``recheck_margin`` again through ``recheck`` (this model's fp32 graph), all
    of a ``predict`` call's unsure rows together in full batches, and takes its logits for them.
    ``RECHECK_MARGIN`` was chosen on the real-news *dev* split for >= 99% agreement with fp32
    (``bench/recheck_margin.py``); ``recheck_margin=0`` gives plain int8.
    """

    name = "onnx"
    PRECISIONS = ("fp32", "int8")
    RECHECK_MARGIN = 0.5

    def __init__(self, model_dir: Path, precision: str, threads: int, *, recheck_margin: float | None = None) -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"backend 'onnx' runs {'/'.join(self.PRECISIONS)}, not {precision!r}")
        super().__init__(model_dir, precision, threads, int8=precision == "int8")
        import onnxruntime as ort

        from ..model.export import GRAPH_FP32, GRAPH_INT8, onnxruntime_optimized

        margin = self.RECHECK_MARGIN if recheck_margin is None else recheck_margin
        self.recheck_margin = margin if precision == "int8" else 0.0
        self.rechecked = 0  # windows run again in fp32 (a counter for benchmarks and tests)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        graph = onnxruntime_optimized(model_dir, GRAPH_INT8 if precision == "int8" else GRAPH_FP32)
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.recheck: OnnxRuntimeEngine | None = None
        if self.recheck_margin > 0:
            self.recheck = OnnxRuntimeEngine(model_dir, "fp32", threads)
            self.recheck.embed = self.embed  # one row cache for both graphs

    def _run(self, words: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._session.run(["logits"], {"word_embeds": words, "attention_mask": attention_mask})[0]


def top_two_margin(logits: np.ndarray) -> np.ndarray:
    """Per row: the gap between the two largest softmax probabilities (0 = a tie, 1 = certain)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = np.sort(z / z.sum(axis=1, keepdims=True), axis=1)
    return p[:, -1] - p[:, -2]


class OpenVINOEngine(GraphEngine):
    """OpenVINO's CPU plugin, reading the ONNX graph; ``bf16`` sets its inference precision hint.

    The compiled model is cached by OpenVINO in ``exported/openvino_cache/<export key>/<precision>``
    (see ``model.export.OPENVINO_CACHE`` for why the key is ours), which makes later loads faster.
    """

    name = "openvino"
    PRECISIONS = ("fp32", "bf16")

    def __init__(self, model_dir: Path, precision: str, threads: int) -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"backend 'openvino' runs {'/'.join(self.PRECISIONS)}, not {precision!r}")
        super().__init__(model_dir, precision, threads)
        import openvino as ov

        from ..model.export import GRAPH_FP32, openvino_cache

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if os.access(self.dir, os.W_OK):
            config["CACHE_DIR"] = str(openvino_cache(model_dir, precision))
        self._compiled = core.compile_model(str(self.dir / GRAPH_FP32), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def _run(self, words: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        result = self._request.infer({"word_embeds": words, "attention_mask": attention_mask})
        return np.array(next(iter(result.values())), dtype=np.float32)


class TorchEngine:
    """The reference: the torch module in fp32, bf16 autocast or dynamic int8 (``quantize_dynamic``)."""

    name = "torch"
    PRECISIONS = ("fp32", "bf16", "int8")

    def __init__(self, model: Any, precision: str, threads: int) -> None:
        import torch

        if precision not in self.PRECISIONS:
            raise ValueError(f"backend 'torch' runs {'/'.join(self.PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.threads = threads
        self.model = _quantize_int8(model) if precision == "int8" else model
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self._torch = torch
        self._lock = threading.Lock()  # torch's thread count is process-wide: one call at a time

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._run(input_ids, attention_mask)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        from ..model.inference import autocast

        torch = self._torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode(), autocast(self.precision):
                result = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
                logits = getattr(result, "logits", result)  # transformers output or plain tensor
                return logits.float().numpy()
        finally:
            torch.set_num_threads(previous)


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the encoder's Linear layers (weights int8 per output channel,
    activations quantised per batch). The pooler and classifier stay fp32: quantising them too
    dropped label agreement with fp32 to 91% on corpus statements, for almost no extra speed.

    Modifies ``model`` in place (``load`` owns it; a caller passing its own model gives it up)."""
    import warnings

    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - depends on the torch build
        raise RuntimeError("precision='int8' needs torch.ao.quantization.quantize_dynamic") from exc
    head = ("pooler", "classifier", "score")
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in head for part in name.split("."))
    }
    with warnings.catch_warnings():
        # torch announces the move of eager-mode quantisation to torchao; the user asked for int8.
        warnings.simplefilter("ignore")
        # in place: a deep copy would hold the fp32 model twice at load time
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
