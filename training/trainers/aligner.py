"""Prompt-aligner training (`model/aligner.py`): frame-level phone cross-entropy on aligned crops, and the
measurement that compares it with the duration-rescaling aligner on held-out speakers.

Data are the cuts with phone alignments (espeak-ng cuts of the synthetic corpus, or MFA phones), read as random crops
with their own frame labels (`training.tasks.tts.AlignedCropDataset`, the TTS fine-tuning data).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.aligner import AlignerConfig, PromptAligner
from model.audio import load_audio
from model.duration import DurationModel, expand_durations, rescaled_prompt_durations
from model.errors import ConfigError
from model.features import MelSpectrogram
from model.text import PAD_ID, PAUSES, text_to_phones
from training.data.alignments import frame_accuracy, phones_to_frames
from training.data.cuts import SOURCE_KEY
from training.data.labelling import SOURCE
from training.data.loading import all_of, load_mono, loader_factory, min_duration, sampler_config
from training.data.manifest import Utterance, read_manifest, rows_with_phones
from training.tasks.pretraining import frame_mask
from training.tasks.tts import AlignedCropDataset, has_phones

from .duration import vocab_for
from .trainer import TrainConfig, Trainer


def default_train_config(**overrides: Any) -> TrainConfig:
    """A small convolutional model: a high learning rate, short warm-up, short crops."""
    return TrainConfig(**{"steps": 1500, "lr": 2e-3, "warmup": 100, "save_every": 250, "num_workers": 0,
                          "batch_seconds": 48.0, "max_seconds": 4.0, **overrides})


class AlignerObjective:
    """Cross-entropy of every real frame's phone label; padded frames do not count."""

    def __init__(self, config: AlignerConfig) -> None:
        self.mel = MelSpectrogram(config.mel)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["wav"].device)
        feats = self.mel(batch["wav"])  # (B, T, n_mels)
        mask = frame_mask(self.mel, batch["lengths"], feats.shape[1])  # (B, T)
        labels = batch["phones"][:, : feats.shape[1]]
        logits = net(feats, mask).float()  # (B, T, V)
        real = mask & (labels != PAD_ID)
        return F.cross_entropy(logits[real], labels[real])


def train_aligner(data: str | os.PathLike, out: str | os.PathLike, config: AlignerConfig | None = None,
                  train: TrainConfig | None = None, resume: bool = False) -> Path:
    """Train (or resume) a prompt aligner on a CutSet's phone alignments; returns the run directory. The phone
    inventory comes from a pass over the cuts' alignments (metadata only)."""
    train = train or default_train_config()
    out = Path(out)
    rows = rows_with_phones(read_manifest(data, min_duration=0.5))
    if resume and (out / "config.json").is_file():
        model = PromptAligner.from_pretrained(out)
        if config is not None and config.vocab != model.config.vocab:
            raise ConfigError(f"{out} holds an aligner with another vocabulary; resume without one or use a new out")
    else:
        torch.manual_seed(train.seed)
        model = PromptAligner(config or AlignerConfig(vocab=vocab_for(rows).to_list()))
    model.config.extra["data"] = {"manifest": str(data), "utterances": len(rows)}
    mel = model.config.mel
    dataset = AlignedCropDataset(train.max_seconds, model.vocab, mel.sample_rate, mel.hop_length, seed=train.seed)
    loaders = loader_factory(data, dataset, sampler_config(train), train.num_workers,
                             keep=all_of(min_duration(0.5), has_phones))
    return Trainer(model, AlignerObjective(model.config), loaders, train, out).fit(resume=resume)


def compare_prompt_aligners(rows: Sequence[Utterance], aligner: PromptAligner | None,
                            durations: DurationModel | None, max_seconds: float = 30.0) -> dict[str, Any]:
    """Frame accuracy of each prompt aligner against the rows' true alignments, every row used as a prompt with its
    own phone sequence: the forced aligner (audio + phones) and the duration model rescaled to the prompt length
    (phones + length only). Per method: mean and median over utterances, and pooled over all frames."""
    methods = {name: [] for name, m in (("forced_aligner", aligner), ("rescaled_durations", durations)) if m}
    if not methods:
        raise ConfigError("nothing to compare: the bundle has neither a prompt aligner nor a duration model")
    vocab = (aligner or durations).vocab  # the true frame labels; each model reads the symbols with its own
    mel = MelSpectrogram(aligner.config.mel if aligner else None)
    frames_total = 0
    for row in rows_with_phones(list(rows)):
        if row.duration > max_seconds or row.meta.get(SOURCE_KEY) == SOURCE:  # not the aligner's own labels
            continue
        phones = [tuple(p) for p in row.meta["phones"]]
        symbols = [p[0] for p in phones]
        ids = np.asarray(vocab.encode(symbols), np.int64)
        wav = load_mono(row.cut.truncate(duration=min(max_seconds, row.cut.duration)), mel.cfg.sample_rate)
        feats = mel(torch.from_numpy(wav))[0]  # (T, n_mels)
        num_frames = feats.shape[0]
        if len(ids) > num_frames:
            continue
        true = phones_to_frames(phones, num_frames, vocab, fps=mel.cfg.sample_rate // mel.cfg.hop_length)
        frames_total += num_frames
        if aligner is not None:
            pred = expand_durations(ids, aligner.align(feats, aligner.vocab.encode(symbols)))
            methods["forced_aligner"].append((frame_accuracy(pred, true), num_frames))
        if durations is not None:
            frames = rescaled_prompt_durations(durations.vocab.encode(symbols), num_frames, durations)
            methods["rescaled_durations"].append((frame_accuracy(expand_durations(ids, frames), true), num_frames))
    report: dict[str, Any] = {"utterances": len(next(iter(methods.values()))), "frames": frames_total}
    if not frames_total:
        raise ConfigError("no utterance with phone alignments fits the comparison (short enough, enough frames)")
    for name, scores in methods.items():
        acc = np.array([a for a, _ in scores])
        weights = np.array([n for _, n in scores])
        report[name] = {"mean": float(acc.mean()), "median": float(np.median(acc)),
                        "pooled": float((acc * weights).sum() / weights.sum())}
    return report


FLITE_VOICES = ("slt", "awb", "rms", "kal16")
FLITE_PAUSE = "pau"


def _flite_with_phone_ends(text: str, voice: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """flite speech (16 kHz) and its own phone end times (s), from ``-psdur``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        proc = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(out)], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0 or not out.is_file():
            raise ConfigError(f"flite failed: {proc.stderr.strip()[:200]}")
        ends = [(item.rsplit(":", 1)[0], float(item.rsplit(":", 1)[1])) for item in proc.stdout.split()]
        return load_audio(out), ends


def flite_boundary_accuracy(texts: Sequence[str], aligner: PromptAligner | None, durations: DurationModel | None,
                            n: int = 100, voices: Sequence[str] = FLITE_VOICES) -> dict[str, Any]:
    """How well the prompt aligners place phone boundaries in speech of another engine: flite, whose ``-psdur``
    gives its own phone end times. Our phones come from espeak-ng's frontend, flite's from its lexicon; an utterance
    counts only when both have the same number of non-pause phones (then the k-th ends are compared). Texts are
    spoken in turn by `voices`; the first `n` usable utterances are used. Per method: mean and median absolute error
    of the phone ends (ms) and the share within 20 / 50 ms."""
    methods = {name: [] for name, m in (("forced_aligner", aligner), ("rescaled_durations", durations)) if m}
    if not methods:
        raise ConfigError("nothing to measure: neither a prompt aligner nor a duration model")
    mel = MelSpectrogram(aligner.config.mel if aligner else None)
    fps = mel.cfg.sample_rate // mel.cfg.hop_length
    used = tried = 0
    for i, text in enumerate(texts):
        if used >= n:
            break
        wav, ref = _flite_with_phone_ends(text, voices[i % len(voices)])
        ref_ends = np.array([end for symbol, end in ref if symbol != FLITE_PAUSE])
        symbols = text_to_phones(text)
        speech = np.array([s not in PAUSES for s in symbols])
        tried += 1
        if speech.sum() != len(ref_ends):
            continue
        used += 1
        feats = mel(torch.from_numpy(wav)[None])[0]  # (T, n_mels)
        if aligner is not None:
            frames = aligner.align(feats, aligner.vocab.encode(symbols))
            methods["forced_aligner"].append(np.cumsum(frames)[speech] / fps - ref_ends)
        if durations is not None:
            frames = rescaled_prompt_durations(durations.vocab.encode(symbols), feats.shape[0], durations)
            methods["rescaled_durations"].append(np.cumsum(frames)[speech] / fps - ref_ends)
    if not used:
        raise ConfigError(f"none of {tried} flite utterances has espeak-ng's number of phones")
    report: dict[str, Any] = {"utterances": used, "tried": tried, "voices": list(voices),
                              "boundaries": int(sum(len(e) for e in next(iter(methods.values()))))}
    for name, errors in methods.items():
        err = np.abs(np.concatenate(errors))
        report[name] = {"mean_ms": float(1000 * err.mean()), "median_ms": float(1000 * np.median(err)),
                        "within_20ms": float((err <= 0.02).mean()), "within_50ms": float((err <= 0.05).mean())}
    return report


def prompt_alignment_report(rows: Sequence[Utterance], aligner: PromptAligner | None, durations: DurationModel | None,
                            n: int | None = None, flite_n: int | None = 100) -> dict[str, Any]:
    """Both measurements of the prompt aligners on a test manifest: frame accuracy on the first `n` rows (None: all)
    against their exact alignments and, unless `flite_n` is None, phone-end errors on flite speech of `flite_n`
    usable row texts."""
    report = compare_prompt_aligners(list(rows)[:n], aligner, durations)
    if flite_n is not None:
        texts = [str(u.meta["text"]) for u in rows if u.meta.get("text")]
        report["flite_boundaries"] = flite_boundary_accuracy(texts, aligner, durations, n=flite_n)
    return report
