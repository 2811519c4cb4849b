"""Seeded mixing at 16 kHz: speech plus noise at an SNR (the enhancement example, with reverberation, colouration,
level and clipping) and two-speaker mixtures (the separation example).

Every random choice comes from an explicit `np.random.Generator`, so a (seed, item) pair always gives the same
example and data-loader workers never share global state. Waveforms are float32 (n,) in and out. The noise comes
from `training.augmentation.noise`; reverberation (`training.augmentation.rooms`): synthetic decaying-noise RIRs or
simulated shoebox rooms; colouration, level and clipping: `training.augmentation.colouration`. `AugmentConfig()` is
the plain mixing the evaluation uses (no reverberation, no colouration, the corpus's level);
`AugmentConfig.training()` is the fine-tuning distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE
from model.errors import ConfigError

from .colouration import ColourConfig, apply_chain, clip, draw_chain, level_gain
from .levels import SILENT_POWER, active_power, mean_power
from .noise import DEFAULT_NOISE_WEIGHTS, NoiseBank, check_weights
from .rooms import RoomConfig, as_wave, reverberate, room_rir, rooms_available, synthetic_rir

PEAK = 0.99  # headroom below full scale, so int16 encoding never clips what training saw


def _peak_scale(*signals: np.ndarray, peak: float = PEAK) -> float:
    """The common gain (<= 1) that keeps every signal within +-peak; applied jointly so targets stay consistent."""
    top = max((float(np.max(np.abs(s))) for s in signals if s.size), default=0.0)
    return min(1.0, peak / top) if top > 0.0 else 1.0


# ------------------------------------------------------------------------------------------------------ SNR mixing


def _mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float) -> tuple[np.ndarray, float]:
    """-> (noisy (n,), scale) where noisy = scale * (clean + g * noise) and scale <= 1 is the joint peak limit."""
    clean, noise = as_wave(clean, "clean"), as_wave(noise, "noise")
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} must have the same length")
    speech, noise_power = active_power(clean), mean_power(noise)
    if speech <= 0.0 or noise_power < SILENT_POWER:  # SNR undefined: keep the clean signal as the "mixture"
        scale = _peak_scale(clean, peak=peak)
        return (clean * scale).astype(np.float32), scale
    gain = math.sqrt(speech / (noise_power * 10.0 ** (snr_db / 10.0)))
    noisy = clean.astype(np.float64) + gain * noise
    scale = _peak_scale(noisy, clean, peak=peak)
    return (noisy * scale).astype(np.float32), scale


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = PEAK
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) clean + (n,) noise -> (noisy (n,), clean_scaled (n,)) at `snr_db`.

    SNR = active_power(clean) / mean_power(scaled noise): speech level over its active frames, noise over all of it.
    When the mixture (or the clean) would exceed `peak`, both are scaled by the same factor, so noisy - clean_scaled is
    exactly the scaled noise and the SNR is unchanged; train against clean_scaled. Silent clean or silent noise
    returns the clean signal for both (no NaNs).
    """
    noisy, scale = _mix(clean, noise, snr_db, peak)
    return noisy, (np.asarray(clean, np.float32) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------- enhancement recipe


@dataclass
class AugmentConfig:
    """What `make_noisy` draws from. The field defaults are the plain mixing of the evaluation (noise at an SNR, the
    corpus's level); `AugmentConfig.training()` turns on the realism that fine-tuning uses.

    - snr_db: SNR range (dB), active speech over noise; noise_weights: noise-kind weights;
    - p_reverb, rt60: probability and RT60 range (s) of reverberation; p_room: the share of it from a simulated
      room (`room`), the rest a synthetic decaying-noise RIR;
    - p_colour, colour: probability and ranges of a microphone/channel EQ chain;
    - level_dbfs: range of the input's active speech-plus-noise level (dBFS), None keeps the corpus's level;
    - p_clip, clip_fraction: probability of clipping the input and the share of samples clipped.
    """

    snr_db: tuple[float, float] = (-5.0, 20.0)
    p_reverb: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    noise_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NOISE_WEIGHTS))
    p_room: float = 0.7
    room: RoomConfig = field(default_factory=RoomConfig)
    p_colour: float = 0.0
    colour: ColourConfig = field(default_factory=ColourConfig)
    level_dbfs: tuple[float, float] | None = None
    p_clip: float = 0.0
    clip_fraction: tuple[float, float] = (0.001, 0.02)

    def __post_init__(self) -> None:
        ranges = ["snr_db", "rt60", "clip_fraction"] + (["level_dbfs"] if self.level_dbfs is not None else [])
        for name in ranges:
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"{name} must be a (low, high) range, got {(low, high)}")
        if self.rt60[0] <= 0.0:
            raise ConfigError(f"rt60 must be positive, got {self.rt60}")
        for name in ("p_reverb", "p_room", "p_colour", "p_clip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.level_dbfs is not None and self.level_dbfs[1] > 0.0:
            raise ConfigError(f"level_dbfs must stay below full scale, got {self.level_dbfs}")
        check_weights(self.noise_weights)

    @classmethod
    def training(cls, **overrides: Any) -> AugmentConfig:
        """The enhancement fine-tuning distribution. Plain items stay the majority (the evaluation and most uses are
        dry close-talk), reverberant ones are mostly simulated rooms, half get a microphone colouration, every one a
        new level between a quiet phone (-45 dBFS) and a hot close mic (-12 dBFS), a few are clipped."""
        weights = dict(DEFAULT_NOISE_WEIGHTS) | {"music": 1.0}
        fields: dict[str, Any] = {"p_reverb": 0.35, "p_room": 0.7, "p_colour": 0.5, "level_dbfs": (-45.0, -12.0),
                                  "p_clip": 0.05, "noise_weights": weights}
        return cls(**(fields | overrides))


def make_noisy(
    rng: np.random.Generator, clean: np.ndarray, bank: NoiseBank, cfg: AugmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Clean (n,) -> (noisy (n,), clean_target (n,), info): the enhancement training example.

    Reverb (with probability p_reverb) is applied to the input only and the target is the dry clean signal, so the
    model learns to dereverberate as well as denoise; the SNR is measured against the reverberant speech, which is
    what the input contains. A colouration filters speech and noise alike (one microphone) and keeps the speech's
    active level, and clipping touches the input only, so the target stays the clean signal at the level of the
    speech in the input (what the mel objective and the [0, 1] mask reconstruction need); the level draw scales
    both. info: noise kind, snr_db, reverb, rt60 (None without reverb), rir ("synthetic" / "room", with room
    info), colour (the chain drawn, or None), level_dbfs, clip, and the overall scale (target = clean * scale).
    Draws for a disabled stage are skipped, so a stage that is off changes no other draw: the plain config's examples
    are those of the noise mixing alone.
    """
    cfg = cfg or AugmentConfig()
    clean = as_wave(clean, "clean")
    snr_db = float(rng.uniform(*cfg.snr_db))
    noise, kind = bank.sample(rng, clean.shape[0], cfg.noise_weights)
    reverb = bool(rng.random() < cfg.p_reverb)
    rt60 = float(rng.uniform(*cfg.rt60)) if reverb else None
    info: dict[str, Any] = {"noise": kind, "snr_db": snr_db, "reverb": reverb, "rt60": rt60, "rir": None}
    speech = clean
    if rt60 is not None:
        if cfg.p_room > 0.0 and rng.random() < cfg.p_room and rooms_available():
            rir, info["room"] = room_rir(rng, cfg.room, rt60)
            info["rir"], info["rt60"] = "room", info["room"]["rt60"]  # a large room caps how dry it can be
        else:
            rir, info["rir"] = synthetic_rir(rng, rt60), "synthetic"
        speech = reverberate(clean, rir)
    info["colour"] = None
    if cfg.p_colour > 0.0 and rng.random() < cfg.p_colour:
        sos, info["colour"] = draw_chain(rng, cfg.colour)
        speech, noise = apply_chain(sos, speech, keep_level=active_power), apply_chain(sos, noise)
    noisy, scale = _mix(speech, noise, snr_db, PEAK)
    info["level_dbfs"] = None
    if cfg.level_dbfs is not None:
        info["level_dbfs"] = float(rng.uniform(*cfg.level_dbfs))
        gain = level_gain(active_power(noisy), info["level_dbfs"])
        noisy, scale = (noisy * gain).astype(np.float32), scale * gain
    info["clip"] = None
    if cfg.p_clip > 0.0 and rng.random() < cfg.p_clip:
        noisy, info["clip"] = clip(rng, noisy, cfg.clip_fraction)
    extra = _peak_scale(noisy, clean * scale)  # the dry target can peak above the wet input
    noisy, scale = (noisy * extra).astype(np.float32), scale * extra
    target = (clean * scale).astype(np.float32)
    info["scale"] = scale
    return noisy, target, info


# ------------------------------------------------------------------------------------------------------ separation


def _place(x: np.ndarray, offset: int, length: int) -> np.ndarray:
    """(m,) -> (length,): x starting at `offset`, zero-padded around and cropped at the end."""
    out = np.zeros(length, np.float32)
    end = min(length, offset + x.shape[0])
    if end > offset:
        out[offset:end] = x[: end - offset]
    return out


def mix_speakers(
    rng: np.random.Generator,
    s1: np.ndarray,
    s2: np.ndarray,
    rel_db: tuple[float, float] = (-5.0, 5.0),
    max_offset_s: float = 1.0,
    *,
    length: int | None = None,
    sr: int = SAMPLE_RATE,
    peak: float = PEAK,
    level_dbfs: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Two utterances (m1,), (m2,) -> (mixture (n,), (s1_aligned (n,), s2_aligned (n,)), info).

    s2 is scaled so that active_power(s1) / active_power(s2) is the drawn `rel_db` (s1 keeps its level). One source,
    chosen at random, starts up to `max_offset_s` later than the other. n is `length` if given (crop or pad), else
    the span of both. `level_dbfs`: the mixture's active level is then drawn from this range (one gain for all
    three). All three are peak-limited by one factor, and mixture == s1_aligned + s2_aligned exactly.
    info: rel_db (None when either source is silent), offsets (samples), scale.
    """
    s1, s2 = as_wave(s1, "s1"), as_wave(s2, "s2")
    p1, p2 = active_power(s1), active_power(s2)
    drawn = float(rng.uniform(*rel_db))
    level: float | None = drawn if p1 > 0.0 and p2 > 0.0 else None
    if level is not None:
        s2 = (s2 * math.sqrt(p1 / p2) * 10.0 ** (-level / 20.0)).astype(np.float32)
    delay = int(rng.uniform(0.0, max_offset_s) * sr)
    offsets = (delay, 0) if rng.random() < 0.5 else (0, delay)
    n = length if length is not None else max(s1.shape[0] + offsets[0], s2.shape[0] + offsets[1])
    a1, a2 = _place(s1, offsets[0], n), _place(s2, offsets[1], n)
    if level_dbfs is None:
        scale = _peak_scale(a1 + a2, a1, a2, peak=peak)
    else:  # one gain for all three keeps the mixture their sum
        scale = level_gain(active_power(a1 + a2), float(rng.uniform(*level_dbfs)))
        scale *= _peak_scale((a1 + a2) * scale, a1 * scale, a2 * scale, peak=peak)
    a1, a2 = (a1 * scale).astype(np.float32), (a2 * scale).astype(np.float32)
    info = {"rel_db": level, "offsets": offsets, "scale": scale}
    return a1 + a2, (a1, a2), info
