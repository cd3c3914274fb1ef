"""``StanceClassifier``: calibrated stance predictions for German statements, fast on a CPU.

Cold start: plain BERT classifiers (our default model) load without ``transformers``: the module
in :mod:`exportstance.model.encoder` and the ``tokenizers`` library read the model dir directly,
which saves the ~4 s import of transformers' modelling code. Other architectures load through
transformers.

Speed comes from the usual serving tricks: texts are sorted by token length and batched with
dynamic padding (little compute wasted on padding), forward passes run under
``torch.inference_mode`` with as many torch threads as physical cores, and results are put back in
input order. A text longer than the model's window is never truncated silently: it is split into
overlapping token windows whose calibrated probabilities are averaged; ``Prediction.n_windows``
says how many were used.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.format import ModelMeta, ModelNotFoundError, check_labels, load_classifier, read_config, read_meta
from ..model.inference import autocast, has_native_bf16, length_sorted_batches, physical_cores
from ..model.labels import LABELS
from ..model.paths import default_model_dir
from . import PRECISIONS

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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16" and not has_native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (avx512_bf16/amx); bf16 autocast will likely be slower than fp32",
                RuntimeWarning,
                stacklevel=3,
            )
        self.model = _quantize_int8(model) if precision == "int8" else model
        # Always the Rust tokenizer: a transformers fast tokenizer hands over its backend.
        self.tokenizer = _backend(tokenizer)
        self.meta = meta
        self.batch_size = batch_size
        self.threads = threads or default_threads()
        self.precision = precision
        label2col = {str(label): int(i) for i, label in model.config.id2label.items()}
        self._columns = torch.tensor([label2col[label] for label in LABELS])
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        self._window = meta.max_length - len(self._prefix) - len(self._suffix)
        if self._window < 1:
            raise ValueError(f"max_length {meta.max_length} leaves no room for text between special tokens")
        self._step = max(1, self._window - int(self._window * _WINDOW_OVERLAP))
        # The pad id matters for models that derive positions from it (RoBERTa); BERT ignores it.
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(model.config, "pad_token_id", None)
        self._pad_id = pad_id if pad_id is not None else 0

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> StanceClassifier:
        """Load a trained model dir (default: ``default_model_dir()``, honouring ``$EXPORTSTANCE_MODEL``).

        ``batch_size`` 16: on the 2-core target smaller length-sorted batches (less padding) were
        faster than 32 or 128 in fp32 (compare with ``bench/bench_serve.py --batch-size N``).
        ``threads`` defaults to the number of physical cores; ``precision`` is ``fp32`` (default),
        ``bf16`` (autocast; only fast on CPUs with native bf16) or ``int8`` (dynamic quantisation of
        the Linear layers).
        """
        path = Path(path).expanduser() if path is not None else default_model_dir()
        try:
            model, tokenizer, meta = _load(path)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"{exc}. Build the default model with `{BUILD_COMMAND}` (or `exportstance train`)."
            ) from None
        return cls(model, tokenizer, meta, batch_size=batch_size, threads=threads, precision=precision)

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
        logits = self._forward(windows, batch_size or self.batch_size).double()
        window_probs = torch.softmax(logits / self.meta.temperature, dim=-1).numpy()
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

    def _forward(self, windows: Sequence[list[int]], batch_size: int) -> torch.Tensor:
        """Logits (m, 3) in LABELS order, computed in length-sorted, dynamically padded batches."""
        out = torch.empty(len(windows), len(LABELS))
        with self._runtime():
            for batch in length_sorted_batches([len(w) for w in windows], batch_size):
                width = max(len(windows[i]) for i in batch)
                input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(windows[i])] = torch.tensor(windows[i])
                    mask[row, : len(windows[i])] = 1
                result = self.model(input_ids=input_ids, attention_mask=mask)
                logits = getattr(result, "logits", result).float()  # transformers output or plain tensor
                out[batch] = logits[:, self._columns]
        return out

    @contextlib.contextmanager
    def _runtime(self) -> Iterator[None]:
        """Threads, inference mode and (if asked) bf16 autocast for one call; torch's thread count is restored."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        cast = autocast(self.precision)
        try:
            with torch.inference_mode(), cast:
                yield
        finally:
            torch.set_num_threads(previous)


def _checked(texts: Iterable[str]) -> list[str]:
    """The texts as a list; a non-str item is a TypeError naming its position."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single str (wrap it in a list)")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text at position {i} is {type(text).__name__}, expected str")
    return texts


def _load(path: Path) -> tuple[Any, Any, ModelMeta]:
    """(model, tokenizer, meta): plain BERT classifiers without transformers, anything else with it."""
    from ..model import encoder

    raw = read_config(path)
    if not (encoder.is_supported(raw) and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()):
        return load_classifier(path)
    from tokenizers import Tokenizer

    model = encoder.load_bert_classifier(path, raw)
    check_labels(model.config.id2label, path)
    return model, Tokenizer.from_file(str(path / "tokenizer.json")), read_meta(model.config)


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


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the encoder's Linear layers (weights int8 per output channel,
    activations quantised per batch). The pooler and classifier stay fp32: quantising them too
    dropped label agreement with fp32 to 91% on corpus statements, for almost no extra speed; per
    channel rather than per tensor agreed with fp32 more often at the same speed in a comparison on
    an earlier model (``bench/bench_serve.py`` prints the agreement for the current one).

    Modifies ``model`` in place (``load`` owns it; a caller passing its own model gives it up)."""
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
