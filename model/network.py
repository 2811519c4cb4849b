"""The SpeechFlow network: a Transformer encoder over mel frames that predicts the flow's velocity.

Voicebox/SpeechFlow layout: Linear(concat(x_t, condition)) -> convolutional positional embedding -> flow time as an
extra token -> pre-norm Transformer layers with bidirectional ALiBi and U-Net skips (layer i joined to layer L-i+1)
-> Linear to features. Every layer honours the padding mask, so a sequence gives the same output alone or padded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NetworkConfig

ALIBI_CACHE_SIZE = 8  # lengths kept: the live batches of a server, the crop lengths of training
PADDED_ATTENTION = ("auto", "rows", "mask")  # how a padded batch attends: see SpeechFlowTransformer._path


def alibi_slopes(heads: int) -> Tensor:
    """Geometric head slopes from the ALiBi paper (2^-8/h ... for a power-of-two head count, interleaved otherwise)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(power_of_two(heads))
    closest = 2 ** math.floor(math.log2(heads))
    extra = power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def kernel_layout(bias: Tensor, multiple: int = 16) -> Tensor:
    """An attention bias (..., S, S) as CUDA's memory-efficient attention kernel reads it without a copy: each row
    of S padded in memory to a multiple of ``multiple`` elements, viewed at its size (with unaligned strides the
    kernel pads a copy of the bias on every call, once per layer). Elsewhere the bias as it is."""
    if bias.device.type != "cuda":
        return bias
    return aligned(bias, multiple)


def aligned(bias: Tensor, multiple: int) -> Tensor:
    """``bias`` copied into memory whose last-axis stride is a multiple of ``multiple``, viewed at its size."""
    width = -(-bias.shape[-1] // multiple) * multiple
    out = bias.new_empty(*bias.shape[:-1], width)[..., : bias.shape[-1]]
    return out.copy_(bias)


class SinusoidalTimeEmbedding(nn.Module):
    """Flow time t in [0, 1] -> sinusoidal features -> MLP; the result is the extra time token."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:  # (B,) -> (B, dim)
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 1000.0 * t.float()[:, None] * freqs[None]  # scale so small changes of t are visible
        emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ConvPositionalEmbedding(nn.Module):
    """Grouped 1-D convolution over time added as a residual; padded frames are zeroed before each conv."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.conv2 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x (B, T, D), mask (B, T) True = valid
        keep = mask[:, None, :].to(x.dtype)
        h = x.transpose(1, 2) * keep
        h = F.gelu(self.conv1(h)) * keep
        h = F.gelu(self.conv2(h)) * keep
        return x + h.transpose(1, 2)


@dataclass(frozen=True)
class AttentionBias:
    """What attention needs besides q, k, v, for S = 1 + T tokens (the time token, then the frames).

    ``alibi`` (1, H, S, S) is shared by every row. A padded batch comes one of two ways, neither reading anything
    back from the device: ``padded`` (B, H, S, S) is the ALiBi bias plus -inf at each row's padded keys (one
    kernel call per layer), or ``lengths`` holds each row's tokens on the host (its frames + the time token) and
    attention runs row by row over the row's own positions (a call per row, none of the padded positions' work,
    no (B, H, S, S) tensor). Neither set: no row is padded.
    """

    alibi: Tensor
    lengths: tuple[int, ...] | None = None
    padded: Tensor | None = None


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, bias: AttentionBias) -> Tensor:  # x (B, S, D)
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if bias.lengths is None:  # one call: the bias is built in the compute dtype once per batch, no copy here
            mask = (bias.alibi if bias.padded is None else bias.padded).to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            out = _attention_by_row(q, k, v, bias.alibi.to(q.dtype), bias.lengths, dropout)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


def _attention_by_row(q: Tensor, k: Tensor, v: Tensor, alibi: Tensor, lengths: tuple[int, ...],
                      dropout: float) -> Tensor:
    """q, k, v (B, H, S, d), alibi (1, H, S, S), each row's tokens on the host -> (B, H, S, d), every row over its
    own positions only and its padded positions 0 (no real position reads them: real queries attend to real keys
    only, and everything else in a layer acts per position)."""
    s = q.shape[2]
    return torch.cat([F.pad(F.scaled_dot_product_attention(q[i : i + 1, :, :n], k[i : i + 1, :, :n],
                                                           v[i : i + 1, :, :n], attn_mask=alibi[..., :n, :n],
                                                           dropout_p=dropout), (0, 0, 0, s - n))
                      for i, n in enumerate(lengths)])


class TransformerLayer(nn.Module):
    """Pre-norm attention + GELU feed-forward."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = SelfAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn_dim, cfg.dim)
        )

    def forward(self, x: Tensor, bias: AttentionBias) -> Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.ffn(self.norm2(x))


class SpeechFlowTransformer(nn.Module):
    """Velocity network v(x_t, t | condition).

    Shapes: x_t (B, T, x_dim), cond (B, T, cond_dim), t (B,), mask (B, T) bool True = real frame,
    phones (B, T) long frame-aligned phone ids (0 = padding/none) when ``n_phones > 0`` -> velocity (B, T, x_dim).
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.x_dim + cfg.cond_dim, cfg.dim)
        self.phone_embed = nn.Embedding(cfg.n_phones, cfg.dim, padding_idx=0) if cfg.n_phones > 0 else None
        self.conv_pos = ConvPositionalEmbedding(cfg.dim, cfg.conv_kernel, cfg.conv_groups)
        self.time_embed = SinusoidalTimeEmbedding(cfg.dim)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.depth))
        # Second-half layer i receives concat(h, output of layer L-i+1), projected back to dim.
        self.skips = nn.ModuleList(nn.Linear(2 * cfg.dim, cfg.dim) for _ in range(cfg.depth // 2))
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.out_proj = nn.Linear(cfg.dim, cfg.x_dim)
        self.register_buffer("slopes", alibi_slopes(cfg.heads), persistent=False)
        self._alibi_cache: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
        self.padded_attention = "auto"  # see `_path`: "rows" or "mask" force one way (benchmarks, tests)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # Start as a zero velocity field so the first steps are stable whatever the depth.
        nn.init.zeros_(self.out_proj.weight)

    def attention_bias(self, mask: Tensor, dtype: torch.dtype = torch.float32,
                       lengths: Sequence[int] | None = None) -> AttentionBias:
        """(B, T) frame mask (each row's frames first) -> what every layer's attention needs, with no host
        synchronisation: the ALiBi bias (1, H, T+1, T+1) shared by the batch (-slope*|i-j| between frames, 0 to
        and from the time token at position 0), cached per (length, dtype, device), and how the batch is padded.

        ``lengths`` are the rows' frame counts when the host knows them (a live batch packs its rows): rows that
        all fill T need no padding mask, and where ``padded_attention`` picks the row-by-row path the lengths are
        all it needs. Otherwise the padding comes from ``mask`` on its device: ALiBi plus -inf at each row's padded
        keys, (B, H, T+1, T+1). The time token is never masked, so every query row, padded ones included, has a
        key to attend to (no all -inf row, no NaN).
        """
        alibi = self._alibi(mask.shape[1], dtype, mask.device)[None]
        if lengths is not None:
            if len(lengths) != mask.shape[0]:
                raise ValueError(f"{len(lengths)} lengths for a batch of {mask.shape[0]} rows")
            if all(n == mask.shape[1] for n in lengths):
                return AttentionBias(alibi)
            if self._path(mask.device) == "rows":
                return AttentionBias(alibi, lengths=tuple(int(n) + 1 for n in lengths))
        keys = torch.cat([torch.ones_like(mask[:, :1]), mask.bool()], dim=1)[:, None, None, :]  # (B, 1, 1, 1+T)
        return AttentionBias(alibi, padded=kernel_layout(torch.where(keys, alibi, float("-inf"))))

    def _path(self, device: torch.device) -> str:
        """How a padded batch with host-side lengths attends (``padded_attention``): "auto" is row by row on a CPU,
        where skipping the padded positions' work pays (the kernel's cost grows with the padded length squared, its
        per-call overhead is small next to it, and reading a (B, H, S, S) mask costs memory bandwidth: the masked
        call measured 15-20 % slower per step, scripts/hot_path_bench.py), and one masked call per layer elsewhere
        (a GPU: one kernel launch per layer, not one per row)."""
        if self.padded_attention not in PADDED_ATTENTION:
            raise ValueError(f"padded_attention must be one of {PADDED_ATTENTION}, got {self.padded_attention!r}")
        if self.padded_attention != "auto":
            return self.padded_attention
        return "rows" if device.type == "cpu" else "mask"

    def _alibi(self, t: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (t, dtype, device)
        cached = self._alibi_cache.pop(key, None)
        if cached is None:
            pos = torch.arange(t, device=device, dtype=torch.float32)
            bias = torch.zeros(self.cfg.heads, t + 1, t + 1, device=device)
            bias[:, 1:, 1:] = -self.slopes.to(device)[:, None, None] * (pos[None, :] - pos[:, None]).abs()
            cached = kernel_layout(bias.to(dtype))
        self._alibi_cache[key] = cached  # most recently used last
        while len(self._alibi_cache) > ALIBI_CACHE_SIZE:
            self._alibi_cache.pop(next(iter(self._alibi_cache)))
        return cached

    def forward(
        self, x_t: Tensor, t: Tensor, cond: Tensor, mask: Tensor, phones: Tensor | None = None, *,
        attention: AttentionBias | None = None,
    ) -> Tensor:
        """``attention``: the batch's `attention_bias`, built once by a caller that runs the same rows many times
        (a live batch); without it each call builds it from ``mask``."""
        h = self.in_proj(torch.cat([x_t, cond], dim=-1))
        if self.phone_embed is not None:
            if phones is None:
                raise ValueError("this network was built for phone conditioning; pass phones (B, T)")
            h = h + self.phone_embed(phones)
        h = self.conv_pos(h, mask)
        h = torch.cat([self.time_embed(t)[:, None, :].to(h.dtype), h], dim=1)  # (B, 1+T, D)
        device_type = h.device.type
        compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
        bias = attention if attention is not None else self.attention_bias(mask, compute)

        half = self.cfg.depth // 2
        saved: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            if i >= half:
                h = self.skips[i - half](torch.cat([h, saved.pop()], dim=-1))
            h = layer(h, bias)
            if i < half:
                saved.append(h)
        return self.out_proj(self.norm_out(h[:, 1:]))
