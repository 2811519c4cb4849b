"""Speech quality metrics and the classical peers that SpeechFlow is compared with.

Every function takes float 1-D waveforms at 16 kHz unless stated (other rates are resampled where the metric needs
16 kHz). Estimate and reference of different lengths are cropped to the shorter: vocoders and STFT round trips may
add or drop a few samples, and cropping keeps the metric about content rather than length.

Metrics that are undefined for an input (a silent reference, speech too short for the metric) return NaN rather
than raising, so one odd utterance cannot abort an evaluation; the evaluation counts the NaNs it averages over.
The third-party libraries (`pesq`, `pystoi`, `speechmos`, `noisereduce`) are imported on first use, so this module
can be imported without the `eval` extra.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import warnings
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy import signal

from model.audio import SAMPLE_RATE, resample

SI_SDR_LIMIT_DB = 100.0  # perfect / silent estimates give +-100 dB instead of +-inf, so means stay finite
SILENT_ENERGY = 1e-10  # sum of squares below this (about -100 dB for 1 s) counts as silence
PESQ_MIN = 1.04  # the bottom of the wide-band MOS-LQO scale (raw score -0.5 through the P.862.2 mapping)
DNSMOS_MIN_SECONDS = 1.0
DNSMOS_WINDOW_S = 9.01  # the models' fixed input length
STFT_WINDOW_S = 0.032  # 512 samples at 16 kHz, the usual frame for ratio masks
STFT_HOP_S = 0.008

# How often PESQ could not score an utterance, by the library's error name; read by the evaluation for its report.
pesq_failures: Counter[str] = Counter()


def _require(name: str) -> ModuleType:
    """Import an optional dependency with a message that says how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{name} is needed for evaluation: pip install 'speechflow[eval]' ({e})") from e


def align(*signals: np.ndarray) -> list[np.ndarray]:
    """Crop 1-D signals to the shortest one -> float64 copies (metrics accumulate in double precision)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in signals]
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {a.shape}")
    n = min(a.shape[0] for a in arrays)
    return [a[:n] for a in arrays]


def _to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    return resample(np.asarray(x, np.float32), sr, SAMPLE_RATE) if sr != SAMPLE_RATE else np.asarray(x, np.float32)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not np.dot: a BLAS call may wake its thread pool, which costs more than a 1-D product on a busy CPU
    return float(np.einsum("i,i->", a, b))


def _is_silent(x: np.ndarray) -> bool:
    return _dot(x, x) < SILENT_ENERGY


# ---------------------------------------------------------------------------------------------------------- SI-SDR


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): both signals zero-mean, `ref` optimally scaled onto `est`.

    Clamped to +-100 dB: est == ref gives 100, a silent estimate -100 (it misses all of the target). A silent
    reference gives NaN (nothing to measure against).
    """
    e, r = align(est, ref)
    e, r = e - e.mean(), r - r.mean()
    if _is_silent(r):
        return math.nan
    if _is_silent(e):
        return -SI_SDR_LIMIT_DB
    target = (_dot(e, r) / _dot(r, r)) * r
    residual = e - target
    t, n = _dot(target, target), _dot(residual, residual)
    if n <= t * 10.0 ** (-SI_SDR_LIMIT_DB / 10.0):
        return SI_SDR_LIMIT_DB
    if t <= n * 10.0 ** (-SI_SDR_LIMIT_DB / 10.0):
        return -SI_SDR_LIMIT_DB
    return 10.0 * math.log10(t / n)


def permutation_si_sdr(ests: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(k, n) estimates vs (k, n) references -> (SI-SDR per reference (k,), perm) for the best assignment.

    perm[i] is the estimate matched to reference i, chosen to maximise the mean SI-SDR (exhaustive: k is 2 here).
    """
    ests, refs = np.asarray(ests), np.asarray(refs)
    if ests.ndim != 2 or refs.ndim != 2 or ests.shape[0] != refs.shape[0]:
        raise ValueError(f"expected (k, n) estimates and references, got {ests.shape} and {refs.shape}")
    k = refs.shape[0]
    table = np.array([[si_sdr(ests[j], refs[i]) for j in range(k)] for i in range(k)])  # [ref, est]
    best = max(itertools.permutations(range(k)), key=lambda p: np.nansum(table[np.arange(k), list(p)]))
    return table[np.arange(k), list(best)], tuple(int(j) for j in best)


# ----------------------------------------------------------------------------------------------- perceptual metrics


def pesq_wb(ref: np.ndarray, est: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04..4.64) at 16 kHz.

    NaN (counted in `pesq_failures`) when the library finds no utterance or too little audio in the reference. A
    silent estimate scores the scale's floor, 1.04 (the library itself fails on it, and NaN would flatter a system
    that outputs silence).
    """
    pesq = _require("pesq")
    r, e = align(_to_16k(ref, sr), _to_16k(est, sr))
    if _is_silent(r):
        pesq_failures["silent reference"] += 1
        return math.nan
    if _is_silent(e):
        return PESQ_MIN
    try:
        return float(pesq.pesq(SAMPLE_RATE, r.astype(np.float32), e.astype(np.float32), "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError) as err:
        pesq_failures[type(err).__name__] += 1
        return math.nan


def estoi(ref: np.ndarray, est: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Extended STOI (Jensen & Taal 2016), roughly 0..1. NaN when the reference has too little speech (< ~0.4 s).

    pystoi returns 1e-5 with a warning in that case, which would read as "unintelligible"; NaN says "not measured".
    """
    pystoi = _require("pystoi")
    r, e = align(ref, est)
    if _is_silent(r):
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(pystoi.stoi(r, e, sr, extended=True))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return score


@functools.lru_cache(maxsize=2)
def _dnsmos_model(threads: int | None):  # -> speechmos.dnsmos.DNSMOS, built once per process and thread count
    mod, ort = _require("speechmos.dnsmos"), _require("onnxruntime")
    root = Path(mod.__file__).parent / "dnsmos_models"
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # idle onnxruntime threads otherwise spin for a while after each run, stealing the CPU from the other metrics
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    class Dnsmos(mod.DNSMOS):  # speechmos' scoring, with sessions built here (its constructor takes no options)
        def __init__(self, primary: Path, p808: Path) -> None:
            self.primary_model_path = str(primary)
            self.onnx_sess = ort.InferenceSession(str(primary), options, providers=["CPUExecutionProvider"])
            self.p808_onnx_sess = ort.InferenceSession(str(p808), options, providers=["CPUExecutionProvider"])

    return Dnsmos(root / "sig_bak_ovr.onnx", root / "model_v8.onnx")


def dnsmos(wav: np.ndarray, sr: int = SAMPLE_RATE, threads: int | None = None) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 (Reddy et al. 2022) from speechmos' bundled ONNX models -> {ovrl, sig, bak}.

    The models score 9.01 s windows (1 s hops for longer clips, averaged). Clips of 1..9 s are looped to exactly one
    window, as the reference script loops them (it loops to a power-of-two multiple and scores several shifted
    windows of the same loop, 5x the cost for a 3 s clip). Clips shorter than 1 s, or silent, give NaNs: a looped
    sub-second clip is a buzz of repetitions, not speech a listener would rate. Samples are clipped to [-1, 1].
    `threads` bounds onnxruntime's thread pool (default: all cores), e.g. 1 per worker process.
    """
    x = np.clip(_to_16k(wav, sr), -1.0, 1.0)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    if x.shape[0] < DNSMOS_MIN_SECONDS * SAMPLE_RATE or _is_silent(x.astype(np.float64)):
        return {"ovrl": math.nan, "sig": math.nan, "bak": math.nan}
    window = int(DNSMOS_WINDOW_S * SAMPLE_RATE)
    if x.shape[0] < window:
        x = np.resize(x, window)  # cyclic tiling
    out = _dnsmos_model(threads)(x, SAMPLE_RATE, False)
    return {"ovrl": float(out["ovrl_mos"]), "sig": float(out["sig_mos"]), "bak": float(out["bak_mos"])}


# ----------------------------------------------------------------------------------------------------------- peers


def stft(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(n,) -> complex (freq, frames): 32 ms Hann windows, 8 ms hop (the frame used for masks and pictures)."""
    nperseg = round(STFT_WINDOW_S * sr)
    return signal.stft(x, fs=sr, nperseg=nperseg, noverlap=nperseg - round(STFT_HOP_S * sr))[2]


def _istft(spec: np.ndarray, sr: int, n: int) -> np.ndarray:
    nperseg = round(STFT_WINDOW_S * sr)
    x = signal.istft(spec, fs=sr, nperseg=nperseg, noverlap=nperseg - round(STFT_HOP_S * sr))[1]
    return np.pad(x, (0, max(0, n - x.shape[0])))[:n].astype(np.float32)


def oracle_irm_separation(mixture: np.ndarray, refs: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The ideal ratio mask |S_i| / sum_j |S_j| applied to the mixture's STFT -> (k, n) estimates.

    It knows the true sources, so it is an upper bound for any mask-based separator, not a fair competitor.
    """
    refs = np.asarray(refs)
    if refs.ndim != 2:
        raise ValueError(f"refs must be (k, n), got shape {refs.shape}")
    mix, *sources = align(mixture, *refs)
    n = mix.shape[0]
    mags = np.abs(np.stack([stft(s, sr) for s in sources]))
    masks = mags / np.maximum(mags.sum(axis=0, keepdims=True), 1e-12)
    spec = stft(mix, sr)
    return np.stack([_istft(m * spec, sr, n) for m in masks])


def spectral_gating(noisy: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Non-stationary spectral gating (noisereduce, Sainburg 2020): the classical enhancement peer, (n,) -> (n,)."""
    nr = _require("noisereduce")
    x = np.asarray(noisy, np.float32)
    out = nr.reduce_noise(y=x, sr=sr, stationary=False, n_jobs=1)
    return np.asarray(out, np.float32)[: x.shape[0]]
