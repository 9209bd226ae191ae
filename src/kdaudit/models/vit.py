"""A small Vision Transformer for ``N×C×H×W`` inputs (the conventions of :mod:`.vision`)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError
from .base import MODELS
from .checks import dropout_rate, image_dims, positive_float, positive_int


class Attention(nn.Module):
    """Multi-head self-attention: one ``qkv`` projection, softmax(q kᵀ/√d) v, output ``proj``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(n, t, d)
        return self.drop(self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClassToken(nn.Module):
    """Selects the class token: the ``N×D`` penultimate feature of the ViT."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class ViT(nn.Module):
    """Vision Transformer: non-overlapping patch embedding, class token, learned position
    embedding, pre-norm blocks, final LayerNorm, linear head on the class token."""

    def __init__(
        self,
        in_channels: int,
        spatial: tuple[int, int],
        num_classes: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        tokens = (spatial[0] // patch) * (spatial[1] // patch)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, hidden, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.pool = ClassToken()
        self.head = nn.Linear(dim, num_classes)
        self.feature_layers = (*(f"blocks.{i}" for i in range(depth)), "pool")
        # as timm's ViT: truncated normal (std 0.02) for embeddings and linear weights
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.drop(x + self.pos_embed))
        return self.head(self.pool(self.norm(x)))


@MODELS.register("vit")
def vit(
    input_shape: tuple[int, ...],
    num_classes: int,
    patch: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> nn.Module:
    """ViT; ``patch`` must divide H and W, ``heads`` must divide ``dim``; the MLP hidden size
    is ``round(dim × mlp_ratio)``."""
    c, h, w = image_dims("vit", input_shape)
    patch = positive_int("patch", patch)
    dim = positive_int("dim", dim)
    depth = positive_int("depth", depth)
    heads = positive_int("heads", heads)
    mlp_ratio = positive_float("mlp_ratio", mlp_ratio)
    dropout = dropout_rate(dropout)
    if h % patch or w % patch:
        raise SpecError(f"model.kwargs.patch: {patch} must divide the input height and width, got {h}×{w}")
    if dim % heads:
        raise SpecError(f"model.kwargs.dim: {dim} must be divisible by heads={heads}")
    hidden = max(1, int(round(dim * mlp_ratio)))
    return ViT(c, (h, w), num_classes, patch, dim, depth, heads, hidden, dropout)
