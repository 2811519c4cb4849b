"""Vocos-style neural vocoder: normalised log-mel (B, T, n_mels) -> waveform (B, T * hop).

ConvNeXt blocks over mel frames predict one STFT frame per mel frame (log-magnitude and phase); an inverse STFT with
the same hop turns them into audio. Nothing is upsampled by transposed convolutions, so the network runs at the frame
rate (100 frames/s) and is cheap on a CPU. Trained by `training/trainers/vocoder.py`; saved as a model directory whose
config.json says `"kind": "vocos"`, so it can never be loaded as a flow model (or the other way round).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import NetModel, check_fields
from .errors import ConfigError
from .features import MelConfig

VOCOS_KIND = "vocos"
VOCOS_CONFIG_VERSION = 1
MAX_LOG_MAGNITUDE = math.log(100.0)  # Vocos clips the magnitude at 1e2: keeps exp() finite early in training


@dataclass
class VocosConfig:
    """Shape of the vocoder and the features it inverts; travels in config.json with the weights."""

    dim: int = 256  # Vocos uses 512; 256 keeps it at a few M parameters for CPU serving
    intermediate_dim: int = 768
    layers: int = 8
    kernel: int = 7
    n_fft: int = 640  # the iSTFT head's own transform (window = n_fft)
    hop: int = 160  # must equal mel.hop_length: one predicted STFT frame per mel frame
    mel: MelConfig = field(default_factory=MelConfig)
    version: int = VOCOS_CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance and the like

    def __post_init__(self) -> None:
        for name in ("dim", "intermediate_dim", "layers", "kernel", "n_fft", "hop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"VocosConfig.{name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise ConfigError(f"VocosConfig.kernel must be odd (same-length convolution), got {self.kernel}")
        if self.n_fft % 2:
            raise ConfigError(f"VocosConfig.n_fft must be even, got {self.n_fft}")
        if self.hop != self.mel.hop_length:
            raise ConfigError(f"VocosConfig.hop ({self.hop}) must equal the mel hop ({self.mel.hop_length})")
        if self.hop > self.n_fft // 2:
            # Hann windows overlap-add to a non-zero envelope only when at least two frames overlap everywhere.
            raise ConfigError(f"VocosConfig.hop ({self.hop}) must be <= n_fft/2 ({self.n_fft // 2})")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": VOCOS_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocosConfig:
        """Strict: the kind must be "vocos" and every key known (a typo or a flow-model config must not pass)."""
        data = check_fields(cls, data, VOCOS_KIND, VOCOS_CONFIG_VERSION, "vocoder")
        mel = data.pop("mel", {})
        if not isinstance(mel, dict):
            raise ConfigError(f"VocosConfig.mel must be a mapping, got {type(mel).__name__}")
        return cls(**data, mel=MelConfig.from_dict(mel))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over time -> LayerNorm -> pointwise MLP (GELU) -> layer scale -> residual. (B, C, T) -> same."""

    def __init__(self, dim: int, intermediate_dim: int, kernel: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        # A small per-channel scale makes every block start close to the identity, so depth does not hurt early on.
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)  # (B, T, C): LayerNorm and Linear act on the last axis
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ISTFTHead(nn.Module):
    """Frames (B, T, dim) -> log-magnitude and phase of T STFT frames -> waveform (B, T * hop), float32 math."""

    window: Tensor

    def __init__(self, dim: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Linear(dim, (n_fft // 2 + 1) * 2)
        # Derived from the config, so not saved: it follows .to(device) but never enters a checkpoint.
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def spectrum(self, x: Tensor) -> Tensor:
        """Frames (B, T, dim) -> complex STFT (B, F, T), float32."""
        log_mag, phase = self.proj(x).transpose(1, 2).chunk(2, dim=1)  # each (B, F, T)
        # iSTFT under bf16/fp16 loses the fine phase detail; the spectrum is tiny next to the network anyway.
        with torch.autocast(device_type=x.device.type, enabled=False):
            mag = torch.exp(torch.clamp(log_mag.float(), max=MAX_LOG_MAGNITUDE))
            phase = phase.float()
            # cos/sin of an unbounded angle rather than a predicted (real, imag): the phase wraps freely.
            return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))

    def waveform(self, spec: Tensor) -> Tensor:
        """Complex STFT (B, F, T) -> waveform (B, T * hop)."""
        with torch.autocast(device_type=spec.device.type, enabled=False):
            # center=True puts frame t at sample t * hop, as in the mel analysis; `length` cuts (or zero-extends)
            # the overlap-add to exactly T * hop samples, the vocoder contract shared with Griffin-Lim.
            return torch.istft(spec, n_fft=self.n_fft, hop_length=self.hop, win_length=self.n_fft,
                               window=self.window.float(), center=True, length=spec.shape[-1] * self.hop)

    def waveforms(self, spec: Tensor, lengths: Sequence[int]) -> Tensor:
        """Complex STFT (B, F, T_max) of rows of ``lengths`` frames (host ints) -> waveform (B, T_max * hop): row i
        is `waveform` of its own frames alone (up to float rounding) in its first lengths[i] * hop samples, 0 after.

        The inverse STFT of the whole padded batch at once: one inverse FFT, the padded frames zeroed, one
        overlap-add, and each row divided by its own window-square envelope (the sum of the squared windows of its
        frames only), so a row's last samples never see the padded frames, as its own inverse STFT would not.
        """
        b, _, t = spec.shape
        if len(lengths) != b:
            raise ValueError(f"{len(lengths)} lengths for a batch of {b} rows")
        dev = spec.device
        n = torch.tensor(lengths, device=dev)[:, None]  # (B, 1)
        with torch.autocast(device_type=dev.type, enabled=False):
            window = self.window.float()
            valid = torch.arange(t, device=dev)[None] < n  # (B, T)
            # (B, T, F) contiguous: the CPU FFT over a strided last axis takes twice as long
            spec = spec.transpose(1, 2).contiguous()
            torch.view_as_real(spec).mul_(valid[..., None, None])  # the padded frames' spectra zeroed, in place
            frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1).mul_(window)  # (B, T, n_fft)
            out = self._overlap_add(frames)
            envelope = self._envelope(valid.float(), window)
            # center=True: frame j is centred on sample j * hop, so the signal starts n_fft // 2 into the sum
            cut = slice(self.n_fft // 2, self.n_fft // 2 + t * self.hop)
            out, envelope = out[:, cut], envelope[:, cut]
            # samples past a row's end are cut to 0; its envelope falls towards 0 there, so it is never divided by
            keep = torch.arange(t * self.hop, device=dev)[None] < n * self.hop
            return torch.where(keep, out / torch.where(keep, envelope, 1.0), 0.0)

    def _hops(self) -> int:
        return -(-self.n_fft // self.hop)  # r: hops a frame spans, ceil(n_fft / hop)

    def _overlap_add(self, frames: Tensor) -> Tensor:
        """(B, T, n_fft) frames -> (B, (T + r - 1) * hop) samples (r = ceil(n_fft / hop)), frame j added in at
        sample j * hop: r shifted adds of hop-wide slices, far cheaper on a CPU than a generic col2im (F.fold)."""
        b, t, _ = frames.shape
        r = self._hops()
        if r * self.hop != self.n_fft:
            frames = F.pad(frames, (0, r * self.hop - self.n_fft))
        parts = frames.view(b, t, r, self.hop)
        out = frames.new_zeros(b, t + r - 1, self.hop)
        for k in range(r):  # the k-th hop of every frame lands k hops after the frame's start
            out[:, k : k + t] += parts[:, :, k]
        return out.view(b, -1)

    def _envelope(self, valid: Tensor, window: Tensor) -> Tensor:
        """Frame mask (B, T) float -> each row's window-square envelope (B, (T + r - 1) * hop): the overlap-add of
        the squared window over the row's own frames, without building (B, T, n_fft)."""
        b, t = valid.shape
        r = self._hops()
        square = F.pad(window**2, (0, r * self.hop - self.n_fft)).view(r, self.hop)
        out = valid.new_zeros(b, t + r - 1, self.hop)
        for k in range(r):
            out[:, k : k + t] += valid[..., None] * square[k]
        return out.view(b, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.waveform(self.spectrum(x))


class VocosNet(nn.Module):
    """Normalised log-mel (B, T, n_mels) -> waveform (B, T * hop)."""

    def __init__(self, config: VocosConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Conv1d(config.mel.n_mels, config.dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(config.dim)
        scale = 1.0 / config.layers  # Vocos' layer-scale init: the sum of all residual branches starts at O(1)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, config.kernel, scale) for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(config.dim)
        self.head = ISTFTHead(config.dim, config.n_fft, config.hop)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv1d | nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def frames(self, feats: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalised log-mel (B, T, n_mels) -> head inputs (B, T, dim). With ``mask`` (B, T) the rows of a padded
        batch come out as if each ran alone: padding is zeroed before every convolution, which is exactly the
        zero padding a row alone sees past its end (everything else acts per frame)."""
        if feats.dim() != 3 or feats.shape[-1] != self.config.mel.n_mels:
            raise ValueError(f"expected features (B, T, {self.config.mel.n_mels}), got {tuple(feats.shape)}")
        keep = None if mask is None else mask[:, None, :].to(feats.dtype)  # (B, 1, T)
        x = feats.transpose(1, 2)  # (B, n_mels, T): convolutions want channels first
        x = self.embed(x if keep is None else x * keep)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x if keep is None else x * keep)
        return self.final_norm(x.transpose(1, 2))

    def forward(self, feats: Tensor) -> Tensor:
        """Normalised log-mel (B, T, n_mels) -> waveform (B, T * hop)."""
        return self.head(self.frames(feats))


class VocosVocoder(NetModel):
    """A trained VocosNet with its config: the same call interface as the Griffin-Lim fallback."""

    name = "vocos"
    config_class = VocosConfig

    def __init__(self, config: VocosConfig | None = None) -> None:
        self.config = config or VocosConfig()
        self.net = VocosNet(self.config)

    @torch.no_grad()
    def __call__(self, feats: Tensor) -> Tensor:
        """Normalised log-mel (B, T, n_mels) -> float32 waveform (B, T * hop) on the vocoder's device."""
        with self.eval_mode():
            param = next(self.net.parameters())
            return self.net(feats.to(device=param.device, dtype=param.dtype))

    @torch.no_grad()
    def batch(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Several (T_i, n_mels) feature sequences in one padded network call and one batched inverse STFT -> one
        float32 waveform (T_i * hop,) each, equal to vocoding each alone (up to float rounding): the network masks
        the padding, and the inverse STFT normalises each row by its own frames' window envelope
        (`ISTFTHead.waveforms`)."""
        with self.eval_mode():
            param = next(self.net.parameters())
            lengths = [int(f.shape[0]) for f in feats]
            padded = nn.utils.rnn.pad_sequence([f.to(param.device, param.dtype) for f in feats], batch_first=True)
            frames = torch.tensor(lengths, device=param.device)
            mask = torch.arange(padded.shape[1], device=param.device)[None] < frames[:, None]
            spec = self.net.head.spectrum(self.net.frames(padded, mask))  # (B, F, T_max)
            wavs = self.net.head.waveforms(spec, lengths)  # (B, T_max * hop)
            return [wavs[i, : n * self.config.hop] for i, n in enumerate(lengths)]
