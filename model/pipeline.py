"""``SpeechFlowPipeline``: waveforms in, waveforms out, for every task a bundle serves.

This is the single generate path: the CLI, the service and the evaluation all call it, so features, sampling and
vocoding cannot drift apart between training, offline use and serving.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .audio import prepare_waveform, resample
from .bundle import BUNDLE_FILE, read_bundle_info, task_dirs
from .checkpoint import CONFIG_FILE
from .errors import CheckpointError, ConfigError
from .features import MelSpectrogram
from .modeling import SpeechFlowModel
from .vocoder import GriffinLimVocoder

CROSSFADE_S = 0.01  # splice regenerated spans into the original audio with 10 ms linear fades

Span = tuple[float, float]


@dataclass
class InfillRequest:
    wav: np.ndarray  # (n,) or (n, channels), any rate
    sr: int
    spans: Sequence[Span]  # seconds


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SpeechFlowPipeline:
    """Loads a bundle (``pretrained/ enhance/ separate/ tts/ vocoder/`` + ``bundle.json``) or a single model
    directory, and runs the tasks it has."""

    def __init__(self, models: dict[str, SpeechFlowModel], info: dict | None = None) -> None:
        if not models:
            raise CheckpointError("a pipeline needs at least one model")
        self.models = models
        self.info = info or {}
        first = next(iter(models.values()))
        self.mel_config = first.config.mel
        self.device = first.device
        self.mel = MelSpectrogram(self.mel_config).to(self.device)
        self.vocoder = GriffinLimVocoder(self.mel_config)

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def vocoder_name(self) -> str:
        return self.vocoder.name

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> SpeechFlowPipeline:
        path = Path(path)
        dev = resolve_device(device)
        if (path / CONFIG_FILE).is_file():  # a single model directory, e.g. a pre-training run
            model = SpeechFlowModel.from_pretrained(path, device=dev)
            return cls({model.config.task: model}, {"source": str(path)})
        if not (path / BUNDLE_FILE).is_file():
            raise CheckpointError(f"{path} is neither a bundle ({BUNDLE_FILE}) nor a model directory ({CONFIG_FILE})")
        models = {task: SpeechFlowModel.from_pretrained(d, device=dev) for task, d in task_dirs(path).items()}
        return cls(models, read_bundle_info(path))

    def model(self, task: str) -> SpeechFlowModel:
        if task not in self.models:
            raise ConfigError(f"this bundle has no {task!r} model (it has: {', '.join(self.models)})")
        return self.models[task]

    # --- shared steps -------------------------------------------------------------------------------------------
    def features(self, wavs: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """16 kHz waveforms -> normalised log-mel (B, T, n_mels) and frame mask (B, T), padded to the longest."""
        feats = [self.mel(torch.from_numpy(w).to(self.device))[0] for w in wavs]
        lengths = torch.tensor([f.shape[0] for f in feats], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return padded, torch.arange(padded.shape[1], device=self.device)[None] < lengths[:, None]

    def vocode(self, feats: Tensor, mask: Tensor) -> list[np.ndarray]:
        """(B, T, n_mels), (B, T) -> one waveform per item. Items are vocoded one by one on their own frames, so a
        result never depends on what else was in the batch (padding would leak into the edge frames)."""
        lengths = mask.sum(1).tolist()
        return [self.vocoder(feats[i : i + 1, : int(n)])[0].float().cpu().numpy() for i, n in enumerate(lengths)]

    # --- infilling ----------------------------------------------------------------------------------------------
    def infill(self, wav: np.ndarray, sr: int, spans: Sequence[Span], **kwargs) -> tuple[np.ndarray, int]:
        """Regenerate the given time spans (seconds) of a recording with the pre-trained model; the rest of the
        recording is kept as it was. Returns (float32 waveform, sr) at the input's rate."""
        return self.infill_batch([InfillRequest(wav, sr, spans)], **kwargs)[0]

    def infill_batch(
        self,
        requests: Sequence[InfillRequest],
        *,
        steps: int = 32,
        solver: str = "midpoint",
        guidance: float = 1.0,
        seed: int | Sequence[int] = 0,
    ) -> list[tuple[np.ndarray, int]]:
        model = self.model("pretrain")
        seeds = [seed + i for i in range(len(requests))] if isinstance(seed, int) else list(seed)
        wavs = [prepare_waveform(r.wav, r.sr, self.sample_rate) for r in requests]
        feats, mask = self.features(wavs)
        gen_mask = torch.zeros_like(mask)
        for i, (r, w) in enumerate(zip(requests, wavs, strict=True)):
            gen_mask[i] = torch.from_numpy(self._span_frames(r.spans, len(w), mask.shape[1])).to(self.device)
        gen_mask &= mask
        cond = feats * (~gen_mask)[..., None]
        out = model.generate(cond, mask, seeds, nfe=steps, solver=solver, guidance=guidance, known=feats,
                             known_mask=~gen_mask)
        generated = self.vocode(out, mask)
        results = []
        for r, w, g in zip(requests, wavs, generated, strict=True):
            spliced = splice(w, g, r.spans, self.sample_rate)
            results.append((resample(spliced, self.sample_rate, r.sr), r.sr))
        return results

    def _span_frames(self, spans: Sequence[Span], num_samples: int, num_frames: int) -> np.ndarray:
        duration = num_samples / self.sample_rate
        frames = np.zeros(num_frames, dtype=bool)
        if not spans:
            raise ConfigError("infill needs at least one span (start, end) in seconds")
        fps = self.sample_rate / self.mel_config.hop_length
        for start, end in spans:
            if not (0 <= start < end) or start >= duration:
                raise ConfigError(f"span ({start}, {end}) must satisfy 0 <= start < end and start < {duration:.2f} s")
            frames[int(np.floor(start * fps)) : int(np.ceil(min(end, duration) * fps)) + 1] = True
        return frames


def splice(original: np.ndarray, generated: np.ndarray, spans: Sequence[Span], sr: int) -> np.ndarray:
    """Take ``generated`` inside the spans and ``original`` elsewhere, with short linear cross-fades (both 1-D at sr).
    """
    n = len(original)
    generated = np.pad(generated, (0, max(0, n - len(generated))))[:n]
    weight = np.zeros(n, dtype=np.float32)  # 1 = generated
    fade = max(1, int(CROSSFADE_S * sr))
    for start, end in spans:
        a, b = int(start * sr), min(n, int(end * sr))
        weight[a:b] = 1.0
        ramp_in = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        lo = max(0, a - fade)
        weight[lo:a] = np.maximum(weight[lo:a], ramp_in[fade - (a - lo):])
        hi = min(n, b + fade)
        weight[b:hi] = np.maximum(weight[b:hi], ramp_in[::-1][: hi - b])
    return (weight * generated + (1 - weight) * original).astype(np.float32)
