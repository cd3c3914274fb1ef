"""Training, calibration and evaluation on a tiny model and a tiny corpus (seconds, no network)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from exportstance.model.format import load_classifier
from exportstance.training.args import DEFAULT_CONFIG, TrainingArguments, parse_override
from exportstance.training.calibration import expected_calibration_error, fit_temperature, softmax

_SENTENCES = {
    "pro": ["Die Exportkontrollen müssen verschärft werden.", "Der Senator fordert ein Verbot der Chipverkäufe.",
            "Die Sperren wirken und bremsen Peking.", "Schmuggel muss hart bestraft werden."],
    "anti": ["Die Sperren schaden nur den eigenen Firmen.", "Nvidia kritisiert die Exportregeln scharf.",
             "Die Kontrollen sind wirkungslos.", "Peking wirft Washington Politisierung des Handels vor."],
    "neutral": ["Das Verbot gilt seit dem 17. Oktober.", "Nvidia meldete einen Umsatz von 57 Milliarden Dollar.",
                "Der Ausschuss tagt am Dienstag.", "ASML liefert Maschinen an Kunden in Asien."],
}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    rows = []
    for label, texts in _SENTENCES.items():
        for i, t in enumerate(texts):
            for split, suffix in (("train", ""), ("train", " Sagte er."), ("dev", " So hieß es."), ("test", " Heißt es.")):
                rows.append({"id": f"{label}{i}{split}{suffix}", "text": t + suffix, "label": label, "split": split})
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _args(tiny_base_dir, corpus, out, **kw) -> TrainingArguments:
    settings = dict(epochs=3, batch_size=8, max_length=32, learning_rate=1e-3, head_learning_rate=1e-3,
                    freeze_embeddings=False, freeze_layers=0, threads=1, real_data=None, precision="fp32")
    return TrainingArguments(base_model=str(tiny_base_dir), data=str(corpus), output_dir=str(out), **{**settings, **kw})


def test_default_config_is_complete_and_valid():
    args = TrainingArguments.from_toml(DEFAULT_CONFIG)
    assert args.base_model == "default" and args.max_train_samples is None
    assert args == TrainingArguments()  # the config file and the documented defaults say the same


def test_unknown_option_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[training]\nepochz = 3\n")
    with pytest.raises(ValueError, match="epochz"):
        TrainingArguments.from_toml(cfg)


def test_overrides_are_typed():
    assert parse_override("epochs=2") == ("epochs", 2.0)
    assert parse_override("freeze_embeddings=false") == ("freeze_embeddings", False)
    assert parse_override("max_train_samples=none") == ("max_train_samples", None)
    with pytest.raises(ValueError):
        parse_override("nope=1")


def test_temperature_scaling_recovers_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    t = fit_temperature(logits * 2.5, labels)  # logits 2.5x too sharp -> T ~ 2.5
    assert 2.2 < t < 2.8
    assert expected_calibration_error(softmax(logits * 2.5, t), labels) < expected_calibration_error(softmax(logits * 2.5), labels)


def test_ece_of_a_perfectly_calibrated_predictor_is_small():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(20000, 3)) * 2)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert expected_calibration_error(probs, labels) < 0.02


def test_train_is_deterministic_and_saves_a_pipeline_loadable_model(tiny_base_dir, tiny_corpus, tmp_path):
    from transformers import pipeline

    from exportstance.training.trainer import train

    r1 = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m1"), progress=False)
    r2 = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m2"), progress=False)
    assert (r1.dev_score, r1.best_epoch, r1.temperature) == (r2.dev_score, r2.best_epoch, r2.temperature)
    assert r1.temperature > 0 and r1.n_train == 24 and r1.n_dev == 12
    model, tokenizer, meta = load_classifier(r1.output_dir)
    assert meta.temperature == pytest.approx(r1.temperature) and meta.max_length == 32
    # the temperature belongs to the saved weights: refitting on their dev logits gives it back
    from exportstance.model.inference import batched_logits
    from exportstance.model.labels import LABEL2ID
    from exportstance.training.data import load_split

    dev = load_split(str(tiny_corpus), "dev")
    logits = batched_logits(model, tokenizer, [r["text"] for r in dev], 32).detach().numpy()
    labels = np.array([LABEL2ID[r["label"]] for r in dev])
    assert fit_temperature(logits, labels) == pytest.approx(r1.temperature, rel=1e-6)
    out = pipeline("text-classification", model=str(r1.output_dir))("Die Sperren wirken.")
    assert out[0]["label"] in ("pro", "anti", "neutral")
    log = [json.loads(line) for line in (r1.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3]


def test_eval_only_after_the_last_epoch_keeps_the_final_weights(tiny_base_dir, tiny_corpus, tmp_path):
    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m", eval_every_epoch=False, select_metric="accuracy"),
              progress=False)
    log = [json.loads(line) for line in (r.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3]
    assert ["dev_synthetic_accuracy" in e for e in log] == [False, False, True]
    assert r.best_epoch == 3 and r.select_metric == "accuracy"
    assert r.dev_score == pytest.approx(log[-1]["dev_synthetic_accuracy"], abs=1e-4)


def test_unknown_select_metric_is_refused():
    with pytest.raises(ValueError, match="select_metric must be one of macro_f1, accuracy"):
        TrainingArguments(select_metric="f1")


def test_tiny_model_learns_the_training_set(tiny_base_dir, tmp_path):
    """The loop really fits: with dev = train, a 2-layer random BERT gets well above the macro-F1 of a
    constant predictor (0.17) or of a loop that never steps the optimiser."""
    from exportstance.training.trainer import train

    rows = [{"text": t, "label": label, "split": split}
            for label, texts in _SENTENCES.items() for t in texts for split in ("train", "dev")]
    corpus = tmp_path / "fit.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    r = train(_args(tiny_base_dir, corpus, tmp_path / "m", epochs=30, batch_size=4, learning_rate=3e-4,
                    head_learning_rate=3e-3, warmup_ratio=0.0), progress=False)
    assert r.dev_score > 0.45


def test_evaluate_reports_model_and_baselines(tiny_base_dir, tiny_corpus, tmp_path):
    from exportstance.training.evaluate import evaluate, format_results
    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m"), progress=False)
    res = evaluate(r.output_dir, [f"{tiny_corpus}:test"], tiny_corpus, base_model=str(tiny_base_dir))
    systems = res["sets"]["corpus:test"]
    assert set(systems) == {"exportstance", "tfidf-char+logreg", "frozen-e5+logreg"}
    m = systems["exportstance"]
    assert m["n"] == 12 and sum(map(sum, m["confusion"])) == 12 and 0 <= m["macro_f1"] <= 1
    assert (r.output_dir / "eval" / "confusion_corpus_test.png").stat().st_size > 1000
    assert (r.output_dir / "eval" / "reliability_corpus_test.png").is_file()
    assert "| exportstance | 12 |" in format_results(res)
    again = evaluate(r.output_dir, [f"{tiny_corpus}:test"], tiny_corpus, base_model=str(tiny_base_dir))
    assert again["sets"] == res["sets"]
    from exportstance.training.model_card import write_model_card

    card = write_model_card(r, _args(tiny_base_dir, tiny_corpus, tmp_path / "m"), res).read_text(encoding="utf-8")
    assert f"- Chosen epoch: {r.best_epoch} (best on synthetic dev), dev macro_f1: synthetic {r.dev_score:.3f}" in card
    assert "| exportstance | 12 |" in card and f"`exportstance evaluate --model {r.output_dir}`" in card


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    from exportstance.training.trainer import LengthGroupedBatches

    lengths = [(i * 37) % 50 + 1 for i in range(230)]
    sampler = LengthGroupedBatches(lengths, batch_size=16, seed=0)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(230)) and len(epoch) == len(sampler)
    assert first != second  # reshuffled between epochs
    assert list(LengthGroupedBatches(lengths, 16, seed=0)) == first  # and repeatable from the seed


def test_evaluate_cli_on_a_model_trained_elsewhere(tiny_model_dir, tiny_base_dir, tiny_corpus, tmp_path, capsys):
    from exportstance.cli import main

    assert not (tiny_model_dir / "training_args.json").exists()
    code = main(["evaluate", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus),
                 "--data", f"{tiny_corpus}:test", "--base-model", str(tiny_base_dir), "--out", str(tmp_path)])
    assert code == 0
    assert "| exportstance | 12 |" in capsys.readouterr().out
    assert (tmp_path / "eval_results.json").is_file()


def test_freeze_layers_keeps_the_lowest_layers_unchanged(tiny_base_dir, tiny_corpus, tmp_path):
    """freeze_layers=1 trains the upper layer but leaves embeddings and layer 0 bit-identical to the base."""
    from safetensors.torch import load_file

    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1, freeze_layers=1), progress=False)
    base = {k.removeprefix("bert."): v for k, v in load_file(tiny_base_dir / "model.safetensors").items()}
    tuned = {k.removeprefix("bert."): v for k, v in load_file(r.output_dir / "model.safetensors").items()}
    name = "encoder.layer.{}.output.dense.weight"
    assert (tuned[name.format(0)] == base[name.format(0)]).all()
    assert (tuned["embeddings.position_embeddings.weight"] == base["embeddings.position_embeddings.weight"]).all()
    assert not (tuned[name.format(1)] == base[name.format(1)]).all()
    with pytest.raises(ValueError, match="has 2 layers"):
        train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m2", freeze_layers=3), progress=False)


def test_if_missing_keeps_an_up_to_date_model_and_rebuilds_a_stale_one(tiny_base_dir, tiny_corpus, tmp_path):
    from exportstance.training.cli import stale_reason
    from exportstance.training.trainer import train

    args = _args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1)
    assert "no model" in stale_reason(tmp_path / "m", args)
    r = train(args, progress=False)
    assert stale_reason(r.output_dir, args) is None
    assert "other arguments" in stale_reason(r.output_dir, _args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=2))
    changed = tmp_path / "corpus.jsonl"
    changed.write_bytes(tiny_corpus.read_bytes() + b"\n")
    assert "another version" in stale_reason(r.output_dir, _args(tiny_base_dir, changed, tmp_path / "m", epochs=1))


# --- training with a real-news corpus beside the synthetic one --------------------------------------

@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory):
    """A tiny real-news-style corpus: passages of statements in order, split by passage."""
    rows = []
    for split in ("train", "dev", "test"):
        for p in range(3):
            texts = [("neutral", "Nvidia meldete Zahlen."), ("pro", "Die Sperren wirken, sagt er."),
                     ("anti", "Die Kontrollen schaden nur."), ("neutral", "Das Verbot gilt seit Oktober.")]
            for pos, (label, t) in enumerate(texts[p:] + texts[:p]):
                rows.append({"id": f"r-{split}{p}-{pos}", "text": t, "label": label, "split": split,
                             "passage": f"{split}{p}", "position": pos})
    path = tmp_path_factory.mktemp("real") / "realnews.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_real_news_rows_are_weighted_selected_on_and_calibrated_on(tiny_base_dir, tiny_corpus, tiny_real, tmp_path):
    from exportstance.model.inference import batched_logits
    from exportstance.model.labels import LABEL2ID
    from exportstance.training.data import load_split
    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m", real_data=str(tiny_real), real_weight=3.0), progress=False)
    assert (r.n_train, r.n_train_real, r.n_dev_real, r.selected_on) == (36, 12, 12, "real")
    assert r.calibration_n == 12 and set(r.dev_scores) == {"synthetic", "real"}
    log = [json.loads(line) for line in (r.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert all(e["selection_score"] == e["dev_real_macro_f1"] for e in log)
    assert r.dev_score == pytest.approx(max(e["dev_real_macro_f1"] for e in log), abs=1e-4)
    # the temperature is the one for the real-news dev logits of the saved weights
    model, tokenizer, _ = load_classifier(r.output_dir)
    dev = load_split(str(tiny_real), "dev")
    logits = batched_logits(model, tokenizer, [x["text"] for x in dev], 32).numpy()
    assert fit_temperature(logits, np.array([LABEL2ID[x["label"]] for x in dev])) == pytest.approx(r.temperature, rel=1e-6)
    # the weight really enters the loss, and "mean" selection averages both dev splits
    other = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m2", real_data=str(tiny_real), real_weight=1.0,
                        select_dev="mean", calibrate_on="all"), progress=False)
    log2 = [json.loads(line) for line in (other.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["train_loss"] for e in log2] != [e["train_loss"] for e in log]
    assert other.selected_on == "real+synthetic" and other.calibration_n == 24
    assert all(e["selection_score"] == pytest.approx((e["dev_real_macro_f1"] + e["dev_synthetic_macro_f1"]) / 2, abs=1e-4)
               for e in log2)


def test_a_changed_real_news_file_makes_the_model_stale(tiny_base_dir, tiny_corpus, tiny_real, tmp_path):
    from exportstance.training.cli import stale_reason
    from exportstance.training.trainer import train

    args = _args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1, real_data=str(tiny_real))
    r = train(args, progress=False)
    assert stale_reason(r.output_dir, args) is None
    changed = tmp_path / "real.jsonl"
    changed.write_bytes(tiny_real.read_bytes() + b"\n")
    reason = stale_reason(r.output_dir, _args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1, real_data=str(changed)))
    assert "another version" in reason and "real.jsonl" in reason


def test_synthetic_fraction_draws_a_fresh_share_each_epoch():
    from exportstance.training.trainer import LengthGroupedBatches

    lengths = [i % 7 + 1 for i in range(100)]
    sampler = LengthGroupedBatches(lengths, 8, seed=0, sampled=list(range(80)), fraction=0.5)
    epochs = [sorted(i for b in sampler for i in b) for _ in range(2)]
    for seen in epochs:
        assert set(range(80, 100)) <= set(seen) and len(seen) == 60 and len(set(seen)) == 60
    assert epochs[0] != epochs[1] and len(sampler) == 8


def test_training_options_are_checked():
    from exportstance.training.trainer import resolve_precision
    from exportstance.model.inference import has_native_bf16

    for bad in (dict(select_dev="x"), dict(calibrate_on="x"), dict(precision="fp16"),
                dict(synthetic_fraction=0.0), dict(real_weight=0)):
        with pytest.raises(ValueError):
            TrainingArguments(**bad)
    assert TrainingArguments(real_data="").real_data is None
    assert resolve_precision("auto") == ("bf16" if has_native_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32"


def test_bf16_training_runs_and_saves_fp32_weights(tiny_base_dir, tiny_corpus, tmp_path):
    from safetensors.torch import load_file

    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1, precision="bf16"), progress=False)
    assert r.precision == "bf16"
    weights = load_file(r.output_dir / "model.safetensors")
    assert {str(v.dtype) for v in weights.values()} == {"torch.float32"}


def test_article_view_compares_gold_and_predicted_summaries():
    from exportstance.training.evaluate import article_view

    P, A, N = 0, 1, 2
    passages = ["a"] * 4 + ["b"] * 3
    gold = np.array([P, P, N, N, N, N, N])
    pred = np.array([P, P, A, N, N, P, N])
    v = article_view(passages, gold, pred)
    # a: gold pro (index 1.0), predicted pro 2:1 (index 1/3); b: gold neutral (no index = 0), predicted 1 pro
    assert v["n_passages"] == 2 and v["dominant_agreement"] == 1.0
    assert v["stance_index_mae"] == pytest.approx(((1 - 1 / 3) + 1.0) / 2, abs=1e-4)
    assert (v["no_stance_statements"], v["no_stance_given_stance"]) == (5, 2)
    assert (v["passages_without_stance"], v["passages_without_stance_given_stance"]) == (1, 1)


def test_evaluate_gives_the_article_view_for_real_news_passages(tiny_base_dir, tiny_corpus, tiny_real, tmp_path):
    from exportstance.training.evaluate import default_eval_specs, evaluate, format_results
    from exportstance.training.trainer import train

    r = train(_args(tiny_base_dir, tiny_corpus, tmp_path / "m", epochs=1, real_data=str(tiny_real)), progress=False)
    specs = default_eval_specs(tiny_corpus, tiny_real)
    assert specs[:2] == [f"{tiny_corpus}:test", f"{tiny_real}:test"]
    res = evaluate(r.output_dir, specs[:2], tiny_corpus, base_model=str(tiny_base_dir), real_data=tiny_real, real_weight=3.0)
    real = res["sets"]["realnews:test"]
    assert real["exportstance"]["articles"]["n_passages"] == 3 and "articles" in real["tfidf-char+logreg"]
    assert "articles" not in res["sets"]["corpus:test"]["exportstance"]
    assert "Article-level view (3 passages" in format_results(res)


def test_real_row_weights_keep_their_mean_and_tilt_to_rare_labels():
    from exportstance.training.trainer import real_row_weights

    rows = [{"label": "neutral"}] * 8 + [{"label": "pro"}] * 2
    flat = real_row_weights(rows, 3.0, 0.0)
    assert flat == pytest.approx([3.0] * 10)
    balanced = real_row_weights(rows, 3.0, 1.0)
    assert sum(balanced) / 10 == pytest.approx(3.0)
    assert sum(balanced[8:]) == pytest.approx(sum(balanced[:8]))  # each label carries the same mass
    half = real_row_weights(rows, 3.0, 0.5)
    assert half[0] < flat[0] < half[-1] < balanced[-1]
    with pytest.raises(ValueError):
        TrainingArguments(real_class_balance=-1)
