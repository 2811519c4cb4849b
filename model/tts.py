"""Zero-shot TTS planning: from text and a voice prompt to the frame-level conditions the flow model fills in.

Voicebox-style inference: the prompt's frames are known (its audio features and its phones, forced-aligned to the
audio by the bundle's prompt aligner, or the duration model's durations rescaled to the prompt's length); each chunk
of new text gets phones from espeak-ng and durations from the duration model conditioned on the prompt's
durations; the sampler generates the new frames.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from .aligner import PromptAligner
from .audio import load_audio
from .duration import DurationModel, expand_durations, rescaled_prompt_durations
from .errors import AudioError
from .stages import stage
from .text import MAX_CHUNK_CHARS, PhoneVocab, split_sentences, text_to_phone_words, text_to_phones

MIN_PROMPT_S = 0.5
MAX_PROMPT_S = 15.0
VOICES_DIR = "voices"  # inside the bundle's tts/ directory: NAME.wav + NAME.json ({"text": transcript})


# Each model encodes phone symbols with the vocabulary in its own config: the TTS model, its duration model and its
# aligner may have been trained on data with different inventories (a symbol one of them maps to <unk>).


@dataclass
class Prompt:
    symbols: list[str]  # the transcript's phones
    ids: list[int]  # ... as the TTS model's ids
    durations: np.ndarray  # (N,) frames per phone, summing to the prompt's frame count
    labels: np.ndarray  # (T_p,) frame labels


@dataclass
class Chunk:
    text: str
    ids: list[int]  # the TTS model's phone ids
    durations: np.ndarray  # (N,) predicted frames per phone
    labels: np.ndarray  # (T_c,) frame labels
    words: list[tuple[str, int, int]] = field(default_factory=list)  # (word, first phone, end phone)
    symbols: list[str] = field(default_factory=list)  # the phones (espeak-ng symbols), pauses included

    def word_times(self, frame_s: float) -> list[WordTime]:
        """Each word's span in seconds from the start of this chunk's audio, from the durations it is generated
        with (speed included): phone k starts where the frames of the phones before it end."""
        edges = self._edges(frame_s)
        return [WordTime(word, float(edges[a]), float(edges[b])) for word, a, b in self.words]

    def phone_times(self, frame_s: float) -> list[WordTime]:
        """Every phone's span (pauses too, as espeak-ng's "_" symbols), in seconds from the chunk's start."""
        edges = self._edges(frame_s)
        return [WordTime(symbol, float(edges[k]), float(edges[k + 1])) for k, symbol in enumerate(self.symbols)]

    def _edges(self, frame_s: float) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.durations)]) * frame_s


@dataclass(frozen=True)
class WordTime:
    """A labelled span of the audio: a word, or (`Chunk.phone_times`) a phone."""

    word: str
    start: float  # seconds
    end: float

    def shifted(self, seconds: float) -> WordTime:
        return WordTime(self.word, self.start + seconds, self.end + seconds)

    def to_json(self, label: str = "word") -> dict[str, str | float]:
        return {label: self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass
class Voice:
    name: str
    wav: np.ndarray  # 16 kHz
    text: str


def check_prompt_length(num_samples: int, sample_rate: int) -> None:
    seconds = num_samples / sample_rate
    if not MIN_PROMPT_S <= seconds <= MAX_PROMPT_S:
        raise AudioError(f"the voice prompt is {seconds:.2f} s; it must be {MIN_PROMPT_S}-{MAX_PROMPT_S} s")


def align_prompt(text: str, feats: Tensor, vocab: PhoneVocab, durations: DurationModel,
                 aligner: PromptAligner | None = None) -> Prompt:
    """The prompt transcript's phones and their frames in the prompt's features (T, n_mels): forced-aligned to the
    audio when there is an aligner, else the duration model's durations rescaled to T (about half as accurate)."""
    with stage("text frontend"):
        symbols = text_to_phones(text)
    ids = vocab.encode(symbols)
    with stage("prompt alignment"):
        if aligner is not None:
            frames = aligner.align(feats, aligner.vocab.encode(symbols))
        else:
            frames = rescaled_prompt_durations(durations.vocab.encode(symbols), feats.shape[0], durations)
    return Prompt(symbols, ids, frames, expand_durations(ids, frames))


def known_prompt(alignment: Sequence[tuple[str, int]], vocab: PhoneVocab, frames: int) -> Prompt | None:
    """A Prompt from stored (phone, frames) pairs; None when they do not cover ``frames`` (then align again)."""
    symbols = [p for p, _ in alignment]
    durations = np.array([n for _, n in alignment], dtype=np.int64)
    if int(durations.sum()) != frames:
        return None
    ids = vocab.encode(symbols)
    return Prompt(symbols, ids, durations, expand_durations(ids, durations))


def plan_chunks(text: str, vocab: PhoneVocab, durations: DurationModel, prompt: Prompt, speed: float = 1.0,
                max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Split the text at sentence boundaries and predict each chunk's phone durations given the prompt's."""
    chunks = []
    for piece in split_sentences(text, max_chars):
        with stage("text frontend"):
            symbols, words = text_to_phone_words(piece)
        ids = vocab.encode(symbols)
        all_ids = np.array(durations.vocab.encode(prompt.symbols + symbols))
        given = np.concatenate([prompt.durations, np.zeros(len(ids))])
        known = np.concatenate([np.ones(len(prompt.ids), bool), np.zeros(len(ids), bool)])
        with stage("durations"):
            frames = durations.predict(all_ids, given, known, speed=speed).cpu().numpy()[len(prompt.ids):]
        if frames.sum() == 0:
            frames[:] = 1
        chunks.append(Chunk(piece, ids, frames, expand_durations(ids, frames), words, symbols))
    return chunks


def load_voices(directory: str | os.PathLike) -> dict[str, Voice]:
    """Built-in voices of a bundle: ``NAME.wav`` + ``NAME.json`` with the transcript."""
    directory = Path(directory)
    voices = {}
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        wav = meta.with_suffix(".wav")
        if wav.is_file():
            voices[meta.stem] = Voice(meta.stem, load_audio(wav), json.loads(meta.read_text())["text"])
    return voices
