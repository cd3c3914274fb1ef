"""The two baselines a user would try instead of fine-tuning, trained on the same train rows
(real-news rows weighted ``real_weight``, without the model's class tilt) as the model.

Both pick the logistic-regression C on the dev split, like the fine-tuned model picks its epoch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline

from ..model.inference import length_sorted_batches

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def _select_c(make, X_train, y_train, X_dev, y_dev, sample_weight=None, weight_key: str = "sample_weight") -> Any:
    best = None
    for c in C_GRID:
        clf = make(c).fit(X_train, y_train, **({weight_key: sample_weight} if sample_weight is not None else {}))
        f1 = f1_score(y_dev, clf.predict(X_dev), average="macro")
        if best is None or f1 > best[0]:
            best = (f1, clf)
    return best[1]


def tfidf_baseline(train: Sequence[str], y_train, dev: Sequence[str], y_dev, sample_weight=None) -> Pipeline:
    """Character n-grams (2-5, within word boundaries): robust to German compounds and inflection."""
    def make(c: float) -> Pipeline:
        return make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
            LogisticRegression(C=c, max_iter=3000, class_weight="balanced"),
        )
    return _select_c(make, list(train), y_train, list(dev), y_dev, sample_weight, "logisticregression__sample_weight")


class FrozenEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen encoder (e5 style, "query: " prefix)."""

    def __init__(self, model_dir: str, prefix: str = "query: ", max_length: int = 128, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.prefix, self.max_length, self.batch_size = prefix, max_length, batch_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer([self.prefix + t for t in texts], truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        out = np.zeros((len(ids), self.model.config.hidden_size), dtype=np.float32)
        for batch in length_sorted_batches([len(x) for x in ids], self.batch_size):
            padded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            hidden = self.model(**padded).last_hidden_state
            mask = padded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def embedding_baseline(encoder: FrozenEncoder, train: Sequence[str], y_train, dev: Sequence[str], y_dev,
                       sample_weight=None):
    """Logistic regression on frozen embeddings; returns a predict_proba-able callable on raw texts."""
    X_train, X_dev = encoder.encode(train), encoder.encode(dev)

    def make(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000, class_weight="balanced")

    clf = _select_c(make, X_train, y_train, X_dev, y_dev, sample_weight)
    return lambda texts: clf.predict_proba(encoder.encode(texts))
