"""On-the-fly, seeded augmentation at 16 kHz: noise, SNR mixing, synthetic reverberation, two-speaker mixtures.

Every random choice comes from an explicit `np.random.Generator`, so a (seed, item) pair always gives the same
example and data-loader workers never share global state. Waveforms are float32 (n,) in and out.

Noise kinds: white, pink (1/f), brown (1/f^2), tones (mains hum + whines), babble (other speakers supplied by the
caller) and clips (Debian's `sound-icons` effects). Babble is offered only when sources are given, clips only when the
clip directory exists and holds readable audio, so a machine without `sound-icons` simply never draws that kind.
Reverberation uses a synthetic impulse response (decaying filtered noise after a direct-path spike), so
`pyroomacoustics` is not needed; a measured RIR with a pre-delay works with `reverberate` as well.
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
from scipy.signal import fftconvolve, lfilter

from model.audio import SAMPLE_RATE, prepare_waveform
from model.errors import AudioError, ConfigError

log = logging.getLogger(__name__)

NOISE_KINDS = ("white", "pink", "brown", "tones", "babble", "clips")
DEFAULT_NOISE_WEIGHTS: dict[str, float] = {
    "white": 1.0,
    "pink": 1.0,
    "brown": 1.0,
    "tones": 1.0,
    "babble": 2.0,  # the hardest and most realistic interferer: speech that is not the target
    "clips": 1.0,
}
SOUND_ICONS_DIR = Path("/usr/share/sounds/sound-icons")

NOISE_RMS = 0.1  # generators return noise at about -20 dBFS; mix_at_snr sets the real level anyway
PEAK = 0.99  # headroom below full scale, so int16 encoding never clips what training saw
FRAME = 320  # 20 ms frames for active-power measurement
ACTIVE_FLOOR_DB = 40.0  # frames this far below the loudest frame count as silence
SILENT_POWER = 1e-10  # mean power below -100 dBFS is treated as silence (avoids dividing by ~0)

Generator = Callable[[np.random.Generator, int], np.ndarray]


# ------------------------------------------------------------------------------------------------------- helpers


def _as_wave(x: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Any array-like -> contiguous float32 (n,); rejects other shapes and non-finite samples."""
    w = np.ascontiguousarray(x, dtype=np.float32)
    if w.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return w


def _check_length(n: int) -> None:
    if n < 1:
        raise ValueError(f"noise length must be at least 1 sample, got {n}")


def _draw(rng: np.random.Generator, value: float | tuple[float, float]) -> float:
    """A fixed value, or a uniform draw from a (low, high) range."""
    if isinstance(value, tuple | list):
        low, high = value
        return float(rng.uniform(low, high))
    return float(value)


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
        talker = _fit_length(rng, _as_wave(sources[int(rng.integers(len(sources)))], "babble source"), n)
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
def _load_clip_dir(directory: str) -> tuple[np.ndarray, ...]:
    """All readable, non-silent *.wav files under `directory` at 16 kHz mono, read once per process.

    `sound-icons` holds many symlinks to the same few files; resolving them avoids over-weighting those clips.
    """
    root = Path(directory)
    if not root.is_dir():
        return ()
    clips = []
    for path in sorted({p.resolve() for p in root.glob("*.wav") if p.is_file()}):
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


def load_clips(directory: str | Path = SOUND_ICONS_DIR) -> tuple[np.ndarray, ...]:
    """Effect clips from `directory` as float32 (m,) at 16 kHz; empty when the directory is missing or unusable."""
    return _load_clip_dir(str(Path(directory).resolve()))


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
        weights: Mapping[str, float] | None = None,
    ) -> None:
        sources = [_as_wave(s, "babble source") for s in babble_sources or ()]
        self.babble_sources = [s for s in sources if mean_power(s) >= SILENT_POWER]
        self.clips = load_clips(clip_dir) if clip_dir is not None else ()
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
    clean, noise = _as_wave(clean, "clean"), _as_wave(noise, "noise")
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


# ---------------------------------------------------------------------------------------------------- reverberation


def synthetic_rir(
    rng: np.random.Generator,
    rt60: float | tuple[float, float] = (0.2, 0.8),
    sr: int = SAMPLE_RATE,
    drr_db: float | tuple[float, float] = (0.0, 10.0),
) -> np.ndarray:
    """A synthetic room impulse response (m,), m = rt60 * sr: a unit direct path at index 0, then after a 1-5 ms gap
    low-pass filtered noise whose energy falls 60 dB in rt60 seconds.

    `drr_db` (direct-to-reverberant energy ratio) sets how far the talker seems from the microphone. Real rooms damp
    highs faster than lows; a random one-pole low-pass on the tail is the cheap stand-in for that.
    """
    rt60_s = _draw(rng, rt60)
    if rt60_s <= 0.0:
        raise ValueError(f"rt60 must be positive, got {rt60_s}")
    m = max(int(rt60_s * sr), 2)
    t = np.arange(m) / sr
    decay = np.exp(-3.0 * math.log(10.0) * t / rt60_s)  # amplitude 10^-3 (-60 dB energy) at t = rt60
    pole = math.exp(-2 * math.pi * rng.uniform(2000.0, 6000.0) / sr)
    tail = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(m)) * decay
    tail[: min(m, int(rng.integers(int(0.001 * sr), int(0.005 * sr) + 1)))] = 0.0  # before the first reflection
    tail_energy = float(np.sum(tail**2))
    if tail_energy > 0.0:
        tail *= math.sqrt(10.0 ** (-_draw(rng, drr_db) / 10.0) / tail_energy)
    tail[0] = 1.0  # the direct path
    return tail.astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """(n,) convolved with (m,) -> (n,), shifted so the RIR's direct path (its largest tap) lands on lag 0.

    The dry signal therefore stays a time-aligned target for the reverberant one.
    """
    wav, rir = _as_wave(wav), _as_wave(rir, "rir")
    if rir.size == 0:
        raise ValueError("rir is empty")
    delay = int(np.argmax(np.abs(rir)))
    wet = fftconvolve(wav.astype(np.float64), rir.astype(np.float64))
    return wet[delay : delay + wav.shape[0]].astype(np.float32)


# -------------------------------------------------------------------------------------------- enhancement recipe


@dataclass
class AugmentConfig:
    """What `make_noisy` draws from: SNR range (dB), reverb probability and RT60 range (s), noise-kind weights."""

    snr_db: tuple[float, float] = (-5.0, 20.0)
    p_reverb: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    noise_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NOISE_WEIGHTS))

    def __post_init__(self) -> None:
        for name in ("snr_db", "rt60"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"{name} must be a (low, high) range, got {(low, high)}")
        if self.rt60[0] <= 0.0:
            raise ConfigError(f"rt60 must be positive, got {self.rt60}")
        if not 0.0 <= self.p_reverb <= 1.0:
            raise ConfigError(f"p_reverb must be in [0, 1], got {self.p_reverb}")
        _check_weights(self.noise_weights)


def make_noisy(
    rng: np.random.Generator, clean: np.ndarray, bank: NoiseBank, cfg: AugmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Clean (n,) -> (noisy (n,), clean_target (n,), info): the enhancement training example.

    Reverb (with probability p_reverb) is applied to the input only and the target is the dry clean signal, so the
    model learns to dereverberate as well as denoise; the SNR is measured against the reverberant speech, which is
    what the input contains. info: noise kind, snr_db, reverb, rt60 (None without reverb), and the peak-limit scale.
    """
    cfg = cfg or AugmentConfig()
    clean = _as_wave(clean, "clean")
    snr_db = float(rng.uniform(*cfg.snr_db))
    noise, kind = bank.sample(rng, clean.shape[0], cfg.noise_weights)
    reverb = bool(rng.random() < cfg.p_reverb)
    rt60 = float(rng.uniform(*cfg.rt60)) if reverb else None
    speech = reverberate(clean, synthetic_rir(rng, rt60)) if rt60 is not None else clean
    noisy, scale = _mix(speech, noise, snr_db, PEAK)
    extra = _peak_scale(noisy, clean * scale)  # the dry target can peak above the wet input
    noisy, scale = (noisy * extra).astype(np.float32), scale * extra
    target = (clean * scale).astype(np.float32)
    info = {"noise": kind, "snr_db": snr_db, "reverb": reverb, "rt60": rt60, "scale": scale}
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
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Two utterances (m1,), (m2,) -> (mixture (n,), (s1_aligned (n,), s2_aligned (n,)), info).

    s2 is scaled so that active_power(s1) / active_power(s2) is the drawn `rel_db` (s1 keeps its level). One source,
    chosen at random, starts up to `max_offset_s` later than the other. n is `length` if given (crop or pad), else
    the span of both. All three are peak-limited by one factor, and mixture == s1_aligned + s2_aligned exactly.
    info: rel_db (None when either source is silent), offsets (samples), scale.
    """
    s1, s2 = _as_wave(s1, "s1"), _as_wave(s2, "s2")
    p1, p2 = active_power(s1), active_power(s2)
    drawn = float(rng.uniform(*rel_db))
    level: float | None = drawn if p1 > 0.0 and p2 > 0.0 else None
    if level is not None:
        s2 = (s2 * math.sqrt(p1 / p2) * 10.0 ** (-level / 20.0)).astype(np.float32)
    delay = int(rng.uniform(0.0, max_offset_s) * sr)
    offsets = (delay, 0) if rng.random() < 0.5 else (0, delay)
    n = length if length is not None else max(s1.shape[0] + offsets[0], s2.shape[0] + offsets[1])
    a1, a2 = _place(s1, offsets[0], n), _place(s2, offsets[1], n)
    scale = _peak_scale(a1 + a2, a1, a2, peak=peak)
    a1, a2 = (a1 * scale).astype(np.float32), (a2 * scale).astype(np.float32)
    info = {"rel_db": level, "offsets": offsets, "scale": scale}
    return a1 + a2, (a1, a2), info
