"""Microphone and channel colouration: random EQ chains (telephone band, band-limiting, shelves, peaks), input level
and clipping, all seeded.

A chain is a list of second-order sections (`scipy.signal` sos, float64 (k, 6)) drawn once per item and applied to
speech and noise alike (the same microphone hears both). `apply_chain(..., keep_level=True)` rescales the result to
the input's active speech level, so colouration changes the spectrum's shape, not how loud the talker is; the
level is a separate draw (`level_gain`), and clipping (`clip`) acts on the final input only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt, sosfreqz

from model.audio import SAMPLE_RATE
from model.errors import ConfigError

Range = tuple[float, float]


@dataclass(frozen=True)
class ColourConfig:
    """What `draw_chain` draws from. Probabilities are per item; ranges are uniform (frequencies log-uniform).

    - telephone: a 4th-order Butterworth band-pass (about 300-3400 Hz, the narrow-band phone channel);
    - otherwise, with its own probabilities, a low-pass (cheap microphones, low-rate codecs) and a high-pass (the
      low-cut filter most microphones and phones apply);
    - low and high shelves (proximity boost or thin mics; bright or dull ones), gains in dB;
    - 0..max_peaks peaking filters (resonances of a casing or a room corner), gains in dB, Q.
    """

    p_telephone: float = 0.1
    telephone_low_hz: Range = (200.0, 400.0)
    telephone_high_hz: Range = (3000.0, 3800.0)
    p_lowpass: float = 0.2
    lowpass_hz: Range = (3500.0, 7500.0)
    p_highpass: float = 0.3
    highpass_hz: Range = (60.0, 250.0)
    low_shelf_db: Range = (-8.0, 8.0)
    low_shelf_hz: Range = (100.0, 400.0)
    high_shelf_db: Range = (-10.0, 6.0)
    high_shelf_hz: Range = (2000.0, 6000.0)
    max_peaks: int = 3
    peak_db: Range = (-8.0, 8.0)
    peak_hz: Range = (200.0, 6000.0)
    peak_q: Range = (0.7, 4.0)

    def __post_init__(self) -> None:
        for name in ("p_telephone", "p_lowpass", "p_highpass"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"colour {name} must be in [0, 1], got {getattr(self, name)}")
        for name, value in vars(self).items():
            if isinstance(value, tuple) and not value[0] <= value[1]:
                raise ConfigError(f"colour {name} must be a (low, high) range, got {value}")
        nyquist = SAMPLE_RATE / 2
        if max(self.telephone_high_hz[1], self.lowpass_hz[1], self.high_shelf_hz[1], self.peak_hz[1]) >= nyquist:
            raise ConfigError(f"colouration frequencies must stay below {nyquist:g} Hz")
        if self.max_peaks < 0:
            raise ConfigError(f"max_peaks must be >= 0, got {self.max_peaks}")


# ------------------------------------------------------------------- biquads (RBJ Audio EQ Cookbook), sos rows


def _biquad(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def peaking(freq: float, gain_db: float, q: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(1, 6): gain_db at freq, bandwidth set by q, 0 dB far from it."""
    amp, w0 = 10.0 ** (gain_db / 40.0), 2 * math.pi * freq / sr
    alpha = math.sin(w0) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * math.cos(w0), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * math.cos(w0), 1 - alpha / amp])
    return _biquad(b, a)


def shelf(freq: float, gain_db: float, high: bool, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(1, 6): a low (or high) shelf of gain_db below (above) freq, slope 1."""
    amp, w0 = 10.0 ** (gain_db / 40.0), 2 * math.pi * freq / sr
    cos, alpha = math.cos(w0), math.sin(w0) / 2 * math.sqrt(2.0)
    root = 2 * math.sqrt(amp) * alpha
    sign = -1.0 if high else 1.0  # the high shelf is the low shelf with the cosine terms' signs flipped
    b = amp * np.array([(amp + 1) - sign * (amp - 1) * cos + root, 2 * sign * ((amp - 1) - sign * (amp + 1) * cos),
                        (amp + 1) - sign * (amp - 1) * cos - root])
    a = np.array([(amp + 1) + sign * (amp - 1) * cos + root, -2 * sign * ((amp - 1) + sign * (amp + 1) * cos),
                  (amp + 1) + sign * (amp - 1) * cos - root])
    return _biquad(b, a)


def _log_uniform(rng: np.random.Generator, r: Range) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


def draw_chain(rng: np.random.Generator, cfg: ColourConfig,
               sr: int = SAMPLE_RATE) -> tuple[np.ndarray, dict[str, Any]]:
    """A random EQ chain -> (sos (k, 6) float64, info describing every stage drawn)."""
    stages: list[np.ndarray] = []
    info: dict[str, Any] = {}
    if rng.random() < cfg.p_telephone:
        band = (_log_uniform(rng, cfg.telephone_low_hz), _log_uniform(rng, cfg.telephone_high_hz))
        stages.append(butter(4, band, btype="bandpass", fs=sr, output="sos"))
        info["telephone_hz"] = band
    else:
        if rng.random() < cfg.p_lowpass:
            info["lowpass_hz"] = _log_uniform(rng, cfg.lowpass_hz)
            stages.append(butter(6, info["lowpass_hz"], btype="lowpass", fs=sr, output="sos"))
        if rng.random() < cfg.p_highpass:
            info["highpass_hz"] = _log_uniform(rng, cfg.highpass_hz)
            stages.append(butter(2, info["highpass_hz"], btype="highpass", fs=sr, output="sos"))
    info["low_shelf"] = (_log_uniform(rng, cfg.low_shelf_hz), float(rng.uniform(*cfg.low_shelf_db)))
    info["high_shelf"] = (_log_uniform(rng, cfg.high_shelf_hz), float(rng.uniform(*cfg.high_shelf_db)))
    stages.append(shelf(*info["low_shelf"], high=False, sr=sr))
    stages.append(shelf(*info["high_shelf"], high=True, sr=sr))
    info["peaks"] = []
    for _ in range(int(rng.integers(0, cfg.max_peaks + 1))):
        peak = (_log_uniform(rng, cfg.peak_hz), float(rng.uniform(*cfg.peak_db)), float(rng.uniform(*cfg.peak_q)))
        info["peaks"].append(peak)
        stages.append(peaking(*peak, sr=sr))
    return np.concatenate(stages), info


def chain_response_db(sos: np.ndarray, freqs: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The chain's magnitude response (dB) at `freqs` (Hz)."""
    _, h = sosfreqz(sos, worN=np.asarray(freqs, np.float64), fs=sr)
    return 20 * np.log10(np.abs(h) + 1e-12)


def apply_chain(sos: np.ndarray, wav: np.ndarray,
                keep_level: Callable[[np.ndarray], float] | None = None) -> np.ndarray:
    """(n,) through the chain -> (n,) float32. With `keep_level` (a power measure, e.g. active_power), the output is
    rescaled to the input's value of it, so only the spectral shape changes."""
    out = sosfilt(sos, wav.astype(np.float64))
    if keep_level is not None:
        before, after = keep_level(wav), keep_level(out)
        if before > 0.0 and after > 0.0:
            out *= math.sqrt(before / after)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------- level and clipping


def level_gain(power: float, level_dbfs: float) -> float:
    """The gain that brings a signal of mean-square `power` to `level_dbfs` (1.0 for silence)."""
    return math.sqrt(10.0 ** (level_dbfs / 10.0) / power) if power > 0.0 else 1.0


def clip(rng: np.random.Generator, wav: np.ndarray, fraction: Range = (0.001, 0.02)) -> tuple[np.ndarray, dict]:
    """(n,) -> (n,) overdriven: the threshold is the level that the loudest `fraction` of samples exceed; hard
    clipping (a converter at full scale) or tanh soft clipping (an overdriven preamp), at random."""
    frac = float(rng.uniform(*fraction))
    thr = float(np.quantile(np.abs(wav), 1.0 - frac)) if wav.size else 0.0
    kind = "hard" if rng.random() < 0.5 else "soft"
    if thr <= 0.0:
        return wav, {"kind": kind, "fraction": frac, "threshold": thr}
    out = np.clip(wav, -thr, thr) if kind == "hard" else thr * np.tanh(wav / thr)
    return out.astype(np.float32), {"kind": kind, "fraction": frac, "threshold": thr}
