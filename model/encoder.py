"""A transformers-free BERT sequence classifier for inference, loaded from our HF model dirs.

Why: importing ``transformers``' BERT modelling code costs ~4 s per process on the target 2-core
CPU, more than everything else in a cold start together (torch ~2 s, tokenizer ~1 s, weights
~0.1 s). Inference of a BERT classifier is a few dozen lines of plain torch, so the serving path
reads ``config.json``/``model.safetensors``/``tokenizer.json`` itself. Same weights, same
parameter names (``BertForSequenceClassification``'s state dict loads with ``strict=True``), same
maths (post-LayerNorm blocks, erf GELU, tanh pooler); the tests compare its logits with
transformers'. One shortcut: the last layer computes [CLS] only, the one position the pooler reads. Other architectures (any ``--base-model``) fall back to transformers in serve/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Which configs this module implements is model.format.is_plain_bert (torch-free, so serving can
# choose an engine before anything heavy is imported).
_MASKED = -10000.0


@dataclass(frozen=True)
class BertConfig:
    """The fields of a transformers ``BertConfig`` that inference needs (plus the raw dict)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    id2label: dict[int, str]
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertConfig:
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            max_position_embeddings=raw["max_position_embeddings"],
            type_vocab_size=raw.get("type_vocab_size", 2),
            layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
            id2label={int(k): str(v) for k, v in (raw.get("id2label") or {}).items()},
            raw=raw,
        )

    def __getattr__(self, name: str) -> Any:
        # Other config.json keys (e.g. the "exportstance" meta block) read like transformers' config.
        try:
            return self.__dict__["raw"][name]
        except KeyError:
            raise AttributeError(name) from None


def _uninitialised_embedding(rows: int, dim: int) -> nn.Embedding:
    # Weights are assigned from the checkpoint; the default normal_ init (even on the meta device,
    # where it runs torch's Python reference kernels) costs seconds for a 250k-row table.
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = _uninitialised_embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = _uninitialised_embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _uninitialised_embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.from_words(self.word_embeddings(input_ids))

    def from_words(self, words: torch.Tensor) -> torch.Tensor:
        """Add position and token-type embeddings to looked-up word embeddings (batch, tokens, hidden)."""
        positions = torch.arange(words.shape[1], device=words.device)
        return self.LayerNorm(words + self.position_embeddings(positions) + self.token_type_embeddings.weight[0])


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        b, d = x.shape[0], x.shape[2]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        # Plain matmul-softmax-matmul: for the short sequences of statements (~40 tokens) it was
        # faster than torch's fused CPU kernel (F.scaled_dot_product_attention) on the 2-core target.
        q = heads(self.query(queries)) * (d // self.heads) ** -0.5
        scores = q @ heads(self.key(x)).transpose(-1, -2) + mask
        out = torch.softmax(scores, dim=-1) @ heads(self.value(x))
        return out.transpose(1, 2).reshape(b, queries.shape[1], d)


class _Output(nn.Module):
    """Dense + residual + LayerNorm (BERT's post-LN block end)."""

    def __init__(self, n_in: int, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Output(c.hidden_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask, queries), queries)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Output(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """``first_only``: compute the output for position 0 ([CLS]) only; all tokens are still attended."""
        x = self.attention(x, mask, x[:, :1] if first_only else x)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class _Bert(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.pooler = _Pooler(c)


class BertClassifier(nn.Module):
    """``BertForSequenceClassification`` for inference: ``forward`` returns logits (batch, labels)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = _Bert(config)
        self.classifier = nn.Linear(config.hidden_size, len(config.id2label))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.from_word_embeddings(self.bert.embeddings.word_embeddings(input_ids), attention_mask)

    def from_word_embeddings(self, words: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from looked-up word embeddings: what the exported graphs compute (see model.export)."""
        x = self.bert.embeddings.from_words(words)
        # (batch, 1, 1, keys) additive: 0 = attend, -10000 = padding (BERT's original constant: exp
        # underflows to exactly 0 as with the dtype's min, but it stays finite in bf16, where fp32's
        # min does not fit, and is plain arithmetic in the exported graph). Padded queries compute
        # values that are never read.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * _MASKED
        *lower, last = self.bert.encoder.layer
        for layer in lower:
            x = layer(x, mask)
        # The pooler reads [CLS] only, so the last layer skips every other position's output (~7% less work).
        x = last(x, mask, first_only=True)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(pooled)


def load_bert_classifier(path: Path | str, raw_config: dict[str, Any]) -> BertClassifier:
    """Build the module without initialising weights (meta device) and assign the safetensors tensors;
    ``raw_config`` is the dir's config.json (``model.format.read_config``)."""
    from safetensors.torch import load_file

    path = Path(path)
    config = BertConfig.from_dict(raw_config)
    with torch.device("meta"):
        model = BertClassifier(config)
    state = load_file(path / "model.safetensors")
    state = {k: v.float() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)  # a missing or extra tensor is an error
    return model.eval()


class FromWordEmbeddings(nn.Module):
    """``BertClassifier.from_word_embeddings`` as a module's forward, for ``torch.onnx.export``."""

    def __init__(self, model: BertClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, word_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.from_word_embeddings(word_embeds, attention_mask)
