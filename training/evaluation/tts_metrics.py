"""The TTS metrics that need a model of their own: word errors of pocketsphinx's transcript (WER) and speaker
similarity of resemblyzer d-vectors. Both run offline on a CPU core; neither knows about test cases.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from model.audio import SAMPLE_RATE, resample
from model.recognizer import normalize_transcript as normalize_text
from model.recognizer import transcribe
from training.evaluation import metrics

# Pocketsphinx decodes the audio as it is: no dither, no added noise floor. Against the digital silence of synthetic
# speech either one helps the espeak-ng voices' WER a little (~0.95 to ~0.90 on the recordings of the unseen corpus
# speakers) and hurts flite / festival more (0.21 to 0.24-0.32), and pocketsphinx's dither is random per call (the
# same espeak-ng clip decoded with 4 to 8 errors out of 9 words). Each clip is decoded from a fresh stream
# (`reinit_feat`): without it, the transcript of a clip depends on the clips decoded before it.
MIN_EMBED_SECONDS = 0.1  # after resemblyzer's silence trimming; less than this is no voice to compare


def word_errors(reference_text: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after `normalize_text` on both, via jiwer."""
    jiwer = metrics._require("jiwer")
    ref, hyp = normalize_text(reference_text), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(reference_text: str, wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Word error rate of pocketsphinx's transcript of `wav` against `reference_text` (0 = perfect; can exceed 1
    with insertions). NaN when the reference has no words."""
    errors, words = word_errors(reference_text, transcribe(wav, sr))
    return errors / words if words else math.nan


@functools.lru_cache(maxsize=1)
def _voice_encoder():  # -> resemblyzer.VoiceEncoder on CPU (weights ship with the package), built once per process
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # webrtcvad imports pkg_resources, scipy.ndimage.morphology is deprecated
        resemblyzer = metrics._require("resemblyzer")
    return resemblyzer, resemblyzer.VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """resemblyzer's d-vector (256,) of a waveform after its own preprocessing (volume, long silences trimmed);
    NaNs when less than 0.1 s of voice is left (silence has no speaker)."""
    resemblyzer, encoder = _voice_encoder()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    x = resample(x, sr, resemblyzer.sampling_rate) if sr != resemblyzer.sampling_rate else x
    if x.size and np.abs(x).max() > 0:
        x = resemblyzer.preprocess_wav(x)
    if x.size < MIN_EMBED_SECONDS * resemblyzer.sampling_rate or not np.any(x):
        return np.full(256, np.nan, dtype=np.float32)
    return np.asarray(encoder.embed_utterance(x), dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings; NaN if either is undefined (NaN) or zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if math.isfinite(norm) and norm > 0 else math.nan


def speaker_similarity(wav_a: np.ndarray, wav_b: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Cosine similarity of the resemblyzer embeddings of two waveforms (about 1 = same voice)."""
    return cosine(speaker_embedding(wav_a, sr), speaker_embedding(wav_b, sr))
