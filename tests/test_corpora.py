"""Real-corpus manifest builders on tiny fake LibriSpeech, VoiceBank-DEMAND and LibriMix trees."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.manifest import ManifestError, read_manifest
from training.real_manifests import audio_tree_manifest, librimix_manifest, main, voicebank_demand_manifest

SR = 16000


def write_tone(path: Path, seconds: float, sr: int = SR, freq: float = 220.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


@pytest.fixture
def librispeech(tmp_path: Path) -> Path:
    """``speaker/chapter/utt.flac`` with one transcript file, one short file and one corrupt file."""
    root = tmp_path / "LibriSpeech" / "train-clean-100"
    write_tone(root / "84/121123/84-121123-0000.flac", 0.8)
    write_tone(root / "84/121123/84-121123-0001.flac", 0.6)
    write_tone(root / "84/121123/84-121123-0002.flac", 0.2)  # below min_duration
    (root / "84/121123/84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS\n")
    write_tone(root / "1272/128104/1272-128104-0000.wav", 1.0)  # no transcript: no text key
    (root / "1272/128104/1272-128104-0001.flac").write_bytes(b"not audio at all")
    return root


def test_tree_librispeech_layout(librispeech: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = librispeech / "manifest.jsonl"  # under the corpus: paths must be relative
    with caplog.at_level(logging.WARNING):
        assert audio_tree_manifest(librispeech, out) == 3
    assert "skipped 1 file(s) shorter" in caplog.text and "1 unreadable" in caplog.text
    rows = rows_of(out)
    assert [r["audio"] for r in rows] == sorted(r["audio"] for r in rows)  # deterministic order
    by_name = {Path(r["audio"]).stem: r for r in rows}
    assert by_name["84-121123-0000"]["text"] == "GO DO YOU HEAR"
    assert by_name["84-121123-0001"]["text"] == "BUT IN LESS"
    assert "text" not in by_name["1272-128104-0000"]
    assert {r["speaker"] for r in rows} == {"84", "1272"}
    assert all(not Path(r["audio"]).is_absolute() for r in rows)
    durations = {u.audio.stem: u.duration for u in read_manifest(out)}
    assert durations == pytest.approx({"84-121123-0000": 0.8, "84-121123-0001": 0.6, "1272-128104-0000": 1.0},
                                      abs=1e-3)
    assert all(u.audio.is_file() for u in read_manifest(out))


def test_tree_outside_root_uses_absolute_paths(librispeech: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "m.jsonl"
    assert audio_tree_manifest(librispeech, out, exts=(".flac",), min_duration=0.0) == 3  # wav excluded, 0.2 s kept
    assert all(Path(r["audio"]).is_absolute() for r in rows_of(out))
    assert all(u.audio.is_file() for u in read_manifest(out))


def test_tree_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        audio_tree_manifest(tmp_path / "missing", tmp_path / "m.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        audio_tree_manifest(tmp_path / "empty", tmp_path / "m.jsonl")


def make_voicebank(root: Path) -> None:
    for name, seconds in [("p226_001.wav", 0.7), ("p226_002.wav", 0.9), ("p287_001.wav", 0.6)]:
        write_tone(root / "clean_trainset_28spk_wav" / name, seconds)
        write_tone(root / "noisy_trainset_28spk_wav" / name, seconds, freq=330.0)
    for name in ["p232_001.wav", "p257_010.wav"]:
        write_tone(root / "clean_testset_wav" / name, 0.8)
        write_tone(root / "noisy_testset_wav" / name, 0.8, freq=330.0)


def test_voicebank_pairs(tmp_path: Path) -> None:
    root = tmp_path / "vbd"
    make_voicebank(root)
    assert voicebank_demand_manifest(root, root) == {"train": 3, "test": 2}
    train = rows_of(root / "train.jsonl")
    assert [r["speaker"] for r in train] == ["p226", "p226", "p287"]
    for row in train:
        assert row["audio"] == f"clean_trainset_28spk_wav/{Path(row['audio']).name}"
        assert row["noisy"] == f"noisy_trainset_28spk_wav/{Path(row['audio']).name}"
    assert [u.duration for u in read_manifest(root / "train.jsonl")] == pytest.approx([0.7, 0.9, 0.6], abs=1e-3)
    test = read_manifest(root / "test.jsonl")
    assert [u.meta["speaker"] for u in test] == ["p232", "p257"]
    assert all((root / u.meta["noisy"]).is_file() for u in test)


def test_voicebank_56spk_variant(tmp_path: Path) -> None:
    root = tmp_path / "vbd"
    make_voicebank(root)
    (root / "clean_trainset_28spk_wav").rename(root / "clean_trainset_56spk_wav")
    (root / "noisy_trainset_28spk_wav").rename(root / "noisy_trainset_56spk_wav")
    assert voicebank_demand_manifest(root, tmp_path / "out")["train"] == 3


def test_voicebank_unmatched_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "vbd"
    make_voicebank(root)
    write_tone(root / "noisy_testset_wav" / "p232_099.wav", 0.6)
    with pytest.raises(ManifestError, match=r"p232_099\.wav"):
        voicebank_demand_manifest(root, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written
    (root / "noisy_testset_wav" / "p232_099.wav").unlink()
    shutil.rmtree(root / "clean_testset_wav")
    with pytest.raises(ManifestError, match="clean_testset_wav"):
        voicebank_demand_manifest(root, tmp_path / "out")
    with pytest.raises(ManifestError, match="clean_trainset_28spk_wav"):  # not a VoiceBank-DEMAND root at all
        voicebank_demand_manifest(root / "noisy_testset_wav", tmp_path / "out")


def make_librimix(root: Path, noise: bool = True) -> Path:
    """A Libri2Mix-style tree at 8 kHz with a metadata CSV of relative paths."""
    lengths = {"m1": 6400, "m2": 7200}  # 0.8 s and 0.9 s at 8 kHz
    lines = ["mixture_ID,mixture_path,source_1_path,source_2_path," + ("noise_path," if noise else "") + "length"]
    for mid, n in lengths.items():
        for part in ["mix_both", "s1", "s2", "noise"]:
            write_tone(root / part / f"{mid}.wav", n / 8000, sr=8000)
        cols = [mid, f"mix_both/{mid}.wav", f"s1/{mid}.wav", f"s2/{mid}.wav"] + ([f"noise/{mid}.wav"] if noise else [])
        lines.append(",".join([*cols, str(n)]))
    csv_path = root / "metadata" / "mixture_train_mix_both.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def test_librimix_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    csv_path = make_librimix(root)
    out = root / "train.jsonl"
    assert librimix_manifest(csv_path, out, root=root) == 2
    rows = rows_of(out)
    assert rows[0] == {"audio": "mix_both/m1.wav", "sources": ["s1/m1.wav", "s2/m1.wav"], "duration": 0.8,
                       "id": "m1", "noise": "noise/m1.wav"}
    utts = read_manifest(out)
    assert [u.duration for u in utts] == pytest.approx([0.8, 0.9], abs=1e-3)
    assert [u.duration for u in utts] == pytest.approx([sf.info(str(u.audio)).duration for u in utts], abs=1e-3)
    assert all((out.parent / s).is_file() for u in utts for s in u.meta["sources"])


def test_librimix_root_defaults_to_csv_dir(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    csv_path = make_librimix(root, noise=False)
    with pytest.raises(ManifestError, match="first mixture not found"):  # paths are relative to root, not metadata/
        librimix_manifest(csv_path, tmp_path / "m.jsonl")
    moved = root / "mixture_train_mix_both.csv"
    csv_path.rename(moved)
    assert librimix_manifest(moved, tmp_path / "m.jsonl") == 2
    assert "noise" not in rows_of(tmp_path / "m.jsonl")[0]


def test_librimix_missing_column(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("mixture_ID,mixture_path,source_1_path,length\nm1,a.wav,b.wav,100\n")
    with pytest.raises(ManifestError, match="source_2_path") as info:
        librimix_manifest(csv_path, tmp_path / "m.jsonl")
    assert "expected" in str(info.value)


def test_cli(librispeech: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli" / "ls.jsonl"
    assert main(["tree", str(librispeech), str(out)]) == 0
    assert len(read_manifest(out)) == 3
    vbd = tmp_path / "vbd"
    make_voicebank(vbd)
    assert main(["voicebank", str(vbd), str(tmp_path / "vb")]) == 0
    assert (tmp_path / "vb" / "train.jsonl").is_file() and (tmp_path / "vb" / "test.jsonl").is_file()
    mix = tmp_path / "mix"
    assert main(["librimix", str(make_librimix(mix)), str(tmp_path / "mix.jsonl"), "--root", str(mix)]) == 0
    assert len(read_manifest(tmp_path / "mix.jsonl")) == 2
    capsys.readouterr()
    assert main(["tree", str(tmp_path / "nope"), str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err
    assert not (tmp_path / "x.jsonl").exists()
