"""The SpeechFlow network: a Transformer encoder over mel frames that predicts the flow's velocity.

Voicebox/SpeechFlow layout: Linear(concat(x_t, condition)) -> convolutional positional embedding -> flow time as an
extra token -> pre-norm Transformer layers with bidirectional ALiBi and U-Net skips (layer i joined to layer L-i+1)
-> Linear to features. Every layer honours the padding mask, so a sequence gives the same output alone or padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NetworkConfig

ALIBI_CACHE_SIZE = 8  # lengths kept: the live batches of a server, the crop lengths of training


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
    """What attention needs besides q, k, v: the ALiBi bias (1, H, S, S), shared by every row, and for a padded
    batch each row's length (positions past it are padding: the row attends over its own positions only)."""

    alibi: Tensor
    lengths: tuple[int, ...] | None = None


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
        alibi = bias.alibi.to(q.dtype)  # built in the compute dtype once per forward: no copy here
        if bias.lengths is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi, dropout_p=dropout)
        else:  # each row over its own positions: padding needs no mask, and no (B, H, S, S) tensor is built
            out = torch.cat([F.pad(F.scaled_dot_product_attention(q[i : i + 1, :, :n], k[i : i + 1, :, :n],
                                                                  v[i : i + 1, :, :n], attn_mask=alibi[..., :n, :n],
                                                                  dropout_p=dropout), (0, 0, 0, s - n))
                             for i, n in enumerate(bias.lengths)])
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # Start as a zero velocity field so the first steps are stable whatever the depth.
        nn.init.zeros_(self.out_proj.weight)

    def attention_bias(self, mask: Tensor, dtype: torch.dtype = torch.float32) -> AttentionBias:
        """(B, T) frame mask -> the ALiBi bias (1, H, T+1, T+1) shared by the batch (-slope*|i-j| between frames, 0
        to and from the time token at position 0), cached per (length, dtype, device) so every step and layer
        reuse it, and, when rows are padded, each row's length (its frames + the time token)."""
        alibi = self._alibi(mask.shape[1], dtype, mask.device)[None]
        if bool(mask.all()):
            return AttentionBias(alibi)
        return AttentionBias(alibi, tuple(int(n) + 1 for n in mask.sum(dim=1).tolist()))

    def _alibi(self, t: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (t, dtype, device)
        cached = self._alibi_cache.pop(key, None)
        if cached is None:
            pos = torch.arange(t, device=device, dtype=torch.float32)
            bias = torch.zeros(self.cfg.heads, t + 1, t + 1, device=device)
            bias[:, 1:, 1:] = -self.slopes.to(device)[:, None, None] * (pos[None, :] - pos[:, None]).abs()
            cached = bias.to(dtype)
        self._alibi_cache[key] = cached  # most recently used last
        while len(self._alibi_cache) > ALIBI_CACHE_SIZE:
            self._alibi_cache.pop(next(iter(self._alibi_cache)))
        return cached

    def forward(
        self, x_t: Tensor, t: Tensor, cond: Tensor, mask: Tensor, phones: Tensor | None = None
    ) -> Tensor:
        h = self.in_proj(torch.cat([x_t, cond], dim=-1))
        if self.phone_embed is not None:
            if phones is None:
                raise ValueError("this network was built for phone conditioning; pass phones (B, T)")
            h = h + self.phone_embed(phones)
        h = self.conv_pos(h, mask)
        h = torch.cat([self.time_embed(t)[:, None, :].to(h.dtype), h], dim=1)  # (B, 1+T, D)
        device_type = h.device.type
        compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
        bias = self.attention_bias(mask, compute)

        half = self.cfg.depth // 2
        saved: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            if i >= half:
                h = self.skips[i - half](torch.cat([h, saved.pop()], dim=-1))
            h = layer(h, bias)
            if i < half:
                saved.append(h)
        return self.out_proj(self.norm_out(h[:, 1:]))
