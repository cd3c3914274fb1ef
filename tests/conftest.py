"""Shared fixtures: a tiny BERT + unigram tokenizer built in the test session (no network, seconds)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

_TEXT = """Die US-Regierung verschärft die Exportkontrollen für KI-Chips nach China.
Nvidia darf den H20 wieder verkaufen, muss aber 15 Prozent der Umsätze abgeben.
Kritiker sagen, die Sperren schaden amerikanischen Firmen und helfen Huawei.
Der Senator fordert, Schmuggel über Singapur und Malaysia härter zu verfolgen.
Peking wirft Washington vor, den Handel zu politisieren.
Das Verbot gilt seit dem 17. Oktober, teilte das Handelsministerium mit.
ASML darf bestimmte Lithografie-Maschinen nicht mehr an chinesische Kunden liefern.
Z. B. meldete Dr. Müller am 28. November höhere Umsätze in Europa und Asien.
"""


def build_tiny_tokenizer(out: Path):
    """A real fast unigram tokenizer with XLM-R special tokens, trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(_TEXT.splitlines() * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=64,
    )
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: Path, *, classifier: bool, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT (random weights) in the same on-disk format as the real models."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from exportstance.model.format import ModelMeta, save_classifier
    from exportstance.model.labels import ID2LABEL, LABEL2ID

    tokenizer = build_tiny_tokenizer(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=1,
        id2label=ID2LABEL, label2id=LABEL2ID,
    )
    if classifier:
        save_classifier(BertForSequenceClassification(config), tokenizer, out, ModelMeta(temperature=1.5, max_length=32))
    else:
        BertModel(config, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-clf"), classifier=True)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), classifier=False)


# --- checks shared by the corpus tests (synthetic and real-news) ---------------------------------

def assert_groups_within_one_split(rows) -> None:
    splits_of_group: dict[str, set[str]] = {}
    for r in rows:
        splits_of_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())


def assert_no_near_duplicates_across_splits(rows, min_words: int = 0) -> None:
    from exportstance.training.data import SPLITS, near_duplicates

    by_split = {s: [r["text"] for r in rows if r["split"] == s and len(r["text"].split()) >= min_words] for s in SPLITS}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        pairs = near_duplicates(by_split[a], by_split[b], threshold=0.5)
        assert not pairs, [(by_split[a][i], by_split[b][j], jac) for i, j, jac in pairs[:5]]


def assert_no_overlap_with_evaluation_only_texts(texts) -> None:
    from exportstance.training.data import iter_texts_of_dir, near_duplicates

    held_out = list(iter_texts_of_dir(SHARED / "eval")) + list(iter_texts_of_dir(SHARED / "seeds"))
    assert held_out
    pairs = near_duplicates(held_out, texts, threshold=0.5)
    assert not pairs, [(held_out[i], texts[j], jac) for i, j, jac in pairs[:5]]
