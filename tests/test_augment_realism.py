"""The realistic training distribution: simulated rooms, microphone colouration, level, clipping, recorded voices,
and hard (same-engine, same-gender) separation pairs with dynamic mixing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from scipy.signal import welch

from model.errors import ConfigError
from tests.conftest import speechlike
from training.augmentation.colouration import (
    ColourConfig,
    apply_chain,
    chain_response_db,
    clip,
    draw_chain,
    peaking,
    shelf,
)
from training.augmentation.levels import active_power
from training.augmentation.mixing import AugmentConfig, make_noisy
from training.augmentation.noise import NoiseBank, load_training_music
from training.augmentation.pairing import MixtureConfig, pick_partner, speaker_engine, speaker_gender, speaker_keys
from training.augmentation.rooms import RoomConfig, decay_rt60, reverberate, room_rir
from training.data.asterisk import TEST_MUSIC
from training.data.loading import BatchKey
from training.data.manifest import open_cuts
from training.synthetic.corpus import make_speakers
from training.tasks.enhance_separate import MixtureDataset, NoisyCropDataset

SR = 16000


def db(x: float) -> float:
    return float(10 * np.log10(x))


# --------------------------------------------------------------------------------------------------------- rooms


@pytest.mark.parametrize("seed", range(8))
def test_room_rir_decays_at_the_rt60_of_the_room_asked_for(seed: int) -> None:
    cfg = RoomConfig()
    rir, info = room_rir(np.random.default_rng(seed), cfg, (0.2, 0.8))
    assert rir.dtype == np.float32 and np.isfinite(rir).all()
    assert np.abs(rir).max() == pytest.approx(1.0) and rir[int(np.argmax(np.abs(rir)))] == pytest.approx(1.0)
    length, _, height = info["dims"]
    assert cfg.length_m[0] <= length <= cfg.length_m[1] and cfg.height_m[0] <= height <= cfg.height_m[1]
    assert 0.2 <= info["rt60"] <= 0.8 or info["absorption"] == 0.99  # only a huge room cannot be that dry
    assert 0.0 < info["distance"] <= cfg.distance_m[1] + 1e-9 and 0.0 < info["absorption"] <= 0.99
    assert decay_rt60(rir) == pytest.approx(info["rt60"], rel=0.25)  # the Schroeder decay, not just the label
    again, _ = room_rir(np.random.default_rng(seed), cfg, (0.2, 0.8))
    assert np.array_equal(rir, again)


def test_room_rir_direct_path_and_distance_set_the_reverberant_share() -> None:
    # Same room and RT60: a talker 3 m away is more reverberant (lower direct-to-reverberant ratio) than one at 0.5 m.
    def drr(distance: float) -> float:
        cfg = RoomConfig(length_m=(6.0, 6.0), width_m=(5.0, 5.0), height_m=(3.0, 3.0), distance_m=(distance, distance))
        rir, info = room_rir(np.random.default_rng(0), cfg, 0.5)
        assert info["distance"] == pytest.approx(distance, rel=0.1)
        peak = int(np.argmax(np.abs(rir)))
        direct = float(np.sum(rir[max(0, peak - 40) : peak + 40] ** 2))
        return db(direct / float(np.sum(rir[peak + 40 :] ** 2)))

    assert drr(0.5) > drr(3.0) + 6.0


def test_reverberated_speech_keeps_alignment_with_a_room_rir() -> None:
    clicks = np.zeros(SR, np.float32)
    clicks[::4000] = 1.0
    rir, _ = room_rir(np.random.default_rng(3), RoomConfig(), 0.6)
    wet = reverberate(clicks, rir)
    lag = int(np.argmax(np.correlate(wet, clicks, mode="full"))) - (clicks.size - 1)
    assert wet.shape == clicks.shape and lag == 0


def test_room_config_rejects_impossible_rooms() -> None:
    with pytest.raises(ConfigError):
        RoomConfig(length_m=(0.5, 1.0))
    with pytest.raises(ConfigError):
        RoomConfig(distance_m=(2.0, 1.0))


# ---------------------------------------------------------------------------------------------------- colouration


def _measured_db(x: np.ndarray, y: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    f, pxx = welch(x, fs=SR, nperseg=1024)
    _, pyy = welch(y, fs=SR, nperseg=1024)
    return np.interp(freqs, f, 10 * np.log10(pyy / pxx))


def test_biquads_have_the_gains_they_are_asked_for() -> None:
    freqs = np.array([30.0, 1000.0, 7900.0])
    assert chain_response_db(peaking(1000.0, 6.0, 2.0), freqs) == pytest.approx([0.0, 6.0, 0.0], abs=0.2)
    assert chain_response_db(shelf(300.0, -8.0, high=False), freqs) == pytest.approx([-8.0, 0.0, 0.0], abs=0.5)
    assert chain_response_db(shelf(3000.0, 5.0, high=True), freqs) == pytest.approx([0.0, 0.0, 5.0], abs=0.5)


def test_drawn_chain_shapes_the_spectrum_as_its_response_says() -> None:
    white = np.random.default_rng(0).standard_normal(8 * SR).astype(np.float32)
    freqs = np.geomspace(150.0, 6000.0, 12)
    for seed in range(4):
        sos, info = draw_chain(np.random.default_rng(seed), ColourConfig(p_telephone=0.0))
        out = apply_chain(sos, white)
        assert _measured_db(white, out, freqs) == pytest.approx(chain_response_db(sos, freqs), abs=1.5), info


def test_telephone_band_removes_lows_and_highs() -> None:
    sos, info = draw_chain(np.random.default_rng(1), ColourConfig(p_telephone=1.0))
    low, high = info["telephone_hz"]
    assert 200.0 <= low <= 400.0 and 3000.0 <= high <= 3800.0
    white = np.random.default_rng(2).standard_normal(4 * SR).astype(np.float32)
    response = _measured_db(white, apply_chain(sos, white), np.array([80.0, 1000.0, 6000.0]))
    assert response[1] > -3.0 and response[0] < response[1] - 20.0 and response[2] < response[1] - 20.0


def test_keep_level_preserves_the_active_speech_level() -> None:
    speech = speechlike(1.0, seed=4)
    sos, _ = draw_chain(np.random.default_rng(5), ColourConfig(p_telephone=1.0))
    out = apply_chain(sos, speech, keep_level=active_power)
    assert db(active_power(out) / active_power(speech)) == pytest.approx(0.0, abs=0.01)


def test_hard_clipping_clips_the_asked_share_of_samples() -> None:
    speech = speechlike(1.0, seed=6)
    for seed in range(6):
        out, info = clip(np.random.default_rng(seed), speech, (0.01, 0.01))
        at_threshold = np.mean(np.abs(out) >= info["threshold"] - 1e-7)
        assert np.abs(out).max() <= info["threshold"] + 1e-6
        if info["kind"] == "hard":
            assert at_threshold == pytest.approx(0.01, abs=0.003)


# ------------------------------------------------------------------------------------------------- make_noisy


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank(babble_sources=[speechlike(0.6, seed=40 + i) for i in range(3)])


def test_plain_config_draws_no_new_stage(bank: NoiseBank) -> None:
    clean = speechlike(0.5, seed=7)
    *_, info = make_noisy(np.random.default_rng(0), clean, bank, AugmentConfig())
    assert info["rir"] is None and info["colour"] is None and info["level_dbfs"] is None and info["clip"] is None
    assert info["noise"] != "music"  # off by default: the evaluation's noise kinds are unchanged


def test_training_config_sets_the_level_and_keeps_a_clean_level_matched_target(bank: NoiseBank) -> None:
    clean = speechlike(1.0, seed=8)
    cfg = AugmentConfig.training(p_colour=1.0, p_clip=0.0, snr_db=(40.0, 40.0))
    for seed in range(6):
        noisy, target, info = make_noisy(np.random.default_rng(seed), clean, bank, cfg)
        assert info["colour"] is not None and -45.0 <= info["level_dbfs"] <= -12.0
        assert db(active_power(noisy)) == pytest.approx(info["level_dbfs"], abs=0.5)
        np.testing.assert_allclose(target, clean * info["scale"], atol=1e-6)  # clean shape, the input's level
        if not info["reverb"]:  # speech dominates at 40 dB SNR: the target is as loud as the speech in the input
            assert db(active_power(noisy) / active_power(target)) == pytest.approx(0.0, abs=0.6)
        again = make_noisy(np.random.default_rng(seed), clean, bank, cfg)
        assert np.array_equal(again[0], noisy) and np.array_equal(again[1], target)


def test_training_config_reverberates_with_simulated_rooms(bank: NoiseBank) -> None:
    clean = speechlike(1.0, seed=9)
    noisy, target, info = make_noisy(np.random.default_rng(3), clean, bank,
                                     AugmentConfig.training(p_reverb=1.0, p_room=1.0, p_colour=0.0, p_clip=1.0))
    assert info["rir"] == "room" and info["rt60"] == info["room"]["rt60"] and info["clip"] is not None
    assert noisy.shape == target.shape == clean.shape and np.abs(noisy).max() <= 0.99 + 1e-6


def test_rooms_fall_back_to_synthetic_rirs_without_pyroomacoustics(bank: NoiseBank, monkeypatch) -> None:
    monkeypatch.setattr("training.augmentation.mixing.rooms_available", lambda: False)
    cfg = AugmentConfig.training(p_reverb=1.0, p_room=1.0)
    *_, info = make_noisy(np.random.default_rng(0), speechlike(0.5, seed=3), bank, cfg)
    assert info["reverb"] and info["rir"] == "synthetic"


def test_music_is_the_music_on_hold_but_the_held_out_track(tmp_path: Path) -> None:
    from tests.test_real_speech import write_g722

    for name, seed in (("track-a", 1), ("track-b", 2), (TEST_MUSIC[0], 3)):
        write_g722(tmp_path / f"{name}.g722", speechlike(1.0 + seed, seed=seed))
    tracks = load_training_music(tmp_path)
    assert sorted(len(x) for x in tracks) == [2 * SR, 3 * SR]  # the 4 s held-out test track is not noise
    bank = NoiseBank(music=tracks)
    noise, kind = bank.sample(np.random.default_rng(0), 5 * SR, {"music": 1.0})  # longer than a track: looped
    assert kind == "music" and noise.shape == (5 * SR,) and float(np.mean(noise**2)) > 1e-4
    assert load_training_music(tmp_path / "missing") == () and "music" not in NoiseBank(music=()).available
    assert AugmentConfig.training().noise_weights["music"] > 0 and AugmentConfig().noise_weights["music"] == 0


def test_no_reserved_material_is_noise() -> None:
    """alsa-utils' sounds are held out for independent figures: the noise bank's folders are others."""
    import inspect

    from training.augmentation import noise

    folders = [p.default for p in inspect.signature(noise.load_training_music).parameters.values()]
    folders += [p.default for p in inspect.signature(NoiseBank).parameters.values() if isinstance(p.default, Path)]
    assert folders == [noise.MOH_DIR, noise.SOUND_ICONS_DIR]
    assert not any(f.is_relative_to("/usr/share/sounds/alsa") for f in folders)


# -------------------------------------------------------------------------------------------------- separation


def test_every_corpus_voice_has_an_engine_and_a_gender() -> None:
    for speaker in make_speakers(0):
        assert speaker_engine(speaker.name) == speaker.engine
        assert speaker_gender(speaker.name) in ("m", "f"), speaker.name
    assert speaker_gender("espeak-en-gb-x-rp-f3") == "f" and speaker_gender("flite-slt-1") == "f"
    assert speaker_gender("festival-ked_diphone-0") == "m" and speaker_gender("1089") is None
    # a misspelt variant (no file) is spoken by the male base voice, whatever its name suggests
    assert speaker_gender("espeak-en-us-Steph") == "m" and speaker_gender("espeak-en-us-steph") == "f"


KEYS = [("espeak-en-us-f1", "espeak", "f"), ("espeak-en-gb-f3", "espeak", "f"), ("espeak-en-us-m1", "espeak", "m"),
        ("flite-slt-0", "flite", "f"), ("flite-awb-0", "flite", "m"), ("espeak-en-us-f1", "espeak", "f")]


def test_hard_pairs_are_two_speakers_of_one_engine_and_gender() -> None:
    for seed in range(20):
        j, kind = pick_partner(np.random.default_rng(seed), 0, KEYS, p_hard=1.0)
        assert kind == "hard" and KEYS[j][0] == "espeak-en-gb-f3"  # the only other female espeak speaker
        j, kind = pick_partner(np.random.default_rng(seed), 3, KEYS, p_hard=1.0)
        assert kind == "engine" and KEYS[j][0] == "flite-awb-0"  # no other female flite: same engine instead
        j, kind = pick_partner(np.random.default_rng(seed), 2, KEYS, p_hard=0.0)
        assert kind == "any" and KEYS[j][0] != KEYS[2][0]
    shares = [pick_partner(np.random.default_rng(s), 0, KEYS, p_hard=0.3)[1] == "hard" for s in range(400)]
    assert np.mean(shares) == pytest.approx(0.3, abs=0.07)


def _speaker_corpus(root: Path, speakers: list[str], per_speaker: int = 2) -> Path:
    rows = []
    for s, name in enumerate(speakers):
        for k in range(per_speaker):
            path = root / "wavs" / f"{name}-{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.5 * speechlike(1.2, seed=100 * s + k), SR)
            rows.append({"audio": str(path.relative_to(root)), "duration": 1.2, "speaker": name})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_mixture_batches_pair_hard_cases_and_change_with_the_epoch(tmp_path: Path) -> None:
    names = ["espeak-en-us-f1", "espeak-en-gb-f3", "espeak-en-us-m1", "espeak-en-gb-m3", "flite-slt-0", "flite-awb-0"]
    cuts = list(open_cuts(_speaker_corpus(tmp_path, names)))
    keys = speaker_keys(cuts)
    dataset = MixtureDataset(1.0, seed=3, mixing=MixtureConfig(p_hard=1.0))
    for epoch in range(3):
        for i, (j, kind) in enumerate(dataset.pairs(cuts, epoch)):
            assert keys[j][0] != keys[i][0] and keys[j][1] == keys[i][1]  # two speakers, one engine
            assert kind in ("hard", "engine") and (kind != "hard" or keys[j][2] == keys[i][2])
    assert dataset.pairs(cuts, 0) != dataset.pairs(cuts, 1)  # dynamic: new pairs next epoch
    batch = dataset[BatchKey(0, 0, CutSet(cuts))]["tensors"]
    again = MixtureDataset(1.0, seed=3, mixing=MixtureConfig(p_hard=1.0))[BatchKey(0, 0, CutSet(cuts))]["tensors"]
    assert all(np.array_equal(batch[k].numpy(), again[k].numpy()) for k in ("mix", "s1", "s2"))
    for row, n in enumerate(batch["lengths"].tolist()):
        mix, s1, s2 = (batch[k][row, :n].numpy() for k in ("mix", "s1", "s2"))
        np.testing.assert_allclose(mix, s1 + s2, atol=1e-6)
        assert -45.5 <= db(active_power(mix)) <= -11.5  # the level draw, not the corpus's level


def test_enhancement_batches_use_the_training_distribution(tmp_path: Path) -> None:
    manifest = _speaker_corpus(tmp_path, ["espeak-en-us-f1", "flite-slt-0"], per_speaker=4)
    dataset = NoisyCropDataset(manifest, max_seconds=1.0, seed=2)
    assert dataset.augment == AugmentConfig.training()
    batch = dataset[BatchKey(0, 0, CutSet(list(open_cuts(manifest))))]["tensors"]
    levels = [db(active_power(batch["noisy"][r, :n].numpy())) for r, n in enumerate(batch["lengths"].tolist())]
    assert all(-45.5 <= x <= -11.5 for x in levels) and np.ptp(levels) > 3.0
