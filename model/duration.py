"""Duration model for TTS: how many frames each phone lasts, given the phones and the durations of a prompt's phones.

Voicebox-style: the model sees the whole phone sequence (the prompt's transcript followed by the new text) and the known
durations of some of its phones (the prompt's), and predicts the others, so that pace and rhythm follow the prompt
speaker. Trained (`training/trainers/duration.py`) like the acoustic model: 70-100 % of an utterance's phones are masked
in spans (all of them with probability `p_uncond`, so it also works without a prompt) and the loss counts the masked
phones only.

The output is a regression on log(1 + frames): a small Transformer encoder over phone embeddings plus, per phone,
the known log-duration (zero where masked) and a flag saying whether it is known; L1 (default) or MSE. Voicebox's
alternative, a flow-matching duration model (sampled durations, more varied prosody), is deliberately not built:
regression is deterministic, trains in minutes on a CPU, and is what a frame-accuracy comparison needs first.

Also here, because inference needs it without `training`: prompt alignment by rescaled durations (the prompt's
transcript gets durations predicted without context, scaled to the prompt's frame count) and the cumulative
rounding that keeps totals exact.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import NetModel, check_fields
from .errors import ConfigError, SpeechFlowError
from .text import PAD_ID, PhoneVocab, TextError

DURATION_KIND = "duration"
DURATION_CONFIG_VERSION = 1
LOSSES = ("l1", "mse")
SPEED_RANGE = (0.25, 4.0)


class DurationError(SpeechFlowError, ValueError):
    """Durations that cannot be made: a prompt too short for its transcript, a speed out of range, bad shapes."""


def _default_vocab() -> list[str]:
    return PhoneVocab.default().to_list()


@dataclass
class DurationConfig:
    """Shape, vocabulary and masking recipe of the duration model; travels in config.json with the weights."""

    vocab: list[str] = field(default_factory=_default_vocab)  # PhoneVocab.symbols: id 0 pad, 1 unknown
    dim: int = 128  # 0.8 M parameters: minutes of CPU training (256 x 4 layers is 3.3 M and ~8x slower a step)
    depth: int = 4
    heads: int = 4
    ffn_dim: int = 512
    conv_kernel: int = 9  # depthwise convolution over phones: relative positions
    dropout: float = 0.1
    fps: int = 100  # frames per second of the durations (the mel hop)
    loss: str = "l1"
    max_frames: int = 500  # predictions are clamped to this many frames per phone (5 s)
    p_uncond: float = 0.1  # probability that no duration is given at all
    mask_min: float = 0.7  # otherwise this share of the phones is masked ...
    mask_max: float = 1.0
    min_span: int = 3  # ... in spans of at least this many phones
    version: int = DURATION_CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance and the like

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "ffn_dim", "conv_kernel", "fps", "max_frames", "min_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"DurationConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ConfigError(f"DurationConfig.dim {self.dim} is not divisible by heads {self.heads}")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"DurationConfig.conv_kernel must be odd, got {self.conv_kernel}")
        if self.loss not in LOSSES:
            raise ConfigError(f"DurationConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0 <= self.mask_min <= self.mask_max <= 1 or not 0 <= self.p_uncond <= 1:
            raise ConfigError("DurationConfig: need 0 <= mask_min <= mask_max <= 1 and 0 <= p_uncond <= 1")
        try:
            PhoneVocab(self.vocab)  # specials first, no duplicates, silence present
        except TextError as e:
            raise ConfigError(f"DurationConfig.vocab: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"kind": DURATION_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DurationConfig:
        """Strict: the kind must be "duration" and every key known."""
        return cls(**check_fields(cls, data, DURATION_KIND, DURATION_CONFIG_VERSION, "duration model"))


class DurationNet(nn.Module):
    """(phones (B, N) long, known log(1+d) (B, N), known flags (B, N) bool) -> predicted log(1+d) (B, N).

    Id 0 is padding: padded phones are zeroed before the convolution and ignored by attention, so a sequence gives
    the same output alone or inside a padded batch.
    """

    def __init__(self, config: DurationConfig) -> None:
        super().__init__()
        c = config
        self.embed = nn.Embedding(len(c.vocab), c.dim, padding_idx=PAD_ID)
        self.prompt_proj = nn.Linear(2, c.dim)  # (known log-duration, known flag)
        self.pos_conv = nn.Conv1d(c.dim, c.dim, c.conv_kernel, padding=c.conv_kernel // 2, groups=c.heads)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, c.ffn_dim, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.out = nn.Linear(c.dim, 1)

    def forward(self, phones: Tensor, known_log: Tensor, known: Tensor) -> Tensor:
        valid = (phones != PAD_ID)[..., None]  # (B, N, 1)
        known = known & valid[..., 0]
        prompt = torch.stack([known_log * known, known.to(known_log.dtype)], dim=-1)  # (B, N, 2)
        x = (self.embed(phones) + self.prompt_proj(prompt)) * valid
        x = x + nn.functional.gelu(self.pos_conv(x.transpose(1, 2)).transpose(1, 2))
        x = self.encoder(x * valid, src_key_padding_mask=~valid[..., 0])
        return self.out(self.norm(x))[..., 0] * valid[..., 0]


# -------------------------------------------------------------------------------------------------------- rounding


def cumulative_round(values: np.ndarray) -> np.ndarray:
    """Non-negative reals (N,) -> int64 (N,) whose running sums are the rounded running sums of `values`: the total
    is kept (no drift), integer entries stay exact, and entries >= 1 stay >= 1."""
    ends = np.floor(np.cumsum(np.asarray(values, dtype=np.float64)) + 0.5).astype(np.int64)
    return np.diff(ends, prepend=0)


def expand_durations(ids: Sequence[int] | np.ndarray, durations: Sequence[int] | np.ndarray) -> np.ndarray:
    """Phone ids (N,) and frame counts (N,) -> frame labels (sum(durations),) int64."""
    return np.repeat(np.asarray(ids, dtype=np.int64), np.asarray(durations, dtype=np.int64))


# ------------------------------------------------------------------------------------------------------------ model


def _check_speed(speed: float) -> None:
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise DurationError(f"speed must be a number in {SPEED_RANGE[0]}..{SPEED_RANGE[1]}, got {speed!r}")


def _as_batch(value: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value, device=device)
    return tensor.to(dtype)


def _shaped_like(ids: Tensor, value: Any, dtype: torch.dtype, name: str) -> Tensor:
    """`value` as a (B, N) tensor on ids' device; (N,) is taken as one row, any other shape is an error."""
    tensor = _as_batch(value, dtype, ids.device)
    tensor = tensor[None] if tensor.ndim == 1 else tensor
    if tensor.shape != ids.shape:
        raise DurationError(f"{name} has shape {tuple(tensor.shape)}, phone_ids {tuple(ids.shape)}")
    return tensor


class DurationModel(NetModel):
    """The duration network with its config and vocabulary; `predict` turns phone ids into frame counts."""

    config_class = DurationConfig

    def __init__(self, config: DurationConfig | None = None) -> None:
        self.config = config or DurationConfig()
        self.vocab = PhoneVocab(self.config.vocab)
        self.net = DurationNet(self.config)

    @torch.no_grad()
    def predict_log(self, phone_ids: Tensor, prompt_durations: Tensor | None = None,
                    prompt_mask: Tensor | None = None) -> Tensor:
        """(B, N) ids [, (B, N) frames, (B, N) bool True = given] -> (B, N) float32 log(1 + frames), eval mode."""
        known = torch.zeros_like(phone_ids, dtype=torch.bool) if prompt_mask is None else prompt_mask.bool()
        durations = torch.zeros(phone_ids.shape, device=phone_ids.device) if prompt_durations is None \
            else prompt_durations.float()
        with self.eval_mode():
            out = self.net(phone_ids, torch.log1p(durations.clamp(min=0)), known)
        return out.float().clamp(0, math.log1p(self.config.max_frames))

    def predict(self, phone_ids: Any, prompt_durations: Any = None, prompt_mask: Any = None,
                speed: float = 1.0) -> Tensor:
        """Frame counts for every phone: given ones (prompt_mask True) kept, the others predicted and divided by
        `speed` (2 = twice as fast), cumulatively rounded, and at least 1 for non-pause phones.

        phone_ids (N,) or (B, N) (0 = padding), prompt_durations the same shape in frames, prompt_mask the same
        shape, bool -> int64 tensor of that shape (0 on padding).
        """
        _check_speed(speed)
        if (prompt_mask is None) != (prompt_durations is None):
            raise DurationError("give prompt_durations and prompt_mask together")
        ids = _as_batch(phone_ids, torch.long, self.device)
        single = ids.ndim == 1
        ids = ids[None] if single else ids
        given = mask = None
        if prompt_durations is not None:
            given = _shaped_like(ids, prompt_durations, torch.float32, "prompt_durations")
            mask = _shaped_like(ids, prompt_mask, torch.bool, "prompt_mask")
        frames = torch.expm1(self.predict_log(ids, given, mask)).cpu().numpy() / speed
        mask_np = np.zeros(ids.shape, dtype=bool) if mask is None else mask.cpu().numpy()
        if given is not None:
            frames = np.where(mask_np, given.cpu().numpy().round(), frames)
        out = np.stack([self._round_row(row, ids_row, m) for row, ids_row, m in
                        zip(frames, ids.cpu().numpy(), mask_np, strict=True)])
        result = torch.from_numpy(out).to(self.device)
        return result[0] if single else result

    def _round_row(self, frames: np.ndarray, ids: np.ndarray, given: np.ndarray) -> np.ndarray:
        valid = ids != PAD_ID
        counts = np.zeros(len(ids), dtype=np.int64)
        counts[valid] = cumulative_round(np.clip(frames[valid], 0, None))
        speech = valid & ~given & ~np.array([self.vocab.is_pause(int(i)) for i in ids])
        counts[speech] = np.maximum(counts[speech], 1)
        return counts


# ------------------------------------------------------------------------------------------------ prompt alignment


def _water_fill(weights: np.ndarray, minimum: np.ndarray, total: int) -> np.ndarray:
    """Integers (N,) summing to `total`, >= ceil(minimum), close to max(minimum, s * weights) for the scale s that
    makes those reals sum to `total` (bisection; requires sum(minimum) <= total)."""
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    low, high = 0.0, total / weights.sum()  # f(high) >= total, since max(m, s w) >= s w
    for _ in range(100):
        mid = (low + high) / 2
        if np.maximum(minimum, mid * weights).sum() < total:
            low = mid
        else:
            high = mid
    counts = cumulative_round(np.maximum(minimum, high * weights))
    counts[np.argmax(counts)] += total - counts.sum()  # the bisection's last rounding error, if any
    return counts


PLAUSIBLE_LENGTH = (0.4, 2.5)  # audio / the length its transcript predicts: outside, the two do not match


def context_free_frames(ids: np.ndarray, model: DurationModel) -> np.ndarray:
    """(N,) float frames the duration model gives phone ids (N,) without any context."""
    return torch.expm1(model.predict_log(torch.from_numpy(ids)[None].to(model.device)))[0].cpu().numpy()


def rescaled_prompt_durations(prompt_ids: Sequence[int] | np.ndarray, num_frames: int, model: DurationModel,
                              pause_min_frames: int = 0) -> np.ndarray:
    """Durations (N,) int64 for the prompt's phones, summing to `num_frames`: predicted without context, scaled to
    the prompt's length; non-pause phones get >= 1 frame, pauses >= `pause_min_frames`.

    Warns when the prompt is far longer or shorter than the transcript predicts (a transcript that may not match).
    """
    ids = np.asarray(prompt_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0 or (ids == PAD_ID).any():
        raise DurationError("prompt phones must be a non-empty 1-D sequence without padding")
    pauses = np.array([model.vocab.is_pause(int(i)) for i in ids])
    minimum = np.where(pauses, pause_min_frames, 1).astype(np.float64)
    if minimum.sum() > num_frames:
        raise DurationError(f"the prompt's {num_frames} frames ({num_frames / model.config.fps:.2f} s) cannot hold "
                            f"its transcript's {int((~pauses).sum())} phones: does the transcript match the audio?")
    predicted = context_free_frames(ids, model)
    ratio = num_frames / max(float(predicted.sum()), 1.0)
    if not PLAUSIBLE_LENGTH[0] <= ratio <= PLAUSIBLE_LENGTH[1]:
        warnings.warn(f"the prompt is {ratio:.2f}x the length its transcript predicts: does the transcript match "
                      "the audio?", UserWarning, stacklevel=2)
    return _water_fill(predicted.astype(np.float64), minimum, num_frames)


def align_prompt_by_durations(prompt_phones: Sequence[str] | Sequence[int], prompt_num_frames: int,
                              duration_model: DurationModel, pause_min_frames: int = 0) -> np.ndarray:
    """Frame labels (prompt_num_frames,) int64 for a prompt from its transcript's phones (symbols or ids): the
    duration model's context-free durations rescaled to the prompt's length (the simpler of the issue's two
    prompt aligners; a forced aligner would look at the audio)."""
    phones = list(prompt_phones)
    ids = duration_model.vocab.encode(phones) if phones and isinstance(phones[0], str) else phones
    durations = rescaled_prompt_durations(ids, prompt_num_frames, duration_model, pause_min_frames)
    return expand_durations(ids, durations)
