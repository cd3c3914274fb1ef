"""The trained-model format: a plain Hugging Face ``save_pretrained`` directory.

``config.json`` carries ``id2label``/``label2id`` (so ``transformers.pipeline("text-classification",
model=dir)`` works as is) plus an ``exportstance`` block with the calibration temperature and the
token window used in training. Weights are safetensors only; remote code is never trusted.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .labels import LABELS

META_KEY = "exportstance"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs besides weights and tokenizer."""

    temperature: float = 1.0
    max_length: int = 128
    format_version: int = FORMAT_VERSION


SUPPORTED_ARCHITECTURE = "BertForSequenceClassification"


def is_plain_bert(raw_config: dict[str, Any]) -> bool:
    """True for plain BERT classifiers with the defaults :mod:`exportstance.model.encoder` implements
    (and :mod:`exportstance.model.export` exports); other models run through transformers."""
    return (
        raw_config.get("model_type") == "bert"
        and raw_config.get("architectures") == [SUPPORTED_ARCHITECTURE]
        and raw_config.get("hidden_act", "gelu") == "gelu"
        and raw_config.get("position_embedding_type", "absolute") == "absolute"
        and not raw_config.get("is_decoder", False)
        and raw_config.get("problem_type") in (None, "single_label_classification")
    )


class ModelNotFoundError(FileNotFoundError):
    """A model directory is missing; the message says how to build it."""


def read_meta(config: Any) -> ModelMeta:
    """The meta block of a transformers config object or of a raw config.json dict."""
    raw = (config.get(META_KEY) if isinstance(config, Mapping) else getattr(config, META_KEY, None)) or {}
    return ModelMeta(
        temperature=float(raw.get("temperature", 1.0)),
        max_length=int(raw.get("max_length", 128)),
        format_version=int(raw.get("format_version", FORMAT_VERSION)),
    )


def write_meta(config: Any, meta: ModelMeta) -> None:
    setattr(
        config,
        META_KEY,
        {"temperature": meta.temperature, "max_length": meta.max_length, "format_version": meta.format_version},
    )


def check_labels(id2label: Mapping[Any, str] | None, path: Path | str) -> None:
    """Refuse a classifier whose labels are not exactly ours (any order is fine)."""
    names = {str(v) for v in (id2label or {}).values()}
    if names != set(LABELS):
        raise ValueError(f"{path}: model labels {sorted(names)} are not {sorted(LABELS)}")


def read_config(path: Path | str) -> dict[str, Any]:
    """The raw config.json of a complete model dir; ModelNotFoundError without config or safetensors."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"no trained model at {path}")
    if not (path / "model.safetensors").is_file() and not any(path.glob("model-*.safetensors")):
        raise ModelNotFoundError(f"{path} has no model.safetensors (only safetensors weights are loaded)")
    return json.loads((path / "config.json").read_text(encoding="utf-8"))


def load_classifier(path: Path | str, dtype: Any = None):
    """Load (model, tokenizer, meta) from a trained-model dir, safetensors only, eval mode (fp32 unless ``dtype``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    read_config(path)  # a missing config or missing safetensors weights is a ModelNotFoundError
    model = AutoModelForSequenceClassification.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, dtype=dtype or torch.float32
    )
    model.eval()
    check_labels(model.config.id2label, path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return model, tokenizer, read_meta(model.config)


def save_classifier(model: Any, tokenizer: Any, path: Path | str, meta: ModelMeta) -> Path:
    """Write the model dir (safetensors, config with labels and meta, tokenizer)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_meta(model.config, meta)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
