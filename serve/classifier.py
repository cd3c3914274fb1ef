"""``StanceClassifier``: calibrated stance predictions for German statements, fast on a CPU.

The forward pass runs in an engine (:mod:`exportstance.serve.engines`): by default an exported
graph, in OpenVINO bf16 where the CPU has native bf16 and elsewhere in ONNX Runtime int8 with an
fp32 recheck of the statements int8 is unsure about, chosen from the CPU flags at load time;
``backend="torch"`` is the reference. The graph engines need neither torch nor transformers in the process, which keeps the cold start short; the tokenizer is the
``tokenizers`` library reading the model dir's ``tokenizer.json``. Architectures other than plain
BERT load through transformers and run in torch.

Speed comes from the usual serving tricks: texts are sorted by token length and batched with
dynamic padding (little compute wasted on padding), the engine uses as many threads as physical
cores, and results are put back in input order. A text longer than the model's window is never
truncated silently: it is split into overlapping token windows whose calibrated probabilities are
averaged; ``Prediction.n_windows`` says how many were used.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..model.format import (
    ModelMeta, ModelNotFoundError, check_labels, is_plain_bert, load_classifier, read_config, read_meta,
)
from ..model.inference import length_sorted_batches, physical_cores
from ..model.labels import LABELS
from ..model.paths import default_model_dir
from . import PRECISIONS, engines

BUILD_COMMAND = "make demo"
# Consecutive windows of a long text share a quarter of their tokens, so no sentence is only ever
# seen cut in half at a window edge.
_WINDOW_OVERLAP = 0.25


@dataclass(frozen=True)
class Prediction:
    """One text's stance: the argmax label, calibrated scores (keys in ``LABELS`` order), their max."""

    label: str
    scores: dict[str, float]
    confidence: float
    n_windows: int = 1


class StanceClassifier:
    """A trained model directory wrapped for inference; build it with :meth:`load`."""

    classes_: tuple[str, ...] = LABELS

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        meta: ModelMeta,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        precision: str = "fp32",
        pad_token_id: int | None = None,
    ) -> None:
        """``model``: a torch classifier (run by the torch engine in ``precision`` with ``threads``) or a
        graph engine (which brings its own precision and threads: use :meth:`load` for those)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.threads = threads or default_threads()
        if isinstance(model, engines.GraphEngine):
            self.engine: Any = model
        else:
            self.engine = engines.TorchEngine(model, precision, self.threads)
            if pad_token_id is None:
                pad_token_id = getattr(tokenizer, "pad_token_id", None)
            if pad_token_id is None:
                pad_token_id = getattr(model.config, "pad_token_id", None)
        if self.engine.precision == "bf16" and not engines.native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (avx512_bf16/amx); bf16 will likely be slower than fp32",
                RuntimeWarning,
                stacklevel=3,
            )
        # Always the Rust tokenizer: a transformers fast tokenizer hands over its backend.
        self.tokenizer = _backend(tokenizer)
        self.meta = meta
        self.batch_size = batch_size
        label2col = {label: i for i, label in self.engine.id2label.items()}
        self._columns = np.array([label2col[label] for label in LABELS])
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        self._window = meta.max_length - len(self._prefix) - len(self._suffix)
        if self._window < 1:
            raise ValueError(f"max_length {meta.max_length} leaves no room for text between special tokens")
        self._step = max(1, self._window - int(self._window * _WINDOW_OVERLAP))
        # The pad id matters for models that derive positions from it (RoBERTa); BERT ignores it.
        self._pad_id = pad_token_id if pad_token_id is not None else 0

    @property
    def backend(self) -> str:
        """The engine running the forward passes: ``torch``, ``onnx`` or ``openvino``."""
        return self.engine.name

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def model(self) -> Any:
        """The torch module (torch engine only; ``None`` for a graph engine)."""
        return getattr(self.engine, "model", None)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        precision: str | None = None,
        backend: str = "auto",
    ) -> StanceClassifier:
        """Load a trained model dir (default: ``default_model_dir()``, honouring ``$EXPORTSTANCE_MODEL``).

        ``backend``: ``auto`` (default; by CPU flags, see :func:`engines.choose`), ``openvino``,
        ``onnx`` or ``torch`` (the fp32 reference). ``precision``: ``None`` (with ``auto``: OpenVINO bf16
        where the CPU has native bf16, else ONNX Runtime int8 with its recheck; with a named backend:
        bf16 on OpenVINO with native bf16, else fp32), ``fp32``, ``bf16`` (OpenVINO or torch autocast; fast
        only with native bf16) or ``int8`` (ONNX Runtime: dynamic int8 with an fp32 recheck of
        the rows it is unsure about, the default on CPUs without native bf16; torch: plain dynamic
        quantisation, which changes about 5% of labels on real news). The exported graph is built on
        first use and cached in the dir. ``batch_size`` 16: on the 2-core target smaller
        length-sorted batches (less padding) were faster than 32 or 128 (``make bench``).
        ``threads`` defaults to the number of physical cores.
        """
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        path = Path(path).expanduser() if path is not None else default_model_dir()
        threads = threads or default_threads()
        choice = engines.choose(backend, precision)
        try:
            raw = read_config(path)
            if choice.backend != "torch":
                engine = _graph_engine(path, raw, choice, threads, fallback=backend == "auto")
                if engine is not None:
                    from tokenizers import Tokenizer

                    engines.LOG.info("%s: %s %s (%s; CPU: %s)", path, choice.backend, choice.precision,
                                     choice.reason, engines.flags_summary())
                    return cls(engine, Tokenizer.from_file(str(path / "tokenizer.json")), read_meta(raw),
                               batch_size=batch_size, threads=threads, pad_token_id=raw.get("pad_token_id"))
                choice = engines.Choice("torch", precision or "fp32", "not exportable")
            model, tokenizer, meta = _load(path, raw)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"{exc}. Build the default model with `{BUILD_COMMAND}` (or `exportstance train`)."
            ) from None
        engines.LOG.info("%s: torch %s (%s)", path, choice.precision, choice.reason)
        return cls(model, tokenizer, meta, batch_size=batch_size, threads=threads, precision=choice.precision)

    def predict(self, texts: Iterable[str], *, batch_size: int | None = None) -> list[Prediction]:
        """One :class:`Prediction` per text, in input order."""
        probs, n_windows = self._proba(texts, batch_size)
        predictions = []
        for row, windows in zip(probs.tolist(), n_windows.tolist()):
            best = max(range(len(LABELS)), key=row.__getitem__)
            predictions.append(Prediction(LABELS[best], dict(zip(LABELS, row)), row[best], windows))
        return predictions

    def predict_proba(self, texts: Iterable[str], *, batch_size: int | None = None) -> np.ndarray:
        """Calibrated probabilities, shape (n, 3), columns in ``classes_`` order (as in scikit-learn)."""
        return self._proba(texts, batch_size)[0]

    def score_articles(
        self, articles: Iterable[Any], *, batch_size: int | None = None, progress: bool = False,
        keep_text: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Stream article records; see :func:`exportstance.serve.articles.score_articles`."""
        from .articles import score_articles

        return score_articles(articles, model=self, batch_size=batch_size, progress=progress, keep_text=keep_text)

    def _proba(self, texts: Iterable[str], batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities in LABELS order, windows per text); long texts are windowed, never truncated."""
        texts = _checked(texts)
        n = len(texts)
        if n == 0:
            return np.empty((0, len(LABELS))), np.empty(0, dtype=np.int64)
        content = [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, ids in enumerate(content):
            for part in self._split(ids):
                windows.append(self._prefix + part + self._suffix)
                owner.append(i)
        scaled = self._forward(windows, batch_size or self.batch_size).astype(np.float64) / self.meta.temperature
        window_probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        window_probs /= window_probs.sum(axis=1, keepdims=True)
        owners = np.asarray(owner)
        n_windows = np.bincount(owners, minlength=n)
        probs = np.zeros((n, len(LABELS)))
        np.add.at(probs, owners, window_probs)
        return probs / n_windows[:, None], n_windows

    def _split(self, ids: list[int]) -> list[list[int]]:
        """Overlapping windows covering every token; the last one ends exactly at the text's end."""
        if len(ids) <= self._window:
            return [ids]
        last = len(ids) - self._window
        starts = list(range(0, last, self._step)) + [last]
        return [ids[s : s + self._window] for s in starts]

    def _forward(self, windows: Sequence[list[int]], batch_size: int) -> np.ndarray:
        """Logits (m, 3) in LABELS order; windows int8 is unsure about are run again in fp32
        (:class:`engines.OnnxRuntimeEngine`), together, so they too fill whole batches."""
        out = self._logits(self.engine, windows, batch_size)
        exact = getattr(self.engine, "recheck", None)
        if exact is not None:
            unsure = np.flatnonzero(engines.top_two_margin(out) < self.engine.recheck_margin)
            if unsure.size:
                out[unsure] = self._logits(exact, [windows[i] for i in unsure], batch_size)
                self.engine.rechecked += int(unsure.size)
        return out

    def _logits(self, engine: Any, windows: Sequence[list[int]], batch_size: int) -> np.ndarray:
        """Logits of ``windows`` from ``engine``, computed in length-sorted, dynamically padded batches."""
        out = np.empty((len(windows), len(LABELS)), dtype=np.float32)
        for batch in length_sorted_batches([len(w) for w in windows], batch_size):
            width = max(len(windows[i]) for i in batch)
            input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : len(windows[i])] = windows[i]
                mask[row, : len(windows[i])] = 1
            out[batch] = engine(input_ids, mask)[:, self._columns]
        return out


def _checked(texts: Iterable[str]) -> list[str]:
    """The texts as a list; a non-str item is a TypeError naming its position."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single str (wrap it in a list)")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text at position {i} is {type(text).__name__}, expected str")
    return texts


def _load(path: Path, raw: dict[str, Any]) -> tuple[Any, Any, ModelMeta]:
    """(torch model, tokenizer, meta): plain BERT classifiers without transformers, anything else with it."""
    from ..model import encoder

    if not (is_plain_bert(raw) and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()):
        return load_classifier(path)
    from tokenizers import Tokenizer

    model = encoder.load_bert_classifier(path, raw)
    check_labels(model.config.id2label, path)
    return model, Tokenizer.from_file(str(path / "tokenizer.json")), read_meta(model.config)


def _graph_engine(path: Path, raw: dict[str, Any], choice: engines.Choice, threads: int, *, fallback: bool) -> Any:
    """The exported-graph engine, or None (with ``fallback``) for a dir that cannot be exported."""
    from ..model.export import ExportError

    try:
        if not (is_plain_bert(raw) and (path / "tokenizer.json").is_file()):
            raise ExportError(f"{path}: only plain BERT classifiers with tokenizer.json run in a graph engine")
        engine = engines.build(path, choice.backend, choice.precision, threads)
    except ExportError as exc:
        if not fallback:
            raise
        engines.LOG.info("%s; using torch", exc)
        return None
    check_labels(engine.id2label, path)
    return engine


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a tokenizer, set to neither truncate nor pad."""
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"need a fast (Rust) tokenizer, got {type(tokenizer).__name__}")
    backend.no_truncation()
    backend.no_padding()
    return backend


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] ... [SEP], <s> ... </s>)."""
    probe = "Exportkontrollen"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def default_threads() -> int:
    """Physical cores, but no more than the CPUs this process may run on (containers, taskset)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else physical_cores()
    return max(1, min(physical_cores(), allowed))
