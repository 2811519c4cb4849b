"""On-the-fly, seeded augmentation at 16 kHz: noise, SNR mixing, reverberation, colouration, two-speaker mixtures.

Every random choice comes from an explicit `np.random.Generator`, so a (seed, item) pair always gives the same
example and data-loader workers never share global state. Waveforms are float32 (n,) in and out.

Noise kinds: white, pink (1/f), brown (1/f^2), tones (mains hum + whines), babble (other speakers supplied by the
caller), clips (Debian's `sound-icons` effects) and voices (the recorded human voice of alsa-utils' speaker-test
clips, a real talker in the background). Babble is offered only when sources are given, clips and voices only when
their directory exists and holds readable audio, so a machine without those packages simply never draws that kind.
Reverberation (`training.rooms`): synthetic decaying-noise RIRs or simulated shoebox rooms; colouration, level and
clipping: `training.colouration`. `AugmentConfig()` is the plain mixing the evaluation uses (no reverberation, no
colouration, the corpus's level); `AugmentConfig.training()` is the fine-tuning distribution.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE, prepare_waveform
from model.errors import AudioError, ConfigError

from .colouration import ColourConfig, apply_chain, clip, draw_chain, level_gain
from .rooms import RoomConfig, as_wave, reverberate, room_rir, rooms_available, synthetic_rir

log = logging.getLogger(__name__)

NOISE_KINDS = ("white", "pink", "brown", "tones", "babble", "clips", "voices")
DEFAULT_NOISE_WEIGHTS: dict[str, float] = {
    "white": 1.0,
    "pink": 1.0,
    "brown": 1.0,
    "tones": 1.0,
    "babble": 2.0,  # the hardest and most realistic interferer: speech that is not the target
    "clips": 1.0,
    "voices": 0.0,  # off unless asked for (AugmentConfig.training), so the evaluation's noise stays as it was
}
SOUND_ICONS_DIR = Path("/usr/share/sounds/sound-icons")
ALSA_SOUNDS_DIR = Path("/usr/share/sounds/alsa")  # alsa-utils: "Front left" ... in one recorded voice, + Noise.wav

NOISE_RMS = 0.1  # generators return noise at about -20 dBFS; mix_at_snr sets the real level anyway
PEAK = 0.99  # headroom below full scale, so int16 encoding never clips what training saw
FRAME = 320  # 20 ms frames for active-power measurement
ACTIVE_FLOOR_DB = 40.0  # frames this far below the loudest frame count as silence
SILENT_POWER = 1e-10  # mean power below -100 dBFS is treated as silence (avoids dividing by ~0)

Generator = Callable[[np.random.Generator, int], np.ndarray]


# ------------------------------------------------------------------------------------------------------- helpers


def _check_length(n: int) -> None:
    if n < 1:
        raise ValueError(f"noise length must be at least 1 sample, got {n}")


def _normalize_rms(x: np.ndarray, rms: float = NOISE_RMS) -> np.ndarray:
    """Scale to a given RMS; silence stays silence instead of becoming NaN."""
    power = float(np.mean(np.square(x, dtype=np.float64)))
    if power < SILENT_POWER:
        return np.zeros(x.shape, np.float32)
    return (x * (rms / math.sqrt(power))).astype(np.float32)


def _fit_length(rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    """(m,) -> (n,): a random crop when long enough, else looped from a random start point."""
    m = x.shape[0]
    if m >= n:
        start = int(rng.integers(0, m - n + 1))
        return x[start : start + n]
    return np.resize(np.roll(x, -int(rng.integers(0, m))), n)


def mean_power(x: np.ndarray) -> float:
    """Mean square of (n,) over all samples."""
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def active_power(x: np.ndarray, floor_db: float = ACTIVE_FLOOR_DB, frame: int = FRAME) -> float:
    """Mean square of (n,) over its active frames: those within `floor_db` of the loudest 20 ms frame.

    This is the speech level that SNR and relative levels are defined on, so leading/trailing silence or pauses do
    not make a quiet utterance look even quieter. 0.0 for silence.
    """
    sq = np.square(np.asarray(x, dtype=np.float64))
    if sq.size == 0:
        return 0.0
    bounds = np.arange(0, sq.size, frame)
    sums = np.add.reduceat(sq, bounds)  # a trailing partial frame is its own frame
    counts = np.diff(np.append(bounds, sq.size))
    powers = sums / counts
    loudest = float(powers.max())
    if loudest < SILENT_POWER:
        return 0.0
    active = powers >= loudest * 10.0 ** (-floor_db / 10.0)
    return float(sums[active].sum() / counts[active].sum())


def _peak_scale(*signals: np.ndarray, peak: float = PEAK) -> float:
    """The common gain (<= 1) that keeps every signal within +-peak; applied jointly so targets stay consistent."""
    top = max((float(np.max(np.abs(s))) for s in signals if s.size), default=0.0)
    return min(1.0, peak / top) if top > 0.0 else 1.0


# ---------------------------------------------------------------------------------------------- noise generators


def white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian white noise (n,)."""
    _check_length(n)
    return _normalize_rms(rng.standard_normal(n))


def _colored_noise(rng: np.random.Generator, n: int, exponent: float, f_min: float = 20.0) -> np.ndarray:
    """Noise with power ~ 1/f**exponent, shaped in the frequency domain.

    Below `f_min` the spectrum is held flat so brown noise does not turn into a huge sub-audible drift.
    """
    _check_length(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    gain = np.maximum(freqs, f_min) ** (-exponent / 2.0)  # amplitude goes with the square root of power
    gain[0] = 0.0  # no DC offset
    return _normalize_rms(np.fft.irfft(spectrum * gain, n))


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink noise (n,): equal power per octave, like many ambient noises (fans, rain)."""
    return _colored_noise(rng, n, exponent=1.0)


def brown_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brown noise (n,): power ~ 1/f^2, a rumble (traffic, wind, engines)."""
    return _colored_noise(rng, n, exponent=2.0)


def tonal_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz with harmonics) plus a few whines, under a slow amplitude modulation, (n,)."""
    _check_length(n)
    t = np.arange(n) / SAMPLE_RATE
    mains = float(rng.choice([50.0, 60.0]))
    hum = np.zeros(n)
    for k in range(1, int(rng.integers(3, 9)) + 1):  # harmonics fall off roughly as 1/k, with random spread
        hum += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
    whines = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):  # e.g. electronics, a monitor, a distant beep
        whines += rng.uniform(0.1, 1.0) * np.sin(2 * np.pi * rng.uniform(150.0, 4000.0) * t + rng.uniform(0, 2 * np.pi))
    mix = rng.uniform(0.2, 1.0) * hum / max(np.abs(hum).max(), 1e-9) + rng.uniform(0.0, 1.0) * whines / max(
        np.abs(whines).max(), 1e-9
    )
    depth = rng.uniform(0.0, 0.5)
    envelope = 1.0 + depth * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi))
    return _normalize_rms(mix * envelope)


def babble_noise(rng: np.random.Generator, n: int, sources: Sequence[np.ndarray]) -> np.ndarray:
    """The sum of 3-6 talkers (n,), drawn from `sources` (16 kHz (m,) waveforms of other speakers).

    Each talker is cropped or looped to n and brought to the same active level (+-3 dB), so no single voice stands
    out as a second target. With fewer sources than talkers, sources repeat at other offsets.
    """
    _check_length(n)
    if not sources:
        raise ValueError("babble needs at least one source waveform")
    total = np.zeros(n, np.float64)
    for _ in range(int(rng.integers(3, 7))):
        talker = _fit_length(rng, as_wave(sources[int(rng.integers(len(sources)))], "babble source"), n)
        power = active_power(talker)
        if power > 0.0:
            total += talker / math.sqrt(power) * 10.0 ** (rng.uniform(-3.0, 3.0) / 20.0)
    return _normalize_rms(total)


def clip_noise(rng: np.random.Generator, n: int, clips: Sequence[np.ndarray], max_gap_s: float = 0.25) -> np.ndarray:
    """Sound effects (n,): random clips at random gains with short random gaps, starting inside the first clip.

    Stringing different clips together (rather than looping one) keeps short effects from becoming a periodic tone.
    """
    _check_length(n)
    if not clips:
        raise ValueError("clip noise needs at least one clip")
    first = clips[int(rng.integers(len(clips)))]
    start = int(rng.integers(0, first.shape[0]))
    pieces, total, clip = [], -start, first
    while True:
        pieces.append(clip * 10.0 ** (rng.uniform(-6.0, 6.0) / 20.0))
        total += clip.shape[0]
        if total >= n:
            break
        gap = int(rng.integers(0, int(max_gap_s * SAMPLE_RATE) + 1))
        pieces.append(np.zeros(gap, np.float32))
        total += gap
        clip = clips[int(rng.integers(len(clips)))]
    return _normalize_rms(np.concatenate(pieces)[start : start + n])


@functools.lru_cache(maxsize=8)
def _load_clip_dir(directory: str, exclude: tuple[str, ...] = ()) -> tuple[np.ndarray, ...]:
    """All readable, non-silent *.wav files under `directory` at 16 kHz mono, read once per process.

    `sound-icons` holds many symlinks to the same few files; resolving them avoids over-weighting those clips.
    """
    root = Path(directory)
    if not root.is_dir():
        return ()
    clips = []
    for path in sorted({p.resolve() for p in root.glob("*.wav") if p.is_file() and p.name not in exclude}):
        try:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            wav = prepare_waveform(data, int(sr), SAMPLE_RATE)
        except (AudioError, sf.SoundFileError, RuntimeError, OSError) as e:
            log.debug("skipping noise clip %s: %s", path, e)
            continue
        if mean_power(wav) >= SILENT_POWER:
            wav.setflags(write=False)  # shared through the cache: nobody may edit it in place
            clips.append(wav)
    return tuple(clips)


def load_clips(directory: str | Path = SOUND_ICONS_DIR, exclude: tuple[str, ...] = ()) -> tuple[np.ndarray, ...]:
    """Clips from `directory` (but the file names in `exclude`) as float32 (m,) at 16 kHz; empty when the directory
    is missing or unusable."""
    return _load_clip_dir(str(Path(directory).resolve()), tuple(exclude))


# ------------------------------------------------------------------------------------------------------ noise bank


def _check_weights(weights: Mapping[str, float]) -> None:
    unknown = set(weights) - set(NOISE_KINDS)
    if unknown:
        raise ConfigError(f"unknown noise kinds {sorted(unknown)}; expected some of {', '.join(NOISE_KINDS)}")
    negative = [k for k, w in weights.items() if not w >= 0.0]
    if negative:
        raise ConfigError(f"noise weights must be >= 0, got {negative}")


class NoiseBank:
    """Draws a noise of a random kind; only the kinds that this machine and these sources can supply are offered."""

    def __init__(
        self,
        babble_sources: Sequence[np.ndarray] | None = None,
        clip_dir: str | Path | None = SOUND_ICONS_DIR,
        voice_dir: str | Path | None = ALSA_SOUNDS_DIR,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        sources = [as_wave(s, "babble source") for s in babble_sources or ()]
        self.babble_sources = [s for s in sources if mean_power(s) >= SILENT_POWER]
        self.clips = load_clips(clip_dir) if clip_dir is not None else ()
        # alsa's Noise.wav is stationary synthetic noise (pink already covers it): only the spoken clips count.
        self.voices = load_clips(voice_dir, exclude=("Noise.wav",)) if voice_dir is not None else ()
        self.weights = dict(DEFAULT_NOISE_WEIGHTS if weights is None else weights)
        _check_weights(self.weights)
        self._generators: dict[str, Generator] = {
            "white": white_noise,
            "pink": pink_noise,
            "brown": brown_noise,
            "tones": tonal_noise,
        }
        if self.babble_sources:
            self._generators["babble"] = functools.partial(babble_noise, sources=self.babble_sources)
        if self.clips:
            self._generators["clips"] = functools.partial(clip_noise, clips=self.clips)
        if self.voices:
            self._generators["voices"] = functools.partial(clip_noise, clips=self.voices)

    @property
    def available(self) -> tuple[str, ...]:
        """The noise kinds this bank can generate, in NOISE_KINDS order."""
        return tuple(k for k in NOISE_KINDS if k in self._generators)

    def generate(self, kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
        """A noise of one named kind, float32 (n,)."""
        if kind not in self._generators:
            raise ConfigError(f"noise kind {kind!r} is not available here; available: {', '.join(self.available)}")
        return self._generators[kind](rng, n)

    def sample(
        self, rng: np.random.Generator, n: int, weights: Mapping[str, float] | None = None
    ) -> tuple[np.ndarray, str]:
        """A noise (n,) of a kind drawn by `weights` (the bank's own by default) among the available kinds."""
        weights = self.weights if weights is None else weights
        _check_weights(weights)
        kinds = [k for k in self.available if weights.get(k, 0.0) > 0.0]
        if not kinds:
            raise ConfigError(f"no noise kind with a positive weight is available (available: {self.available})")
        p = np.array([weights[k] for k in kinds], dtype=np.float64)
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        return self.generate(kind, rng, n), kind


# ----------------------------------------------------------------------------------------------------- SNR mixing


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


# -------------------------------------------------------------------------------------------- enhancement recipe


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
        _check_weights(self.noise_weights)

    @classmethod
    def training(cls, **overrides: Any) -> AugmentConfig:
        """The enhancement fine-tuning distribution. Plain items stay the majority (the evaluation and most uses are
        dry close-talk), reverberant ones are mostly simulated rooms, half get a microphone colouration, every one a
        new level between a quiet phone (-45 dBFS) and a hot close mic (-12 dBFS), a few are clipped."""
        weights = dict(DEFAULT_NOISE_WEIGHTS) | {"voices": 1.0}
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
    Draws for a disabled stage are skipped, so the plain config gives the same examples as before these stages.
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


# ---------------------------------------------------------------------------------------------------- separation


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
