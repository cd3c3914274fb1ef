"""The trained-model format round-trips and is what transformers.pipeline expects."""
from __future__ import annotations

import json

import pytest

from exportstance.model.format import ModelNotFoundError, load_classifier
from exportstance.model.labels import LABELS


def test_tiny_model_loads_with_meta(tiny_model_dir):
    model, tokenizer, meta = load_classifier(tiny_model_dir)
    assert set(model.config.id2label.values()) == set(LABELS)
    assert meta.temperature == 1.5 and meta.max_length == 32
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["exportstance"]["temperature"] == 1.5
    assert tokenizer("Die Sperren wirken.")["input_ids"][0] == tokenizer.cls_token_id


def test_pipeline_loads_model_dir(tiny_model_dir):
    from transformers import pipeline

    out = pipeline("text-classification", model=str(tiny_model_dir))("Peking kritisiert die Sperren.")
    assert out[0]["label"] in LABELS


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_classifier(tmp_path / "nope")


def test_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError):
        load_classifier(d)
