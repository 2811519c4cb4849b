"""Forced alignment of a TTS prompt: which of its transcript's phones is spoken at each mel frame.

A small frame classifier (dilated 1-D convolutions over the log-mel, ~1 M parameters) gives per-frame phone
log-posteriors; Viterbi then finds the best monotonic path through the transcript's phone sequence (every phone at
least one frame, in order), which is the alignment. It is trained with frame-level cross-entropy on alignments the
data already carry (espeak-ng phone events for the synthetic corpus, Montreal Forced Aligner TextGrids for real
corpora), which places boundaries directly; a CTC model would need no alignments but puts its label spikes
anywhere inside a phone, so its boundaries need a second pass.

The other prompt aligner (`model.duration.align_prompt_by_durations`) never looks at the audio: it rescales the
duration model's predictions to the prompt's length. `speechflow aligner --eval-data` measures both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import NetModel, check_fields
from .duration import DurationError
from .errors import ConfigError
from .features import MelConfig
from .text import PAD_ID, PhoneVocab, TextError

ALIGNER_KIND = "aligner"
ALIGNER_CONFIG_VERSION = 1


@dataclass
class AlignerConfig:
    vocab: list[str] = field(default_factory=lambda: PhoneVocab.default().to_list())
    mel: MelConfig = field(default_factory=MelConfig)
    channels: int = 192
    kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1)  # receptive field 1 + (kernel - 1) * sum = 65 frames (0.65 s)
    dropout: float = 0.1
    version: int = ALIGNER_CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance and the like

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):
            self.mel = MelConfig(**self.mel)
        self.dilations = tuple(self.dilations)
        if self.channels <= 0 or self.kernel <= 0 or self.kernel % 2 == 0 or not self.dilations:
            raise ConfigError("AlignerConfig: channels > 0, an odd kernel and at least one layer are required")
        try:
            PhoneVocab(self.vocab)
        except TextError as e:
            raise ConfigError(f"AlignerConfig.vocab: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"kind": ALIGNER_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignerConfig:
        return cls(**check_fields(cls, data, ALIGNER_KIND, ALIGNER_CONFIG_VERSION, "prompt aligner"))


class AlignerNet(nn.Module):
    """(log-mel (B, T, n_mels), frame mask (B, T) bool) -> phone logits (B, T, V); padded frames are zeroed before
    every convolution, so an utterance gets the same output alone or inside a padded batch."""

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        c = config.channels
        self.inp = nn.Conv1d(config.mel.n_mels, c, config.kernel, padding=config.kernel // 2)
        self.layers = nn.ModuleList(
            nn.Conv1d(c, c, config.kernel, padding=d * (config.kernel // 2), dilation=d) for d in config.dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for _ in config.dilations)  # per frame: blind to padding
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Conv1d(c, len(config.vocab), 1)

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        keep = mask[:, None, :].to(feats.dtype)  # (B, 1, T)
        x = self.inp(feats.transpose(1, 2) * keep)
        for conv, norm in zip(self.layers, self.norms, strict=True):
            h = F.gelu(norm(x.transpose(1, 2)).transpose(1, 2))
            x = x + self.dropout(conv(h * keep))
        return self.out(x * keep).transpose(1, 2)  # (B, T, V)


class PromptAligner(NetModel):
    """The frame classifier with its config and vocabulary; `align` gives per-phone frame counts for a prompt."""

    config_class = AlignerConfig

    def __init__(self, config: AlignerConfig | None = None) -> None:
        self.config = config or AlignerConfig()
        self.vocab = PhoneVocab(self.config.vocab)
        self.net = AlignerNet(self.config)

    @torch.no_grad()
    def log_posteriors(self, feats: Tensor) -> Tensor:
        """Normalised log-mel (T, n_mels) of one utterance -> (T, V) float32 log-probabilities (eval mode)."""
        with self.eval_mode():
            mask = torch.ones(1, feats.shape[0], dtype=torch.bool, device=feats.device)
            logits = self.net(feats[None].to(self.device, next(self.net.parameters()).dtype), mask)[0]
        return logits.float().log_softmax(-1)

    def align(self, feats: Tensor, phone_ids: np.ndarray | list[int]) -> np.ndarray:
        """Per-phone frame counts (N,) int64 summing to T for the prompt's features (T, n_mels) and phone ids."""
        return viterbi_durations(self.log_posteriors(feats).cpu().numpy(), np.asarray(phone_ids, np.int64))


def viterbi_durations(log_probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The most likely monotonic alignment of phones ``ids`` (N,) to frames of ``log_probs`` (T, V): each phone
    takes >= 1 consecutive frames, in order, all T frames used. Returns frame counts (N,) int64 (sum T)."""
    num_frames, n = log_probs.shape[0], len(ids)
    if n == 0 or (ids == PAD_ID).any():
        raise DurationError("prompt phones must be a non-empty 1-D sequence without padding")
    if n > num_frames:
        raise DurationError(f"the prompt's {num_frames} frames cannot hold its transcript's {n} phones: does the "
                            "transcript match the audio?")
    emit = log_probs[:, ids]  # (T, N): frame t spoken as the transcript's k-th phone
    score = np.full(n, -np.inf)
    score[0] = emit[0, 0]
    advanced = np.zeros((num_frames, n), dtype=bool)  # True: phone k started at frame t
    for t in range(1, num_frames):
        move = np.concatenate([[-np.inf], score[:-1]])
        advanced[t] = move > score
        score = np.maximum(score, move) + emit[t]
    # backtrack from the last phone at the last frame
    durations = np.zeros(n, dtype=np.int64)
    k = n - 1
    for t in range(num_frames - 1, -1, -1):
        durations[k] += 1
        if advanced[t, k]:
            k -= 1
    if k != 0:  # unreachable when n <= T: the first frame must belong to the first phone
        raise DurationError("forced alignment failed")
    return durations
