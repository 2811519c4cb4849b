"""Evaluation: metric sanity, deterministic test sets, end-to-end runs with identity / oracle systems, the report."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pesq")
pytest.importorskip("pystoi")

from model.audio import SAMPLE_RATE, load_audio
from tests.conftest import speechlike
from training.augmentation.noise import NoiseBank
from training.evaluation import metrics
from training.evaluation.evaluate import (
    enhancement_cases,
    evaluate_enhancement,
    evaluate_separation,
    run_evaluation,
    separation_cases,
    write_json,
    write_report,
)

SR = SAMPLE_RATE
VOICES = [  # (speaker name as the corpus spells it, espeak-ng voice, sentence)
    ("espeak-en-a", "en", "The quick brown fox jumps over the lazy dog."),
    ("espeak-en-b", "en+f3", "She sells sea shells by the sea shore."),
    ("flite-c-0", "en-us+m7", "Every morning we walk along the river bank."),
    ("festival-d-0", "en+f2", "Please bring me a cup of tea and some bread."),
]


def _speech(voice: str, text: str, seed: int) -> np.ndarray:
    """Real speech from espeak-ng when installed (PESQ and DNSMOS expect speech), else a speech-like tone."""
    if shutil.which("espeak-ng") is None:
        return speechlike(2.0, seed)
    wav_bytes = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    return 0.5 * load_audio(wav_bytes)


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    return [_speech(voice, text, i) for i, (_, voice, text) in enumerate(VOICES)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, speech: list[np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for (speaker, _, text), wav in zip(VOICES, speech, strict=True):
        sf.write(root / f"{speaker}.wav", wav, SR)
        rows.append({"audio": f"{speaker}.wav", "duration": len(wav) / SR, "speaker": speaker, "text": text})
    path = root / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _at_snr(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(clean.shape[0])
    noise *= math.sqrt(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (clean + noise).astype(np.float32)


def _bank() -> NoiseBank:
    return NoiseBank(clip_dir=None)  # generated noise only: fast and the same on every machine


# ------------------------------------------------------------------------------------------------------- metrics


def test_si_sdr_identity_snr_and_scale_invariance(speech: list[np.ndarray]) -> None:
    x = speech[0]
    noisy = _at_snr(x, 10.0)
    assert metrics.si_sdr(x, x) > 90.0
    assert metrics.si_sdr(noisy, x) == pytest.approx(10.0, abs=0.3)
    assert metrics.si_sdr(3.0 * noisy, x) == pytest.approx(metrics.si_sdr(noisy, x), abs=1e-6)
    assert metrics.si_sdr(noisy, 0.2 * x) == pytest.approx(metrics.si_sdr(noisy, x), abs=1e-6)
    assert metrics.si_sdr(np.concatenate([noisy, noisy[:100]]), x) == pytest.approx(metrics.si_sdr(noisy, x))  # crop
    assert metrics.si_sdr(np.zeros_like(x), x) == -metrics.SI_SDR_LIMIT_DB
    assert math.isnan(metrics.si_sdr(x, np.zeros_like(x)))


def test_permutation_si_sdr_finds_the_order(speech: list[np.ndarray]) -> None:
    n = min(len(speech[0]), len(speech[1]))
    refs = np.stack([speech[0][:n], speech[1][:n]])
    ests = np.stack([_at_snr(refs[1], 15.0, 1), _at_snr(refs[0], 5.0, 2)])  # swapped, different qualities
    values, perm = metrics.permutation_si_sdr(ests, refs)
    assert perm == (1, 0)
    assert values[0] == pytest.approx(5.0, abs=0.3) and values[1] == pytest.approx(15.0, abs=0.3)


def test_oracle_irm_separates_two_talkers(speech: list[np.ndarray]) -> None:
    n = min(len(speech[0]), len(speech[1]))
    refs = np.stack([speech[0][:n], speech[1][:n]])
    mixture = refs.sum(axis=0)
    est = metrics.oracle_irm_separation(mixture, refs)
    assert est.shape == refs.shape and est.dtype == np.float32
    values, perm = metrics.permutation_si_sdr(est, refs)
    improvement = values - np.array([metrics.si_sdr(mixture, r) for r in refs])
    assert perm == (0, 1) and (improvement > 5.0).all()


def test_pesq_and_estoi_rank_clean_above_noisy(speech: list[np.ndarray]) -> None:
    x = speech[0]
    noisy = _at_snr(x, 5.0)
    assert metrics.pesq_wb(x, x) > 4.0
    assert metrics.pesq_wb(x, noisy) < metrics.pesq_wb(x, x) - 1.0
    assert metrics.estoi(x, x) > 0.99
    assert metrics.estoi(x, noisy) < metrics.estoi(x, x)
    assert metrics.pesq_wb(x, np.zeros_like(x)) == metrics.PESQ_MIN  # silence conveys nothing


def test_pesq_on_silence_is_nan_and_counted() -> None:
    before = sum(metrics.pesq_failures.values())
    assert math.isnan(metrics.pesq_wb(np.zeros(SR, np.float32), np.ones(SR, np.float32) * 0.1))
    assert sum(metrics.pesq_failures.values()) == before + 1


def test_dnsmos_on_speech_and_on_short_clips(speech: list[np.ndarray]) -> None:
    scores = metrics.dnsmos(speech[0][: 2 * SR])
    assert set(scores) == {"ovrl", "sig", "bak"}
    assert all(math.isfinite(v) and 1.0 <= v <= 5.0 for v in scores.values())
    assert all(math.isnan(v) for v in metrics.dnsmos(speech[0][: SR // 2]).values())


def test_spectral_gating_keeps_length_and_removes_noise(speech: list[np.ndarray]) -> None:
    x = speech[0]
    noisy = _at_snr(x, 5.0)
    out = metrics.spectral_gating(noisy)
    assert out.shape == noisy.shape and np.isfinite(out).all()
    assert metrics.si_sdr(out, x) > metrics.si_sdr(noisy, x)


# ----------------------------------------------------------------------------------------------------- test sets


def test_enhancement_cases_are_reproducible(manifest: Path) -> None:
    a = enhancement_cases(manifest, 3, seed=7, noise_bank=_bank())
    b = enhancement_cases(manifest, 2, seed=7, noise_bank=_bank())
    assert [c.id for c in a[:2]] == [c.id for c in b]
    for x, y in zip(a[:2], b, strict=True):  # case i does not depend on n
        np.testing.assert_array_equal(x.noisy, y.noisy)
        np.testing.assert_array_equal(x.clean, y.clean)
    assert len({c.info["audio"] for c in a}) == 3
    assert all(0.0 <= c.info["snr_db"] <= 10.0 and c.info["noise"] for c in a)
    other = enhancement_cases(manifest, 3, seed=8, noise_bank=_bank())
    assert not all(np.array_equal(x.noisy, y.noisy) for x, y in zip(a, other, strict=True))


def test_separation_cases_mix_different_speakers(manifest: Path) -> None:
    cases = separation_cases(manifest, 4, seed=3)
    again = separation_cases(manifest, 4, seed=3)
    for c, d in zip(cases, again, strict=True):
        np.testing.assert_array_equal(c.noisy, d.noisy)
        assert c.clean.shape == (2, c.noisy.shape[0])
        np.testing.assert_allclose(c.clean.sum(axis=0), c.noisy, atol=1e-6)
        assert c.info["speakers"][0] != c.info["speakers"][1]
        assert c.info["level"] in {"within 2.5 dB", "2.5 dB or more apart"}
        assert set(c.info["engine_pair"].split("+")) <= {"espeak", "flite", "festival"}


# ---------------------------------------------------------------------------------------------------- end to end


def test_enhancement_identity_equals_input_and_oracle_beats_it(manifest: Path, tmp_path: Path) -> None:
    cases = enhancement_cases(manifest, 3, seed=0, noise_bank=_bank(), max_seconds=1.5)
    same = evaluate_enhancement(lambda xs: list(xs), cases, peers=False, batch_size=2, progress=False)
    for metric in same["metrics"]:
        assert same["overall"]["ours"][metric] == pytest.approx(same["overall"]["input"][metric], nan_ok=True)
    assert math.isfinite(same["overall"]["ours"]["dnsmos_ovrl"])

    clean_of = iter([c.clean for c in cases])  # process sees batches in case order
    oracle = evaluate_enhancement(
        lambda xs: [next(clean_of) for _ in xs], cases, peers=True, use_dnsmos=False, batch_size=2, progress=False
    )
    ours, noisy = oracle["overall"]["ours"], oracle["overall"]["input"]
    assert ours["pesq_wb"] > noisy["pesq_wb"] + 1.0 and ours["estoi"] > noisy["estoi"] and ours["si_sdr"] > 50.0
    assert set(oracle["systems"]) == {"input", "ours", "spectral_gating"}
    assert sum(b["n"] for b in oracle["groups"]["SNR"].values()) == 3

    report = tmp_path / "report" / "enhance.md"
    write_report(oracle, report, [(cases[0].id, cases[0].noisy, cases[0].clean, cases[0].clean)])
    text = report.read_text()
    assert "| system | PESQ-WB | ESTOI | SI-SDR (dB) |" in text and "spectral gating" in text and "## By SNR" in text
    png = report.with_name("enhance_00.png")
    assert png.stat().st_size > 1000 and "](enhance_00.png)" in text
    write_json(oracle, tmp_path / "enhance.json")
    loaded = json.loads((tmp_path / "enhance.json").read_text())
    assert loaded["n"] == 3 and len(loaded["cases"]) == 3
    write_report(loaded, tmp_path / "again.md")  # a report can be re-rendered from the saved JSON
    assert (tmp_path / "again.md").read_text().split("## Notes")[0] == text.split("## Notes")[0]


def test_separation_oracle_and_report(manifest: Path, tmp_path: Path) -> None:
    cases = separation_cases(manifest, 2, seed=0, max_seconds=1.5)
    swapped = iter([c.clean[::-1] for c in cases])  # the right speakers in the wrong order
    results = evaluate_separation(lambda xs: [next(swapped) for _ in xs], cases, batch_size=1, progress=False)
    overall = results["overall"]
    assert overall["input"]["si_sdri"] == pytest.approx(0.0, abs=1e-9)
    assert overall["ours"]["si_sdri"] > 20.0 and overall["ours"]["pesq_wb"] > 4.0
    assert overall["oracle_irm"]["si_sdri"] > 5.0
    assert set(results["groups"]) == {"relative level", "engines"}

    report = tmp_path / "separate.md"
    write_report(results, report, [("first", cases[0].noisy, cases[0].clean[0], cases[0].clean[0])])
    text = report.read_text()
    assert "| system | SI-SDR (dB) | SI-SDRi (dB) |" in text and "oracle IRM (upper bound)" in text
    assert "SI-SDRi > 0 dB on every class: **yes**" in text
    assert (tmp_path / "separate_00.png").is_file()


def test_run_evaluation_writes_json_and_report(manifest: Path, tmp_path: Path) -> None:
    results = run_evaluation(
        "separate",
        lambda xs: [np.stack([x, x]) for x in xs],
        manifest,
        n=2,
        seed=1,
        json_out=tmp_path / "out.json",
        report_out=tmp_path / "out.md",
        peers=False,
        n_pictures=2,
        max_seconds=1.0,
        progress=False,
        extra_config={"bundle": "demo"},
    )
    assert results["config"]["bundle"] == "demo"
    saved = json.loads((tmp_path / "out.json").read_text())  # strict JSON: NaN would have become null
    assert saved["overall"]["ours"]["si_sdri"] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "out_00.png").is_file() and (tmp_path / "out_01.png").is_file()
    assert "`demo`" in (tmp_path / "out.md").read_text()


def test_bad_process_outputs_are_reported(manifest: Path) -> None:
    cases = separation_cases(manifest, 2, seed=0, max_seconds=1.0)
    with pytest.raises(ValueError, match="outputs for a batch"):
        evaluate_separation(lambda xs: [], cases, peers=False, progress=False)
    with pytest.raises(ValueError, match="expected \\(2, n\\)"):
        evaluate_separation(lambda xs: list(xs), cases, peers=False, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_separation(lambda xs: [np.full((2, len(x)), np.nan) for x in xs], cases, peers=False, progress=False)


def test_vocoder_copy_synthesis_ranks_griffin_lim_above_a_broken_vocoder(manifest: Path, tmp_path: Path) -> None:
    # a "vocoder" that keeps only the loudness envelope (noise shaped by the frame energy) must score far below
    # Griffin-Lim on the same mels, on every utterance, and the recording is DNSMOS's reference row
    import torch

    from model.features import MelConfig, MelSpectrogram
    from model.vocoder import GriffinLimVocoder
    from training.evaluation.vocoder import evaluate_vocoders, vocoder_utterances, write_vocoder_report

    mel = MelSpectrogram(MelConfig())

    def envelope_noise(feats: torch.Tensor) -> torch.Tensor:  # (1, T, n_mels) -> (1, T * hop)
        energy = feats.mean(-1).exp().repeat_interleave(160, dim=-1)
        return 0.01 * energy * torch.randn(energy.shape, generator=torch.Generator().manual_seed(0))

    n = len(VOICES)
    res = evaluate_vocoders({"griffin_lim": GriffinLimVocoder(MelConfig()), "broken": envelope_noise}, mel,
                            manifest, n=n, seed=0, use_dnsmos=True, progress=False)
    assert res["n"] == n and {r["engine"] for r in res["rows"]} <= {"espeak", "flite", "festival", "other"}
    for row in res["rows"]:
        assert row["griffin_lim"]["pesq_wb"] > row["broken"]["pesq_wb"] + 1.0
        assert row["griffin_lim"]["estoi"] > row["broken"]["estoi"] + 0.3
        assert set(row["recording"]) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"}  # no self-comparison
    assert res["overall"]["griffin_lim"]["dnsmos_ovrl"] > res["overall"]["broken"]["dnsmos_ovrl"]
    assert math.isnan(res["overall"]["recording"]["pesq_wb"])
    assert sum(e["n"] for e in res["by_engine"].values()) == n
    assert set(res["rtf"]) == {"griffin_lim", "broken"} and all(v > 0 for v in res["rtf"].values())
    write_vocoder_report(res, tmp_path / "v.md")
    report = (tmp_path / "v.md").read_text()
    assert "| griffin_lim | " in report and "| broken | " in report and "## By engine" in report
    ids = [u.id for u in vocoder_utterances(manifest, n, seed=0)]
    assert ids == [r["id"] for r in res["rows"]] and sorted(ids) == sorted(u.id for u in vocoder_utterances(
        manifest, n, seed=1)) and ids != [u.id for u in vocoder_utterances(manifest, n, seed=1)]
