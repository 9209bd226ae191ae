"""Sequence architectures: an LSTM classifier and a small GPT-style causal transformer.

Token inputs are int64 tensors N×L padded at the end of each row with ``pad_id``; a row's
length is one past its last non-pad position (0 is treated as 1, so an all-padding row reads
position 0 instead of failing). Both models classify from a pooled vector exposed as the
``pooled`` module, so a forward hook on it reads the penultimate representation.
"""

from __future__ import annotations

import math
import numbers
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import InputError, SpecError
from .base import MODELS

POOLS = ("last", "mean")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SpecError(f"model.kwargs.{name}: must be a positive integer, got {value!r}")
    return int(value)


def _dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= cast(float, value) < 1.0:
        raise SpecError(f"model.kwargs.dropout: must be a number in [0, 1), got {value!r}")
    return float(value)


def _vocab(model: str, vocab_size: object, pad_id: object) -> tuple[int, int]:
    """Validate the data-provided vocabulary (an InputError: it comes from the dataset)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 1:
        raise InputError(f"model {model!r}: the dataset's vocab_size must be a positive integer, got {vocab_size!r}")
    size = cast(int, vocab_size)
    if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral) or not 0 <= cast(int, pad_id) < size:
        raise InputError(f"model {model!r}: the dataset's pad_id must lie in [0, {vocab_size}), got {pad_id!r}")
    return int(vocab_size), int(pad_id)


def token_lengths(x: torch.Tensor, pad_id: int) -> torch.Tensor:
    """One past the last non-pad position of each row, at least 1 (int64, same device)."""
    pos = torch.arange(1, x.shape[1] + 1, device=x.device)
    return ((x != pad_id) * pos).amax(dim=1).clamp_min(1)


def _check_tokens(model: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise SpecError(f"model {model!r} needs int64 token ids N×L, got a {x.dtype} tensor of shape {tuple(x.shape)}")


class LSTMClassifier(nn.Module):
    """Embedding (tokens) or per-frame linear projection (float frames), LSTM, pooling, linear head."""

    def __init__(
        self,
        num_classes: int,
        *,
        vocab_size: int | None,
        pad_id: int,
        n_features: int,
        embed: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        pool: str,
    ) -> None:
        super().__init__()
        self.tokens = vocab_size is not None
        self.pad_id = pad_id
        self.n_features = n_features
        self.pool = pool
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, embed, padding_idx=pad_id)
        else:
            self.proj = nn.Linear(n_features, embed)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embed,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.pooled = nn.Identity()
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)
        # the per-position input vectors, then the pooled sequence representation
        self.feature_layers = ("embed" if self.tokens else "proj", "pooled")

    def _final_state(self, h_n: torch.Tensor) -> torch.Tensor:
        """Top layer's last hidden state, both directions concatenated when bidirectional."""
        if self.lstm.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)
        return h_n[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            _check_tokens("lstm", x)
            lengths = token_lengths(x, self.pad_id)
            seq = self.drop(self.embed(x))
            packed = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h_n, _) = self.lstm(packed)
            if self.pool == "last":
                feat = self._final_state(h_n)
            else:
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
                feat = out.sum(dim=1) / lengths.unsqueeze(1).to(out.dtype)
        else:
            rank_ok = x.dim() == 3 or (x.dim() == 4 and x.shape[1] == 1)
            if not x.is_floating_point() or not rank_ok or x.shape[-2] != self.n_features:
                raise SpecError(
                    f"model 'lstm' needs float frames N×{self.n_features}×T or N×1×{self.n_features}×T "
                    f"(time last), got a {x.dtype} tensor of shape {tuple(x.shape)}"
                )
            frames = x.reshape(x.shape[0], self.n_features, x.shape[-1]).transpose(1, 2)
            out, (h_n, _) = self.lstm(self.drop(self.proj(frames)))
            feat = self._final_state(h_n) if self.pool == "last" else out.mean(dim=1)
        return self.head(self.pooled(feat))


@MODELS.register("lstm")
def lstm(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = None,
    pad_id: int = 0,
    embed: int = 64,
    hidden: int = 128,
    layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    pool: str = "last",
) -> nn.Module:
    """LSTM over tokens (input_shape (L,), vocab from the data) or float frames F×T / 1×F×T."""
    shape = tuple(input_shape)
    if vocab_size is not None:
        vocab_size, pad_id = _vocab("lstm", vocab_size, pad_id)
        if len(shape) != 1:
            raise SpecError(
                f"model 'lstm' with a vocabulary needs token ids of shape (L,), got inputs of shape {shape}"
            )
        n_features = 0
    elif len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
        n_features = int(shape[-2])
    else:
        raise SpecError(
            f"model 'lstm' needs token inputs (a dataset that provides vocab_size) or float frames "
            f"F×T or 1×F×T with time last, got inputs of shape {shape}"
        )
    if not isinstance(bidirectional, bool):
        raise SpecError(f"model.kwargs.bidirectional: must be true or false, got {bidirectional!r}")
    if pool not in POOLS:
        raise SpecError(f"model.kwargs.pool: must be one of {', '.join(POOLS)}, got {pool!r}")
    return LSTMClassifier(
        num_classes,
        vocab_size=vocab_size,
        pad_id=int(pad_id),
        n_features=n_features,
        embed=_positive_int("embed", embed),
        hidden=_positive_int("hidden", hidden),
        layers=_positive_int("layers", layers),
        bidirectional=bidirectional,
        dropout=_dropout(dropout),
        pool=pool,
    )


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), allowed))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPTClassifier(nn.Module):
    """Token + learned position embeddings, causal blocks, final LayerNorm, head on the last token.

    Attention: query i sees keys j <= i that are not padding, and always itself, so no row
    of the softmax is empty (an all-padding input gives finite logits).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        vocab_size: int,
        pad_id: int,
        max_len: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.max_len = max_len
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_hidden, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pooled = nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        self.feature_layers = tuple(f"blocks.{i}" for i in range(depth)) + ("pooled",)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """GPT-2 style: N(0, 0.02) weights, zero biases, residual projections scaled by depth."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for block in cast(list[Block], list(self.blocks)):
            for m in (block.attn.proj, cast(nn.Linear, block.mlp[2])):
                nn.init.normal_(m.weight, std=0.02 / math.sqrt(2 * depth))

    def attention_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean N×1×L×L mask, True where query i may attend to key j."""
        length = x.shape[1]
        idx = torch.arange(length, device=x.device)
        causal = idx[None, :] <= idx[:, None]
        keys = (x != self.pad_id)[:, None, :] | torch.eye(length, dtype=torch.bool, device=x.device)
        return (causal & keys).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens("gpt", x)
        n, length = x.shape
        if length > self.max_len:
            raise SpecError(
                f"model 'gpt' was built for sequences of at most {self.max_len} tokens, got {length}; "
                "set model.kwargs.max_len"
            )
        allowed = self.attention_mask(x)
        h = self.drop(self.tok_embed(x) + self.pos_embed(torch.arange(length, device=x.device)))
        for block in self.blocks:
            h = block(h, allowed)
        h = self.norm(h)
        last = token_lengths(x, self.pad_id) - 1
        return self.head(self.pooled(h[torch.arange(n, device=x.device), last]))


@MODELS.register("gpt")
def gpt(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int,
    pad_id: int = 0,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    max_len: int | None = None,
) -> nn.Module:
    """Causal transformer over token ids of shape (L,); ``max_len`` defaults to L."""
    shape = tuple(input_shape)
    vocab_size, pad_id = _vocab("gpt", vocab_size, pad_id)
    if len(shape) != 1:
        raise SpecError(f"model 'gpt' needs token ids of shape (L,), got inputs of shape {shape}")
    dim = _positive_int("dim", dim)
    heads = _positive_int("heads", heads)
    if dim % heads:
        raise SpecError(f"model.kwargs.dim: {dim} is not divisible by heads={heads}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, numbers.Real) or int(dim * mlp_ratio) < 1:
        raise SpecError(f"model.kwargs.mlp_ratio: must be a positive number (dim*mlp_ratio >= 1), got {mlp_ratio!r}")
    max_len = shape[0] if max_len is None else _positive_int("max_len", max_len)
    if max_len < shape[0]:
        raise SpecError(f"model.kwargs.max_len: {max_len} is shorter than the inputs (length {shape[0]})")
    return GPTClassifier(
        num_classes,
        vocab_size=vocab_size,
        pad_id=pad_id,
        max_len=int(max_len),
        dim=dim,
        depth=_positive_int("depth", depth),
        heads=heads,
        mlp_hidden=int(dim * mlp_ratio),
        dropout=_dropout(dropout),
    )
