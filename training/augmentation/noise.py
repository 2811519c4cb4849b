"""Noise for the enhancement inputs at 16 kHz: seeded generators of every kind and the bank that draws among them.

Every random choice comes from an explicit `np.random.Generator`, so a (seed, item) pair always gives the same
noise and data-loader workers never share global state. Waveforms are float32 (n,).

Noise kinds: white, pink (1/f), brown (1/f^2), tones (mains hum + whines), babble (other speakers supplied by the
caller), clips (Debian's `sound-icons` effects) and music (the Asterisk music-on-hold tracks, real recorded music,
less the track held out for the real test conditions). Babble is offered only when sources are given, clips and
music only when their directory exists and holds readable audio, so a machine without those packages simply never
draws that kind. (alsa-utils' recorded voice clips are reserved for independent evaluation: never noise here.)
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE, prepare_waveform
from model.errors import AudioError, ConfigError
from training.data.asterisk import MOH_DIR, TEST_MUSIC, load_music, music_files

from .levels import SILENT_POWER, active_power, mean_power
from .rooms import as_wave

log = logging.getLogger(__name__)

NOISE_KINDS = ("white", "pink", "brown", "tones", "babble", "clips", "music")
DEFAULT_NOISE_WEIGHTS: dict[str, float] = {
    "white": 1.0,
    "pink": 1.0,
    "brown": 1.0,
    "tones": 1.0,
    "babble": 2.0,  # the hardest and most realistic interferer: speech that is not the target
    "clips": 1.0,
    "music": 0.0,  # off unless asked for (AugmentConfig.training): the synthetic test split does not draw it
}
SOUND_ICONS_DIR = Path("/usr/share/sounds/sound-icons")

NOISE_RMS = 0.1  # generators return noise at about -20 dBFS; mix_at_snr sets the real level anyway

Generator = Callable[[np.random.Generator, int], np.ndarray]


# --------------------------------------------------------------------------------------------------------- helpers


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


# ------------------------------------------------------------------------------------------------ noise generators


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


def music_noise(rng: np.random.Generator, n: int, tracks: Sequence[np.ndarray]) -> np.ndarray:
    """A random stretch of one music track (n,), looped when the track is shorter."""
    _check_length(n)
    if not tracks:
        raise ValueError("music noise needs at least one track")
    return _normalize_rms(_fit_length(rng, tracks[int(rng.integers(len(tracks)))], n))


def training_music_files(directory: str | Path = MOH_DIR) -> list[str]:
    """The names of the music-on-hold tracks of ``directory`` but the held-out test track (none when missing)."""
    return [name for name in music_files(directory) if name not in TEST_MUSIC] if Path(directory).is_dir() else []


@functools.lru_cache(maxsize=4)
def _load_music_dir(directory: str) -> tuple[np.ndarray, ...]:
    names = training_music_files(directory)
    try:
        tracks = load_music(directory, names)
    except AudioError as e:
        log.warning("no music noise: %s", e)
        return ()
    for track in tracks:
        track.setflags(write=False)  # shared through the cache
    return tuple(t for t in tracks if mean_power(t) >= SILENT_POWER)


def load_training_music(directory: str | Path = MOH_DIR) -> tuple[np.ndarray, ...]:
    """The music-on-hold tracks of ``directory`` but the held-out test track, float32 (m,) at 16 kHz, read once per
    process; empty when the directory is missing."""
    return _load_music_dir(str(Path(directory).resolve())) if Path(directory).is_dir() else ()


# ------------------------------------------------------------------------------------------------------ noise bank


def check_weights(weights: Mapping[str, float]) -> None:
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
        music: Sequence[np.ndarray] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        sources = [as_wave(s, "babble source") for s in babble_sources or ()]
        self.babble_sources = [s for s in sources if mean_power(s) >= SILENT_POWER]
        self.clips = load_clips(clip_dir) if clip_dir is not None else ()
        # the music-on-hold training tracks unless given (the real test conditions give the held-out track); those
        # are decoded on first use: seconds of work that a bank with music off (the synthetic evaluation) never needs
        self._music = None if music is None else [as_wave(m, "music") for m in music]
        has_music = bool(self._music) if music is not None else bool(training_music_files())
        self.weights = dict(DEFAULT_NOISE_WEIGHTS if weights is None else weights)
        check_weights(self.weights)
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
        if has_music:
            self._generators["music"] = self._music_noise

    def _music_noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self._music is None:
            self._music = list(load_training_music())
        return music_noise(rng, n, self._music)

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
        check_weights(weights)
        kinds = [k for k in self.available if weights.get(k, 0.0) > 0.0]
        if not kinds:
            raise ConfigError(f"no noise kind with a positive weight is available (available: {self.available})")
        p = np.array([weights[k] for k in kinds], dtype=np.float64)
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        return self.generate(kind, rng, n), kind
