"""Augmentation: noise kinds, SNR mixing, synthetic reverberation and two-speaker mixtures (small and seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate, welch

from model.errors import ConfigError
from tests.conftest import speechlike
from training.augmentation.levels import active_power, mean_power
from training.augmentation.mixing import PEAK, AugmentConfig, make_noisy, mix_at_snr, mix_speakers
from training.augmentation.noise import SOUND_ICONS_DIR, NoiseBank, load_clips
from training.augmentation.rooms import reverberate, synthetic_rir

SR = 16000
N = 8000  # half a second is plenty for every property checked here


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def db(ratio: float) -> float:
    return float(10 * np.log10(ratio))


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    sources = [speechlike(0.3 + 0.1 * i, seed=10 + i) for i in range(4)]  # shorter than N: exercises looping
    return NoiseBank(babble_sources=sources)


def test_available_kinds_follow_sources_and_clip_dir(bank: NoiseBank, tmp_path: Path) -> None:
    assert {"white", "pink", "brown", "tones", "babble"} <= set(bank.available)
    assert ("clips" in bank.available) == bool(load_clips(SOUND_ICONS_DIR))
    bare = NoiseBank(clip_dir=tmp_path / "no-such-dir", music=())
    assert bare.available == ("white", "pink", "brown", "tones")


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "tones", "babble", "clips", "music"])
def test_noise_kinds_have_length_are_finite_loud_and_seeded(bank: NoiseBank, kind: str) -> None:
    if kind not in bank.available:
        pytest.skip(f"{kind} noise is not available on this machine")
    noise = bank.generate(kind, rng(1), N)
    assert noise.shape == (N,) and noise.dtype == np.float32
    assert np.isfinite(noise).all() and mean_power(noise) > 1e-4
    assert np.array_equal(bank.generate(kind, rng(1), N), noise)
    assert not np.allclose(bank.generate(kind, rng(2), N), noise)


def _band_density_db(x: np.ndarray, low: float, high: float) -> float:
    freqs, psd = welch(x, fs=SR, nperseg=2048)
    return db(psd[(freqs >= low) & (freqs < high)].mean())


@pytest.mark.parametrize(("kind", "slope_db"), [("white", 0.0), ("pink", 12.0), ("brown", 24.0)])
def test_colored_noise_spectra_slope_down(bank: NoiseBank, kind: str, slope_db: float) -> None:
    # Four octaves from 150-300 Hz to 2.4-4.8 kHz: density drops 3 dB/octave for pink, 6 dB/octave for brown.
    noise = bank.generate(kind, rng(3), 4 * SR)
    drop = _band_density_db(noise, 150, 300) - _band_density_db(noise, 2400, 4800)
    assert abs(drop - slope_db) < 2.0


def test_noise_bank_sample_respects_weights_and_unavailable_kinds(tmp_path: Path) -> None:
    bare = NoiseBank(clip_dir=tmp_path / "missing", music=())
    kinds = {bare.sample(rng(s), 400, {"clips": 5.0, "babble": 5.0, "pink": 1.0})[1] for s in range(5)}
    assert kinds == {"pink"}  # unavailable kinds are dropped, not an error
    with pytest.raises(ConfigError):
        bare.sample(rng(0), 400, {"clips": 1.0})
    with pytest.raises(ConfigError):
        NoiseBank(weights={"thunder": 1.0})


def test_clips_are_loaded_resampled_and_bad_files_skipped(tmp_path: Path) -> None:
    t = np.arange(4000) / 8000
    sf.write(tmp_path / "beep.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)  # 0.5 s at 8 kHz
    sf.write(tmp_path / "silent.wav", np.zeros(4000), 8000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    clips = load_clips(tmp_path)
    assert len(clips) == 1 and abs(clips[0].shape[0] - 8000) <= 1
    clip_bank = NoiseBank(clip_dir=tmp_path)
    noise, kind = clip_bank.sample(rng(0), 3 * SR, {"clips": 1.0})
    assert kind == "clips" and noise.shape == (3 * SR,) and mean_power(noise) > 1e-4


def _with_leading_silence(seed: int = 0, loud: float = 1.0) -> np.ndarray:
    return np.concatenate([np.zeros(SR // 2, np.float32), loud * speechlike(1.0, seed=seed)])


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_mix_at_snr_hits_active_speech_snr(snr_db: float) -> None:
    clean = _with_leading_silence()
    noise = rng(4).standard_normal(clean.shape[0]).astype(np.float32)
    noisy, clean_scaled = mix_at_snr(clean, noise, snr_db)
    residual = noisy - clean_scaled
    assert abs(db(active_power(clean_scaled) / mean_power(residual)) - snr_db) < 0.5
    # a third of silence would bias a plain mean-power SNR by about 1.8 dB
    assert abs(db(mean_power(clean_scaled) / mean_power(residual)) - snr_db) > 1.0
    assert np.abs(noisy).max() <= PEAK + 1e-6


def test_mix_at_snr_peak_limit_scales_clean_and_noisy_together() -> None:
    clean = _with_leading_silence(loud=4.0)  # peaks well above full scale
    noise = rng(5).standard_normal(clean.shape[0]).astype(np.float32)
    noisy, clean_scaled = mix_at_snr(clean, noise, -5.0)
    active = clean != 0
    scale = clean_scaled[active] / clean[active]
    assert np.allclose(scale, scale[0], rtol=1e-5) and 0.0 < scale[0] < 1.0
    assert np.abs(noisy).max() <= PEAK + 1e-6
    assert abs(db(active_power(clean_scaled) / mean_power(noisy - clean_scaled)) + 5.0) < 0.5


def test_silent_inputs_give_no_nans(bank: NoiseBank) -> None:
    silence, noise = np.zeros(N, np.float32), rng(6).standard_normal(N).astype(np.float32)
    speech = speechlike(N / SR, seed=1)
    for clean, n in [(silence, noise), (speech, np.zeros(N, np.float32)), (silence, silence)]:
        noisy, clean_scaled = mix_at_snr(clean, n, 5.0)
        assert np.isfinite(noisy).all() and np.array_equal(noisy, clean) and np.array_equal(clean_scaled, clean)
    noisy, target, _ = make_noisy(rng(0), silence, bank, AugmentConfig(p_reverb=1.0))
    assert np.isfinite(noisy).all() and np.isfinite(target).all()


def test_reverberate_keeps_length_and_alignment() -> None:
    clicks = np.zeros(SR, np.float32)
    clicks[::4000] = 1.0
    wet = reverberate(clicks, synthetic_rir(rng(7), rt60=0.5))
    assert wet.shape == clicks.shape and np.isfinite(wet).all()
    xcorr = correlate(wet, clicks, mode="full")
    assert int(np.argmax(xcorr)) - (clicks.shape[0] - 1) == 0


def _decay_time(rir: np.ndarray) -> float:
    """Seconds for the tail's Schroeder energy decay curve to fall from -5 to -35 dB, times 2 (an RT60 estimate)."""
    tail = rir[1:].astype(np.float64) ** 2
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum() + 1e-30)
    return 2.0 * (np.argmax(edc < -35) - np.argmax(edc < -5)) / SR


def test_longer_rt60_gives_longer_decay() -> None:
    short, long = synthetic_rir(rng(8), rt60=0.2), synthetic_rir(rng(8), rt60=0.8)
    assert np.argmax(np.abs(short)) == 0 and short[0] == 1.0
    assert long.shape[0] > short.shape[0]
    assert _decay_time(short) == pytest.approx(0.2, rel=0.1)
    assert _decay_time(long) == pytest.approx(0.8, rel=0.1)


def test_make_noisy_returns_dry_aligned_target(bank: NoiseBank) -> None:
    clean = speechlike(N / SR, seed=2)
    noisy, target, info = make_noisy(rng(9), clean, bank, AugmentConfig(p_reverb=1.0, snr_db=(5.0, 5.0)))
    assert noisy.shape == target.shape == clean.shape
    assert info["reverb"] and 0.2 <= info["rt60"] <= 0.8 and info["noise"] in bank.available
    assert info["snr_db"] == 5.0
    assert np.allclose(target, clean * info["scale"], atol=1e-6)
    again = make_noisy(rng(9), clean, bank, AugmentConfig(p_reverb=1.0, snr_db=(5.0, 5.0)))
    assert np.array_equal(again[0], noisy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mix_speakers_sums_exactly_at_the_drawn_level(seed: int) -> None:
    s1, s2 = speechlike(0.8, seed=20 + seed), 3.0 * speechlike(0.6, seed=30 + seed)  # s2 loud: forces limiting
    mixture, (a1, a2), info = mix_speakers(rng(seed), s1, s2)
    assert mixture.shape == a1.shape == a2.shape
    assert np.abs(mixture - (a1 + a2)).max() <= 1e-6
    assert abs(db(active_power(a1) / active_power(a2)) - info["rel_db"]) < 0.5
    assert -5.0 <= info["rel_db"] <= 5.0
    assert max(np.abs(mixture).max(), np.abs(a1).max(), np.abs(a2).max()) <= 1.0
    o1, o2 = info["offsets"]
    assert mixture.shape[0] == max(s1.shape[0] + o1, s2.shape[0] + o2) and min(o1, o2) == 0


def test_mix_speakers_crops_to_a_given_length_and_tolerates_silence() -> None:
    s1, s2 = speechlike(0.8, seed=1), np.zeros(SR // 2, np.float32)
    mixture, (a1, a2), info = mix_speakers(rng(0), s1, s2, length=SR // 4)
    assert mixture.shape == (SR // 4,) and info["rel_db"] is None
    assert np.isfinite(mixture).all() and np.array_equal(mixture, a1 + a2)
