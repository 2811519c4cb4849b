"""`speechflow manifest` on tiny fake trees: Lhotse's LibriSpeech and LibriTTS recipes, our tree / VoiceBank-DEMAND /
LibriMix builders (CutSets with custom ``noisy`` / ``sources`` Recordings, which the task datasets read), and the
converter of old JSONL manifests."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data.corpora import audio_tree_manifest, librimix_manifest, voicebank_demand_manifest
from training.data.cuts import ManifestError
from training.data.lhotse_recipes import main
from training.data.manifest import open_cuts, read_manifest

SR = 16000


def write_tone(path: Path, seconds: float, sr: int = SR, freq: float = 220.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def rows_of(manifest: Path) -> list[dict]:
    """The stored cuts as dicts (paths as written, before any resolving)."""
    with (gzip.open(manifest, "rt") if manifest.suffix == ".gz" else manifest.open()) as f:
        return [json.loads(line) for line in f]


def audio_path(cut: dict, field: str | None = None) -> str | list[str]:
    rec = cut["recording"] if field is None else cut["custom"][field]
    paths = [s["source"] for s in rec["sources"]]
    return paths[0] if len(paths) == 1 else paths


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
    out = librispeech / "cuts.jsonl.gz"  # under the corpus: paths must be relative
    with caplog.at_level(logging.WARNING):
        assert audio_tree_manifest(librispeech, out) == 3
    assert "skipped 1 file(s) shorter" in caplog.text and "1 unreadable" in caplog.text
    rows = rows_of(out)
    assert [audio_path(r) for r in rows] == sorted(audio_path(r) for r in rows)  # deterministic order
    assert all(not Path(audio_path(r)).is_absolute() for r in rows)
    utts = read_manifest(out)
    by_name = {u.audio.stem: u.meta for u in utts}
    assert by_name["84-121123-0000"]["text"] == "GO DO YOU HEAR"
    assert by_name["84-121123-0001"]["text"] == "BUT IN LESS"
    assert "text" not in by_name["1272-128104-0000"]
    assert {m["speaker"] for m in by_name.values()} == {"84", "1272"}
    durations = {u.audio.stem: u.duration for u in read_manifest(out)}
    assert durations == pytest.approx({"84-121123-0000": 0.8, "84-121123-0001": 0.6, "1272-128104-0000": 1.0},
                                      abs=1e-3)
    assert all(u.audio.is_file() for u in read_manifest(out))


def test_tree_outside_root_uses_absolute_paths(librispeech: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "m.jsonl"
    assert audio_tree_manifest(librispeech, out, exts=(".flac",), min_duration=0.0) == 3  # wav excluded, 0.2 s kept
    assert all(Path(audio_path(r)).is_absolute() for r in rows_of(out))
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
    train = rows_of(root / "train_cuts.jsonl.gz")
    for row in train:
        assert audio_path(row) == f"clean_trainset_28spk_wav/{Path(audio_path(row)).name}"
        assert audio_path(row, "noisy") == f"noisy_trainset_28spk_wav/{Path(audio_path(row)).name}"
    utts = read_manifest(root / "train_cuts.jsonl.gz")
    assert [u.meta["speaker"] for u in utts] == ["p226", "p226", "p287"]
    assert [u.duration for u in utts] == pytest.approx([0.7, 0.9, 0.6], abs=1e-3)
    test = read_manifest(root / "test_cuts.jsonl.gz")
    assert [u.meta["speaker"] for u in test] == ["p232", "p257"]
    assert all(Path(u.cut.noisy.sources[0].source).is_file() for u in test)


def test_real_pairs_and_mixtures_feed_the_task_datasets(tmp_path: Path) -> None:
    """A VoiceBank cut gives the same crop of its clean and noisy files; a LibriMix cut its mixture and sources."""
    from training.tasks.enhance_separate import MixtureDataset, NoisyCropDataset

    root = tmp_path / "vbd"
    make_voicebank(root)
    voicebank_demand_manifest(root, root)
    cut = next(iter(open_cuts(root / "train_cuts.jsonl.gz")))
    item = NoisyCropDataset(root / "train_cuts.jsonl.gz", max_seconds=0.5).item(cut, 3)
    assert item["clean"].shape == item["noisy"].shape == (8000,) and not np.allclose(item["clean"], item["noisy"])
    mix_root = tmp_path / "Libri2Mix"
    librimix_manifest(make_librimix(mix_root), mix_root / "cuts.jsonl.gz", root=mix_root)
    cuts = open_cuts(mix_root / "cuts.jsonl.gz")
    items = MixtureDataset(max_seconds=0.5).items(cuts, epoch=0)
    assert all(m["mix"].shape == m["s1"].shape == m["s2"].shape == (8000,) for m in items)  # resampled to 16 kHz


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
    assert not (tmp_path / "out" / "train_cuts.jsonl.gz").exists()  # nothing half-written
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
    out = root / "train_cuts.jsonl.gz"
    assert librimix_manifest(csv_path, out, root=root) == 2
    rows = rows_of(out)
    assert rows[0]["id"] == "m1" and audio_path(rows[0]) == "mix_both/m1.wav"
    assert audio_path(rows[0], "sources") == ["s1/m1.wav", "s2/m1.wav"]
    assert audio_path(rows[0], "noise") == "noise/m1.wav"
    utts = read_manifest(out)
    assert [u.duration for u in utts] == pytest.approx([0.8, 0.9], abs=1e-3)
    assert [u.duration for u in utts] == pytest.approx([sf.info(str(u.audio)).duration for u in utts], abs=1e-3)
    assert all(Path(s.source).is_file() for u in utts for s in u.cut.sources.sources)


def test_librimix_root_defaults_to_csv_dir(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    csv_path = make_librimix(root, noise=False)
    with pytest.raises(ManifestError, match="first mixture not found"):  # paths are relative to root, not metadata/
        librimix_manifest(csv_path, tmp_path / "m.jsonl.gz")
    moved = root / "mixture_train_mix_both.csv"
    csv_path.rename(moved)
    assert librimix_manifest(moved, tmp_path / "m.jsonl.gz") == 2
    assert "noise" not in rows_of(tmp_path / "m.jsonl.gz")[0]["custom"]


def test_librimix_missing_column(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("mixture_ID,mixture_path,source_1_path,length\nm1,a.wav,b.wav,100\n")
    with pytest.raises(ManifestError, match="source_2_path") as info:
        librimix_manifest(csv_path, tmp_path / "m.jsonl.gz")
    assert "expected" in str(info.value)


def test_lhotse_recipes_on_fake_librispeech_and_libritts_trees(tmp_path: Path) -> None:
    """`speechflow manifest librispeech|libritts` run Lhotse's recipes on a local copy: one CutSet per part, with the
    transcripts and speakers on the supervisions and absolute audio paths."""
    ls = tmp_path / "LibriSpeech"
    for utt, seconds in (("0000", 0.8), ("0001", 0.6)):
        write_tone(ls / f"train-clean-100/84/121123/84-121123-{utt}.flac", seconds)
    (ls / "train-clean-100/84/121123/84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS\n")
    write_tone(ls / "dev-clean/1272/128104/1272-128104-0000.flac", 1.0)
    (ls / "dev-clean/1272/128104/1272-128104.trans.txt").write_text("1272-128104-0000 MISTER QUILTER\n")
    assert main(["librispeech", str(ls), str(tmp_path / "ls")]) == 0
    utts = read_manifest(tmp_path / "ls" / "train-clean-100_cuts.jsonl.gz")
    assert sorted(u.meta["text"] for u in utts) == ["BUT IN LESS", "GO DO YOU HEAR"]
    assert {u.meta["speaker"] for u in utts} == {"84"} and all(u.audio.is_absolute() for u in utts)
    assert len(read_manifest(tmp_path / "ls" / "dev-clean_cuts.jsonl.gz")) == 1

    tts = tmp_path / "LibriTTS" / "train-clean-100" / "19" / "198"
    write_tone(tts / "19_198_000000_000000.wav", 0.9, sr=24000)
    (tts / "19_198_000000_000000.normalized.txt").write_text("Northanger Abbey.")
    (tts / "19_198_000000_000000.original.txt").write_text("NORTHANGER ABBEY.")
    (tts / "19_198.trans.tsv").write_text("19_198_000000_000000\tNORTHANGER ABBEY.\tNorthanger Abbey.\n")
    (tts / "19_198.book.tsv").write_text("19_198_000000_000000\tNORTHANGER ABBEY.\tNorthanger Abbey.\t0\t0\t21.5\n")
    (tmp_path / "LibriTTS" / "SPEAKERS.txt").write_text(";ID|SEX|SUBSET|MINUTES|NAME\n19|F|train-clean-100|1|A\n")
    assert main(["libritts", str(tmp_path / "LibriTTS"), str(tmp_path / "tts"), "--parts", "train-clean-100"]) == 0
    [utt] = read_manifest(tmp_path / "tts" / "train-clean-100_cuts.jsonl.gz")
    assert utt.meta["speaker"] == "19" and utt.meta["text"] and utt.duration == pytest.approx(0.9, abs=1e-3)


def test_convert_an_old_manifest(tmp_path: Path) -> None:
    """Old rows -> cuts: speaker, text, phones (as supervision alignments) and a pair's noisy twin survive."""
    write_tone(tmp_path / "old" / "a.wav", 0.5)
    write_tone(tmp_path / "old" / "a_noisy.wav", 0.5, freq=330.0)
    phones = [["_", 0.0, 0.1], ["h", 0.1, 0.25], ["@", 0.25, 0.5]]
    row = {"audio": "a.wav", "duration": 0.5, "speaker": "s1", "text": "ha", "phones": phones, "noisy": "a_noisy.wav"}
    (tmp_path / "old" / "train.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "old" / "train_cuts.jsonl.gz"
    assert main(["convert", str(tmp_path / "old" / "train.jsonl"), str(out)]) == 0
    assert audio_path(rows_of(out)[0]) == "a.wav"  # under the manifest's folder: relative
    [utt] = read_manifest(out)
    assert utt.meta["speaker"] == "s1" and utt.meta["text"] == "ha"
    np.testing.assert_allclose([p[1:] for p in utt.meta["phones"]], [p[1:] for p in phones], atol=1e-9)
    assert Path(utt.cut.noisy.sources[0].source) == tmp_path / "old" / "a_noisy.wav"


def test_cli(librispeech: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli" / "ls.jsonl.gz"
    assert main(["tree", str(librispeech), str(out)]) == 0
    assert len(read_manifest(out)) == 3
    vbd = tmp_path / "vbd"
    make_voicebank(vbd)
    assert main(["voicebank", str(vbd), str(tmp_path / "vb")]) == 0
    assert (tmp_path / "vb" / "train_cuts.jsonl.gz").is_file() and (tmp_path / "vb" / "test_cuts.jsonl.gz").is_file()
    mix = tmp_path / "mix"
    assert main(["librimix", str(make_librimix(mix)), str(tmp_path / "mix.jsonl.gz"), "--root", str(mix)]) == 0
    assert len(read_manifest(tmp_path / "mix.jsonl.gz")) == 2
    capsys.readouterr()
    assert main(["tree", str(tmp_path / "nope"), str(tmp_path / "x.jsonl.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err
    assert not (tmp_path / "x.jsonl.gz").exists()
    assert main(["librispeech", str(tmp_path / "nope"), str(tmp_path / "y")]) == 2


def test_combine_shuffles_corpora_into_one_manifest_with_unique_ids(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two corpora that reuse ids (as two builds of the synthetic corpus do) and relative paths -> one manifest:
    every cut once, ids prefixed by their folder, absolute paths that still find the audio, the order mixed and
    fixed by the seed."""
    for name, freq in (("corpus", 220.0), ("rich", 330.0)):
        rows = []
        for k in range(6):
            write_tone(tmp_path / name / "wavs" / f"{k}.wav", 0.5, freq=freq)
            rows.append({"audio": f"wavs/{k}.wav", "duration": 0.5, "speaker": f"s{k % 2}", "text": "ha"})
        (tmp_path / name / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert main(["convert", str(tmp_path / name / "train.jsonl"), str(tmp_path / name / "cuts.jsonl.gz")]) == 0
    inputs = [str(tmp_path / name / "cuts.jsonl.gz") for name in ("corpus", "rich")]
    assert {r["id"] for r in rows_of(Path(inputs[0]))} == {r["id"] for r in rows_of(Path(inputs[1]))}  # collide
    out = tmp_path / "both" / "train_cuts.jsonl.gz"
    capsys.readouterr()
    assert main(["combine", str(out), *inputs, "--seed", "3"]) == 0
    assert "wrote 12 cuts" in capsys.readouterr().out
    rows = rows_of(out)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 12 and sum(i.startswith("corpus-") for i in ids) == 6
    assert {i.split("-")[0] for i in ids[:6]} == {"corpus", "rich"}  # not one corpus after the other
    for r in rows:
        path = Path(audio_path(r))
        assert path.is_absolute() and path.parent.parent.name == r["id"].split("-")[0] and path.is_file()
    again = tmp_path / "again.jsonl.gz"
    assert main(["combine", str(again), *inputs, "--seed", "3"]) == 0 and [r["id"] for r in rows_of(again)] == ids
    assert main(["combine", str(again), *inputs, "--seed", "4"]) == 0 and [r["id"] for r in rows_of(again)] != ids
    assert len(read_manifest(out)) == 12  # the training reader takes it as it is
    capsys.readouterr()
    assert main(["combine", str(tmp_path / "x.jsonl.gz"), inputs[0]]) == 2
    assert "two or more" in capsys.readouterr().err
    assert main(["combine", str(tmp_path / "x.jsonl.gz"), inputs[0], str(tmp_path / "rich")]) == 2
    assert "Shar" in capsys.readouterr().err and not (tmp_path / "x.jsonl.gz").exists()
