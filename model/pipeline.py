"""``SpeechFlowPipeline``: waveforms in, waveforms out, for every task a bundle serves.

This is the single generate path: the CLI, the service and the evaluation all call it, so features, sampling and
vocoding cannot drift apart between training, offline use and serving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .aligner import PromptAligner
from .audio import prepare_waveform, resample
from .bundle import ALIGNER_DIR, BUNDLE_FILE, DURATION_DIR, VOCODER_DIR, read_bundle_info, task_dirs
from .checkpoint import CONFIG_FILE
from .defaults import sampling
from .duration import DurationModel
from .errors import CheckpointError, ConfigError
from .features import MelSpectrogram
from .modeling import SpeechFlowModel, resolve_device
from .reconstruct import mask_reconstruction, separation_masks
from .text import PhoneVocab
from .tts import VOICES_DIR, Voice, align_prompt, check_prompt_length, load_voices, plan_chunks
from .vocoder import GriffinLimVocoder
from .vocos import VocosVocoder
from .windows import plan_windows, stitch

CROSSFADE_S = 0.01  # splice regenerated spans into the original audio with 10 ms linear fades
WINDOW_S = 6.0  # long inputs are generated in windows of this length ...
OVERLAP_S = 1.0  # ... overlapping by this much, cross-faded
MAX_BATCH_FRAMES = 24_000  # windows per sampler call are capped by total frames (memory)
RECONSTRUCTIONS = ("mask", "vocoder")
TTS_JOIN_FADE_S = 0.02  # chunks of long text are joined with 20 ms cross-fades

Span = tuple[float, float]


@dataclass
class InfillRequest:
    wav: np.ndarray  # (n,) or (n, channels), any rate
    sr: int
    spans: Sequence[Span]  # seconds


class SpeechFlowPipeline:
    """Loads a bundle (``pretrained/ enhance/ separate/ tts/ vocoder/`` + ``bundle.json``) or a single model
    directory, and runs the tasks it has."""

    def __init__(self, models: dict[str, SpeechFlowModel], info: dict | None = None,
                 vocoder: VocosVocoder | None = None, durations: DurationModel | None = None,
                 voices: dict[str, Voice] | None = None, aligner: PromptAligner | None = None) -> None:
        if not models:
            raise CheckpointError("a pipeline needs at least one model")
        self.models = models
        self.info = info or {}
        first = next(iter(models.values()))
        self.mel_config = first.config.mel
        self.device = first.device
        self.mel = MelSpectrogram(self.mel_config).to(self.device)
        if vocoder is not None and vocoder.config.mel != self.mel_config:
            raise CheckpointError("the bundle's vocoder was trained on other mel settings than its models")
        self.vocoder: VocosVocoder | GriffinLimVocoder = vocoder or GriffinLimVocoder(self.mel_config)
        if aligner is not None and aligner.config.mel != self.mel_config:
            raise CheckpointError("the bundle's prompt aligner was trained on other mel settings than its models")
        self.durations = durations
        self.aligner = aligner
        self.voices = voices or {}

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
        vocoder = (VocosVocoder.from_pretrained(path / VOCODER_DIR, device=dev)
                   if (path / VOCODER_DIR / CONFIG_FILE).is_file() else None)
        durations = (DurationModel.from_pretrained(path / DURATION_DIR, device=dev)
                     if (path / DURATION_DIR / CONFIG_FILE).is_file() else None)
        tts_dir = task_dirs(path).get("tts")
        voices = load_voices(tts_dir / VOICES_DIR) if tts_dir is not None else {}
        aligner = (PromptAligner.from_pretrained(path / ALIGNER_DIR, device=dev)
                   if (path / ALIGNER_DIR / CONFIG_FILE).is_file() else None)
        return cls(models, read_bundle_info(path), vocoder, durations, voices, aligner)

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

    def generate_windowed(
        self,
        task: str,
        conds: Sequence[Tensor],
        seeds: Sequence[int],
        *,
        steps: int,
        solver: str,
        guidance: float,
        window_s: float = WINDOW_S,
        overlap_s: float = OVERLAP_S,
    ) -> list[Tensor]:
        """Conditions (T_i, C) -> generated features (T_i, x_dim), long ones in cross-faded windows.

        All windows of all requests are sampled together (in chunks of at most MAX_BATCH_FRAMES); window k of a
        request is seeded with (seed, k), so a request's output does not depend on its batch-mates.
        """
        model = self.model(task)
        fps = self.sample_rate / self.mel_config.hop_length
        window, overlap = int(window_s * fps), int(overlap_s * fps)
        plans = [plan_windows(c.shape[0], window, overlap) for c in conds]
        pieces = [(i, k, s, e) for i, plan in enumerate(plans) for k, (s, e) in enumerate(plan)]
        pieces.sort(key=lambda p: p[3] - p[2])  # similar lengths together: less padding
        generated: dict[tuple[int, int], Tensor] = {}
        for chunk in _frame_budget_chunks(pieces, MAX_BATCH_FRAMES):
            parts = [conds[i][s:e] for i, _, s, e in chunk]
            cond = torch.nn.utils.rnn.pad_sequence(parts, batch_first=True)
            lengths = torch.tensor([p.shape[0] for p in parts], device=cond.device)
            mask = torch.arange(cond.shape[1], device=cond.device)[None] < lengths[:, None]
            out = model.generate(cond, mask, [(seeds[i] + 1_000_003 * k) % 2**31 for i, k, _, _ in chunk],
                                 nfe=steps, solver=solver, guidance=guidance)
            for row, (i, k, s, e) in enumerate(chunk):
                generated[(i, k)] = out[row, : e - s].float()
        n_streams = model.config.network.x_dim // self.mel_config.n_mels
        return [stitch([generated[(i, k)] for k in range(len(plan))], plan, conds[i].shape[0], n_streams)
                for i, plan in enumerate(plans)]

    # --- enhancement and separation -----------------------------------------------------------------------------
    def enhance(self, wav: np.ndarray, sr: int, **kwargs) -> tuple[np.ndarray, int]:
        """Noisy speech -> (clean speech (n,), sr) at the input's rate and length."""
        return self.enhance_batch([(wav, sr)], **kwargs)[0]

    def enhance_batch(self, items: Sequence[tuple[np.ndarray, int]], **kwargs) -> list[tuple[np.ndarray, int]]:
        return self._run_task("enhance", items, **kwargs)

    def separate(self, wav: np.ndarray, sr: int, **kwargs) -> tuple[np.ndarray, int]:
        """Two-talker mixture -> ((2, n) speakers, sr) at the input's rate and length."""
        return self.separate_batch([(wav, sr)], **kwargs)[0]

    def separate_batch(self, items: Sequence[tuple[np.ndarray, int]], **kwargs) -> list[tuple[np.ndarray, int]]:
        return self._run_task("separate", items, **kwargs)

    def _run_task(
        self,
        task: str,
        items: Sequence[tuple[np.ndarray, int]],
        *,
        steps: int | None = None,
        solver: str | None = None,
        guidance: float | None = None,
        seed: int | Sequence[int] = 0,
        reconstruction: str = "mask",
        window_s: float = WINDOW_S,
        timings: dict[str, float] | None = None,
    ) -> list[tuple[np.ndarray, int]]:
        """The shared task path; ``timings``, when given, accumulates seconds per stage (features, sampler,
        reconstruction) for the service's metrics. Sampling settings left None take the task's defaults
        (`model.defaults`)."""
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
        self.model(task)  # fail before any work if the bundle lacks the task
        seeds = [seed + i for i in range(len(items))] if isinstance(seed, int) else list(seed)
        with self._timed("features", timings):
            wavs = [prepare_waveform(w, sr, self.sample_rate) for w, sr in items]
            feats, mask = self.features(wavs)
            conds = [feats[i, : int(n)] for i, n in enumerate(mask.sum(1).tolist())]
        with self._timed("sampler", timings):
            s = sampling(task, steps, guidance, solver)
            outs = self.generate_windowed(task, conds, seeds, steps=s.steps, solver=s.solver, guidance=s.guidance,
                                          window_s=window_s)
        results = []
        with self._timed("reconstruction", timings):
            for (_, sr), wav, out in zip(items, wavs, outs, strict=True):
                audio = self.reconstruct(task, wav, out, reconstruction)  # (n,) or (2, n) at 16 kHz
                audio = np.stack([resample(a, self.sample_rate, sr) for a in audio]) if audio.ndim == 2 else \
                    resample(audio, self.sample_rate, sr)
                results.append((audio.astype(np.float32), sr))
        return results

    @contextmanager
    def _timed(self, stage: str, timings: dict[str, float] | None) -> Iterator[None]:
        if timings is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # kernels are asynchronous: time what actually ran
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start

    def reconstruct(self, task: str, wav: np.ndarray, feats: Tensor, reconstruction: str) -> np.ndarray:
        """Generated features (T, x_dim) of one input (n,) at 16 kHz -> waveform(s) of the input's length."""
        x = torch.from_numpy(wav).to(self.device)[None]
        n = len(wav)
        if reconstruction == "mask":
            if task == "enhance":
                return mask_reconstruction(x, feats[None], self.mel)[0].cpu().numpy()
            return separation_masks(x, feats[None], self.mel)[0].cpu().numpy()
        streams = feats.chunk(feats.shape[-1] // self.mel_config.n_mels, dim=-1)  # one (T, n_mels) per speaker
        full = torch.ones(1, feats.shape[0], dtype=torch.bool, device=feats.device)
        audio = [np.pad(w, (0, max(0, n - len(w))))[:n] for s in streams for w in self.vocode(s[None], full)]
        return audio[0] if len(audio) == 1 else np.stack(audio)

    # --- text-to-speech ------------------------------------------------------------------------------------------
    def tts(
        self,
        text: str,
        *,
        prompt_wav: np.ndarray | None = None,
        prompt_sr: int | None = None,
        prompt_text: str | None = None,
        voice: str | None = None,
        speed: float = 1.0,
        steps: int | None = None,
        solver: str | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Text in the voice of a prompt (audio + its transcript) or of a built-in ``voice`` -> (waveform, 16 kHz).

        Long text is split at sentence boundaries; the chunks are generated as one batch, each after the same
        prompt, and joined with short cross-fades.
        """
        model = self.model("tts")
        if self.durations is None:
            raise CheckpointError("this bundle's TTS model has no duration model (tts/duration/)")
        wav, prompt_text = self._prompt(prompt_wav, prompt_sr, prompt_text, voice)
        vocab = PhoneVocab(model.config.phones)
        feats, _ = self.features([wav])
        prompt_feats = feats[0]  # (T_p, n_mels)
        t_p = prompt_feats.shape[0]
        prompt = align_prompt(prompt_text, prompt_feats, vocab, self.durations, self.aligner)
        chunks = plan_chunks(text, vocab, self.durations, prompt, speed)

        lengths = [t_p + len(c.labels) for c in chunks]
        t_max = max(lengths)
        cond = torch.zeros(len(chunks), t_max, prompt_feats.shape[1], device=self.device)
        phones = torch.zeros(len(chunks), t_max, dtype=torch.long, device=self.device)
        cond[:, :t_p] = prompt_feats
        phones[:, :t_p] = torch.from_numpy(prompt.labels).to(self.device)
        for i, c in enumerate(chunks):
            phones[i, t_p : lengths[i]] = torch.from_numpy(c.labels).to(self.device)
        positions = torch.arange(t_max, device=self.device)[None]
        mask = positions < torch.tensor(lengths, device=self.device)[:, None]
        known_mask = (positions < t_p) & mask
        s = sampling("tts", steps, guidance, solver)
        out = model.generate(cond, mask, [seed + i for i in range(len(chunks))], nfe=s.steps, solver=s.solver,
                             guidance=s.guidance, known=cond, known_mask=known_mask, phones=phones)
        pieces = [self.vocode(out[i : i + 1, t_p : lengths[i]], mask[i : i + 1, t_p : lengths[i]])[0]
                  for i in range(len(chunks))]
        return join_with_crossfade(pieces, int(TTS_JOIN_FADE_S * self.sample_rate)), self.sample_rate

    def _prompt(self, wav: np.ndarray | None, sr: int | None, text: str | None,
                voice: str | None) -> tuple[np.ndarray, str]:
        """(16 kHz prompt waveform, transcript) from a built-in voice or from the caller's audio + transcript."""
        if voice is not None:
            if voice not in self.voices:
                raise ConfigError(f"unknown voice {voice!r}; this bundle has: {', '.join(self.voices) or 'none'}")
            chosen = self.voices[voice]
            return chosen.wav, chosen.text
        if wav is None or sr is None or not (text and text.strip()):
            raise ConfigError("give a voice, or prompt_wav + prompt_sr + prompt_text (the prompt's transcript)")
        wav = prepare_waveform(wav, sr, self.sample_rate)
        check_prompt_length(len(wav), self.sample_rate)
        return wav, text

    # --- infilling ----------------------------------------------------------------------------------------------
    def infill(self, wav: np.ndarray, sr: int, spans: Sequence[Span], **kwargs) -> tuple[np.ndarray, int]:
        """Regenerate the given time spans (seconds) of a recording with the pre-trained model; the rest of the
        recording is kept as it was. Returns (float32 waveform, sr) at the input's rate."""
        return self.infill_batch([InfillRequest(wav, sr, spans)], **kwargs)[0]

    def infill_batch(
        self,
        requests: Sequence[InfillRequest],
        *,
        steps: int | None = None,
        solver: str | None = None,
        guidance: float | None = None,
        seed: int | Sequence[int] = 0,
    ) -> list[tuple[np.ndarray, int]]:
        model = self.model("pretrain")
        s = sampling("pretrain", steps, guidance, solver)
        seeds = [seed + i for i in range(len(requests))] if isinstance(seed, int) else list(seed)
        wavs = [prepare_waveform(r.wav, r.sr, self.sample_rate) for r in requests]
        feats, mask = self.features(wavs)
        gen_mask = torch.zeros_like(mask)
        for i, (r, w) in enumerate(zip(requests, wavs, strict=True)):
            gen_mask[i] = torch.from_numpy(self._span_frames(r.spans, len(w), mask.shape[1])).to(self.device)
        gen_mask &= mask
        cond = feats * (~gen_mask)[..., None]
        out = model.generate(cond, mask, seeds, nfe=s.steps, solver=s.solver, guidance=s.guidance, known=feats,
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


def _frame_budget_chunks(pieces: list[tuple[int, int, int, int]], budget: int):
    """Cut length-sorted (request, window, start, end) pieces into runs whose padded size stays within budget."""
    chunk: list[tuple[int, int, int, int]] = []
    for piece in pieces:
        if chunk and (len(chunk) + 1) * (piece[3] - piece[2]) > budget:
            yield chunk
            chunk = []
        chunk.append(piece)
    if chunk:
        yield chunk


def join_with_crossfade(pieces: Sequence[np.ndarray], fade: int) -> np.ndarray:
    """Concatenate 1-D waveforms, overlapping each joint by ``fade`` samples with a linear cross-fade."""
    out = pieces[0].astype(np.float32)
    for piece in pieces[1:]:
        n = min(fade, len(out), len(piece))
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        joint = out[len(out) - n :] * (1 - ramp) + piece[:n] * ramp
        out = np.concatenate([out[: len(out) - n], joint, piece[n:]])
    return out


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
