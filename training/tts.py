"""TTS fine-tuning data and objective (Voicebox-style): frame-aligned phones plus a span-masked audio context.

The model sees the phone of every frame and the audio of the unmasked frames, and learns to generate the masked
(70-100 %) frames; condition dropout (audio context and phones together) trains the unconditional branch for
classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from model.config import ModelConfig
from model.features import MelSpectrogram
from model.flow import FlowMatching
from model.text import PhoneVocab

from .alignments import phones_to_frames
from .data import CropKey, read_crop
from .manifest import Utterance
from .masking import pretraining_masks
from .pretrain import frame_mask


class AlignedCropDataset(Dataset):
    """(index, seed) -> {"wav": (n,), "phones": (n // hop + 1,) int64 frame labels of that crop}."""

    def __init__(self, utterances: Sequence[Utterance], max_seconds: float, vocab: PhoneVocab,
                 sample_rate: int = 16000, hop: int = 160) -> None:
        self.utterances, self.max_seconds, self.vocab = list(utterances), max_seconds, vocab
        self.sample_rate, self.hop = sample_rate, hop

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: CropKey) -> dict[str, np.ndarray]:
        index, seed = key
        utt = self.utterances[index]
        wav, start = read_crop(utt.audio, self.max_seconds, seed, self.sample_rate)
        frames = len(wav) // self.hop + 1
        labels = phones_to_frames(utt.meta["phones"], frames, self.vocab, fps=self.sample_rate // self.hop,
                                  start=start)
        return {"wav": wav, "phones": labels}


def collate_aligned(items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """-> {"wav": (B, N) float, "lengths": (B,) samples, "phones": (B, T) int64, 0-padded}."""
    lengths = torch.tensor([len(i["wav"]) for i in items])
    wav = torch.zeros(len(items), int(lengths.max()))
    phones = torch.zeros(len(items), max(len(i["phones"]) for i in items), dtype=torch.long)
    for k, item in enumerate(items):
        wav[k, : len(item["wav"])] = torch.from_numpy(item["wav"])
        phones[k, : len(item["phones"])] = torch.from_numpy(item["phones"])
    return {"wav": wav, "lengths": lengths, "phones": phones}


class TTSObjective:
    def __init__(self, config: ModelConfig) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["wav"].device)
        x1 = self.mel(batch["wav"])  # (B, T, n_mels)
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        phones = batch["phones"][:, : x1.shape[1]] * mask  # (B, T), 0 on padding
        masked = pretraining_masks(rng, mask.sum(1).tolist(), x1.shape[1], self.config.flow).to(x1.device)
        keep = (torch.rand(x1.shape[0], device=x1.device, generator=gen) >= self.config.flow.p_uncond)[:, None]
        cond = x1 * (~masked & keep)[..., None]
        return self.flow.loss(net, x1, cond, mask, masked, generator=gen, phones=phones * keep)
