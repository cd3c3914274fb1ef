"""StanceClassifier: shapes, calibration, order after length sorting, windowing, input errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from exportstance.model.format import ModelNotFoundError, load_classifier
from exportstance.model.labels import LABELS
from exportstance.serve.classifier import Prediction, StanceClassifier

TEXTS = [
    "Die Sperren wirken.",
    "Nvidia darf den H20 wieder verkaufen, muss aber 15 Prozent der Umsätze abgeben.",
    "",
    "Peking wirft Washington vor, den Handel zu politisieren.",
    "Kritiker sagen, die Sperren schaden amerikanischen Firmen und helfen Huawei.",
    "Gut.",
]


@pytest.fixture(scope="module")
def clf(tiny_model_dir) -> StanceClassifier:
    """The tiny model with a sharpened head, so different texts get clearly different scores.

    One thread: the tiny model gains nothing from more, and a busy machine makes them spin."""
    model, tokenizer, meta = load_classifier(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 5.0)
    return StanceClassifier(model, tokenizer, meta, batch_size=4, threads=1)


def test_predict_and_proba_shapes(clf):
    predictions = clf.predict(TEXTS)
    probs = clf.predict_proba(TEXTS)
    assert clf.classes_ == LABELS
    assert probs.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    for p, row in zip(predictions, probs):
        assert isinstance(p, Prediction)
        assert list(p.scores) == list(LABELS)
        np.testing.assert_allclose(list(p.scores.values()), row)
        assert p.label == LABELS[int(row.argmax())] and p.confidence == max(p.scores.values())
        assert p.n_windows >= 1
    assert predictions[0].n_windows == 1


def test_temperature_is_applied(clf):
    with torch.inference_mode():
        ids = torch.tensor([clf.tokenizer.encode(TEXTS[0]).ids])
        logits = clf.model(input_ids=ids).logits[0, clf._columns].double()
    expected = torch.softmax(logits / clf.meta.temperature, dim=-1).numpy()
    np.testing.assert_allclose(clf.predict_proba(TEXTS[:1])[0], expected, atol=1e-5)


def test_order_is_restored_after_length_sorting(clf):
    batched = clf.predict_proba(TEXTS * 3)
    one_by_one = np.vstack([clf.predict_proba([t]) for t in TEXTS * 3])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3  # the texts really score differently


def test_long_text_is_windowed_not_truncated(clf):
    head, tail = "Die Sperren wirken. " * 30, "Peking protestiert scharf."
    long, truncated = head + tail, head
    (p,) = clf.predict([long])
    assert p.n_windows > 1
    n_tokens = len(clf.tokenizer.encode(long, add_special_tokens=False).ids)
    assert n_tokens > clf.meta.max_length
    # the last window always ends at the text's end, so the tail changes the result
    assert not np.allclose(clf.predict_proba([long]), clf.predict_proba([truncated]))
    assert clf.predict([long, "Gut."])[0].n_windows == p.n_windows


def test_load_uses_the_plain_torch_bert_and_matches_transformers(tiny_model_dir):
    """The transformers-free fast path gives transformers' probabilities (same weights, same maths)."""
    from exportstance.model.encoder import BertClassifier

    fast = StanceClassifier.load(tiny_model_dir, backend="torch", threads=1)
    assert isinstance(fast.model, BertClassifier)
    model, tokenizer, meta = load_classifier(tiny_model_dir)
    reference = StanceClassifier(model, tokenizer, meta, threads=1)
    texts = TEXTS + ["Die Sperren wirken. " * 30]  # padding in a batch and a windowed text
    np.testing.assert_allclose(fast.predict_proba(texts), reference.predict_proba(texts), atol=1e-6)
    assert fast._prefix == reference._prefix and fast._suffix == reference._suffix


def test_plain_bert_refuses_other_configs(tiny_model_dir):
    from exportstance.model.format import is_plain_bert as is_supported
    from exportstance.model.format import read_config

    raw = read_config(tiny_model_dir)
    assert is_supported(raw)
    assert not is_supported({**raw, "model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"]})
    assert not is_supported({**raw, "hidden_act": "relu"})


def test_serving_does_not_import_transformers(tiny_model_dir):
    code = (
        "import sys; from exportstance import StanceClassifier; "
        f"StanceClassifier.load({str(tiny_model_dir)!r}, threads=1).predict(['Die Sperren wirken.']); "
        "bad = [m for m in sys.modules if m.startswith('transformers')]; assert not bad, bad[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_non_str_item_is_a_type_error_naming_its_index(clf):
    with pytest.raises(TypeError, match="position 2 is NoneType"):
        clf.predict(["a", "b", None])
    with pytest.raises(TypeError, match="position 0 is int"):
        clf.predict_proba([3])
    with pytest.raises(TypeError, match="single str"):
        clf.predict("Die Sperren wirken.")


def test_empty_input_gives_empty_output(clf):
    assert clf.predict([]) == []
    assert clf.predict_proba([]).shape == (0, 3)


def test_threads_are_restored(clf):
    before = torch.get_num_threads()
    clf.predict(TEXTS)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_other_precisions_run(tiny_model_dir, precision):
    with pytest.warns(RuntimeWarning) if precision == "bf16" and not _fast_bf16() else _nothing():
        clf = StanceClassifier.load(tiny_model_dir, precision=precision, threads=1)
    probs = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, StanceClassifier.load(tiny_model_dir, threads=1).predict_proba(TEXTS), atol=0.05)


def test_int8_quantises_the_encoder_but_not_the_head(tiny_model_dir):
    model = StanceClassifier.load(tiny_model_dir, backend="torch", precision="int8", threads=1).model
    assert type(model.classifier) is torch.nn.Linear and type(model.bert.pooler.dense) is torch.nn.Linear
    assert type(model.bert.encoder.layer[0].output.dense) is not torch.nn.Linear


def test_bad_options_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="precision"):
        StanceClassifier.load(tiny_model_dir, precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        StanceClassifier.load(tiny_model_dir, batch_size=0)


def test_missing_model_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTSTANCE_MODEL", str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="make demo"):
        StanceClassifier.load()
    with pytest.raises(ModelNotFoundError, match="exportstance train"):
        StanceClassifier.load(tmp_path)


def test_default_model_dir_is_used(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("EXPORTSTANCE_MODEL", str(tiny_model_dir))
    assert StanceClassifier.load(threads=1).predict(["Gut."])[0].label in LABELS


def _fast_bf16() -> bool:
    from exportstance.model.inference import has_native_bf16

    return has_native_bf16()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
