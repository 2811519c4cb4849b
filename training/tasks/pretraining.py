"""The pre-training objective: masked-condition flow matching on untranscribed audio (the SpeechFlow recipe), and
the frame mask of padded crops that every objective uses."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.features import MelSpectrogram
from model.flow import FlowMatching

from .masking import pretraining_masks


def frame_mask(mel: MelSpectrogram, lengths: Tensor, num_frames: int) -> Tensor:
    """Sample lengths (B,) -> (B, num_frames) bool, True on frames computed from real (non-padding) audio."""
    frames = torch.tensor([mel.num_frames(int(n)) for n in lengths], device=lengths.device)
    return torch.arange(num_frames, device=lengths.device)[None, :] < frames[:, None]


class PretrainObjective:
    """Features of the crops; condition = features with masked frames zeroed; loss on masked, real frames."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.mel = MelSpectrogram(config.mel)
        self.flow = FlowMatching(config.flow)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["wav"].device)
        x1 = self.mel(batch["wav"])  # (B, T, n_mels)
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        masked = pretraining_masks(rng, mask.sum(1).tolist(), x1.shape[1], self.config.flow).to(x1.device)
        cond = x1 * (~masked)[..., None]
        return self.flow.loss(net, x1, cond, mask, masked, generator=gen)
