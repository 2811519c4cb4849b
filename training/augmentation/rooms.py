"""Reverberation: synthetic decaying-noise RIRs and simulated shoebox rooms (image method + a stochastic late tail).

Room RIRs: pyroomacoustics' image-source method gives the direct path and the early reflections of a random
shoebox room (size, absorption, source and microphone positions); the image order is capped (`RoomConfig.max_order`)
because full-order ISM costs 50 ms to 1 s per RIR and overshoots the Sabine RT60 it was asked for. From the time
when the capped ISM stops being complete, a late tail of exponentially decaying, low-passed noise takes over at the
drawn RT60, level-matched to the ISM energy there. That costs about 1.5 ms per room (order 8), so every
reverberant item gets a new room drawn from its own seeded generator (no bank to share between workers). All RIRs
are float32 (m,) with their direct path (largest tap) scaled to 1, so `reverberate` keeps the dry signal as a
time-aligned, level-matched target.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import fftconvolve, lfilter

from model.audio import SAMPLE_RATE
from model.errors import ConfigError

log = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0  # m/s
Range = tuple[float, float]


def draw_value(rng: np.random.Generator, value: float | Range) -> float:
    """A fixed value, or a uniform draw from a (low, high) range."""
    if isinstance(value, tuple | list):
        low, high = value
        return float(rng.uniform(low, high))
    return float(value)


def as_wave(x: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Any array-like -> contiguous float32 (n,); rejects other shapes and non-finite samples."""
    w = np.ascontiguousarray(x, dtype=np.float32)
    if w.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return w


def _decaying_tail(rng: np.random.Generator, m: int, rt60_s: float, sr: int) -> np.ndarray:
    """(m,) low-passed Gaussian noise whose energy falls 60 dB in rt60_s (amplitude 10^-3 at t = rt60)."""
    t = np.arange(m) / sr
    decay = np.exp(-3.0 * math.log(10.0) * t / rt60_s)
    # Real rooms damp highs faster than lows; a random one-pole low-pass is the cheap stand-in for that.
    pole = math.exp(-2 * math.pi * rng.uniform(2000.0, 6000.0) / sr)
    return lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(m)) * decay


def synthetic_rir(
    rng: np.random.Generator,
    rt60: float | Range = (0.2, 0.8),
    sr: int = SAMPLE_RATE,
    drr_db: float | Range = (0.0, 10.0),
) -> np.ndarray:
    """A synthetic room impulse response (m,), m = rt60 * sr: a unit direct path at index 0, then after a 1-5 ms gap
    low-pass filtered noise whose energy falls 60 dB in rt60 seconds.

    `drr_db` (direct-to-reverberant energy ratio) sets how far the talker seems from the microphone.
    """
    rt60_s = draw_value(rng, rt60)
    if rt60_s <= 0.0:
        raise ValueError(f"rt60 must be positive, got {rt60_s}")
    m = max(int(rt60_s * sr), 2)
    tail = _decaying_tail(rng, m, rt60_s, sr)
    tail[: min(m, int(rng.integers(int(0.001 * sr), int(0.005 * sr) + 1)))] = 0.0  # before the first reflection
    tail_energy = float(np.sum(tail**2))
    if tail_energy > 0.0:
        tail *= math.sqrt(10.0 ** (-draw_value(rng, drr_db) / 10.0) / tail_energy)
    tail[0] = 1.0  # the direct path
    return tail.astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """(n,) convolved with (m,) -> (n,), shifted so the RIR's direct path (its largest tap) lands on lag 0.

    The dry signal therefore stays a time-aligned target for the reverberant one.
    """
    wav, rir = as_wave(wav), as_wave(rir, "rir")
    if rir.size == 0:
        raise ValueError("rir is empty")
    delay = int(np.argmax(np.abs(rir)))
    wet = fftconvolve(wav.astype(np.float64), rir.astype(np.float64))
    return wet[delay : delay + wav.shape[0]].astype(np.float32)


def decay_rt60(rir: np.ndarray, sr: int = SAMPLE_RATE, low_db: float = -5.0, high_db: float = -25.0) -> float:
    """RT60 estimate (s) of (m,) from its Schroeder energy decay after the direct path: 60 dB over the slope between
    `low_db` and `high_db` (T20 by default)."""
    start = int(np.argmax(np.abs(rir))) + 1
    tail = np.asarray(rir[start:], np.float64) ** 2
    if tail.sum() <= 0.0:
        return 0.0
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum() + 1e-30)
    t_low, t_high = int(np.argmax(edc < low_db)), int(np.argmax(edc < high_db))
    return 60.0 / (high_db - low_db) * (t_low - t_high) / sr


# ----------------------------------------------------------------------------------------------- simulated rooms


@dataclass(frozen=True)
class RoomConfig:
    """The shoebox rooms that `room_rir` draws: dimensions (m), source-to-microphone distance (m), the margin both
    keep from the walls (m) and the ISM order cap.

    Sizes span a small office or bedroom (3 x 2.5 x 2.4 m) to a classroom (10 x 8 x 4 m); distances a close talker
    at a laptop to someone across the room.
    """

    length_m: Range = (3.0, 10.0)
    width_m: Range = (2.5, 8.0)
    height_m: Range = (2.4, 4.0)
    distance_m: Range = (0.5, 3.5)
    wall_margin_m: float = 0.4
    max_order: int = 8  # about 1.5 ms per room; the late tail carries the decay beyond it

    def __post_init__(self) -> None:
        for name in ("length_m", "width_m", "height_m", "distance_m"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ConfigError(f"room {name} must be a positive (low, high) range, got {(low, high)}")
        if min(self.length_m[0], self.width_m[0], self.height_m[0]) <= 2 * self.wall_margin_m:
            raise ConfigError("the smallest room must be larger than twice the wall margin")
        if self.max_order < 1:
            raise ConfigError(f"max_order must be >= 1, got {self.max_order}")


def _positions(rng: np.random.Generator, dims: np.ndarray, cfg: RoomConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(microphone (3,), source (3,), their distance): a random mic, and a source at a drawn distance from it in a
    random direction, both inside the margins (the distance shrinks when the room is too small for it)."""
    low, high = np.full(3, cfg.wall_margin_m), dims - cfg.wall_margin_m
    mic = rng.uniform(low, high)
    mic[2] = rng.uniform(max(low[2], 0.7), min(high[2], 1.8))  # desk to standing height, where rooms allow
    want = draw_value(rng, cfg.distance_m)
    for _ in range(32):
        direction = rng.standard_normal(3)
        direction[2] *= 0.3  # talkers are roughly level with the microphone
        source = mic + want * direction / np.linalg.norm(direction)
        if np.all(source >= low) and np.all(source <= high):
            break
        want *= 0.95
    source = np.clip(source, low, high)
    return mic, source, float(np.linalg.norm(source - mic))


@functools.cache
def rooms_available() -> bool:
    """Whether pyroomacoustics (the train extra) is importable; warns once when it is not."""
    found = importlib.util.find_spec("pyroomacoustics") is not None
    if not found:
        log.warning("pyroomacoustics is not installed (pip install '.[train]'): simulated rooms fall back to "
                    "synthetic RIRs")
    return found


def room_rir(rng: np.random.Generator, cfg: RoomConfig, rt60: float | Range = (0.2, 0.8),
             sr: int = SAMPLE_RATE) -> tuple[np.ndarray, dict[str, Any]]:
    """A simulated room's RIR (m,), direct path = 1 at its largest tap, and info: dims, rt60 (the tail's and the
    Sabine absorption's target), absorption, distance, ism_order."""
    import pyroomacoustics as pra  # the train extra; imported here so the module loads without it

    dims = np.array([draw_value(rng, cfg.length_m), draw_value(rng, cfg.width_m), draw_value(rng, cfg.height_m)])
    rt60_s = draw_value(rng, rt60)
    volume, surface = float(np.prod(dims)), 2.0 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    # Sabine: RT60 = 24 ln(10) V / (c S a); a large room cannot be as dry as asked with a <= 1, so keep it <= 0.99.
    absorption = min(0.99, 24.0 * math.log(10.0) * volume / (SPEED_OF_SOUND * surface * rt60_s))
    rt60_s = 24.0 * math.log(10.0) * volume / (SPEED_OF_SOUND * surface * absorption)
    mic, source, distance = _positions(rng, dims, cfg)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=cfg.max_order,
                       air_absorption=False)
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    early = np.asarray(room.rir[0][0], np.float64)
    direct = int(np.argmax(np.abs(early)))
    # The capped ISM holds every path shorter than the nearest missing image, at least (order + 1) x the smallest
    # dimension / sqrt(3) away (reflections split evenly over the three axes); the tail takes over there.
    t_switch = direct + int((cfg.max_order + 1) * float(dims.min()) / (math.sqrt(3.0) * SPEED_OF_SOUND) * sr)
    m = direct + int(rt60_s * sr)
    rir = np.zeros(max(m, t_switch + 1, early.size))
    rir[: early.size] = early
    window = int(0.01 * sr)  # the ISM energy density over the last 10 ms before the switch sets the tail's level
    level = float(np.mean(rir[max(direct + 1, t_switch - window) : t_switch] ** 2)) if t_switch > direct + 1 else 0.0
    tail = _decaying_tail(rng, rir.size - t_switch, rt60_s, sr)
    head = tail[: min(window, tail.size)]
    if level > 0.0 and head.size and float(np.mean(head**2)) > 0.0:
        rir[t_switch:] = tail * math.sqrt(level / float(np.mean(head**2)))
    rir /= float(np.abs(rir[direct]))
    info = {"dims": dims.round(2).tolist(), "rt60": rt60_s, "absorption": absorption, "distance": distance,
            "ism_order": cfg.max_order}
    return rir.astype(np.float32), info
