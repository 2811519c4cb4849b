"""The real-speech corpus from the Asterisk prompt packages: transcripts read and cleaned, non-speech left out,
G.722 decoded by FFmpeg (PyAV), the corpus written as FLAC + CutSets with the held-out speaker only in test (every
language), and `speechflow manifest asterisk`. On a tree made here (G.722 encoded by FFmpeg from speech-like
audio), and on the installed English package (`make system-deps` installs it)."""

import gzip
from pathlib import Path

import av
import numpy as np
import pytest
from lhotse import CutSet

from model.errors import AudioError
from speechflow.cli import main as cli_main
from tests.conftest import speechlike
from training.data import asterisk, real_corpus
from training.data.asterisk import Package

EN = Package("asterisk-core-sounds-en-g722", "en_US_f_Allison", "g722", "allison-smith", "female", "en-US",
             "asterisk-core-sounds-en")
ES = Package("asterisk-core-sounds-es-g722", "es_MX_f_Allison", "g722", "allison-smith", "female", "es-MX")
FR = Package("asterisk-core-sounds-fr-g722", "fr_CA_f_June", "g722", "june-wallack", "female", "fr-CA",
             "asterisk-core-sounds-fr")
IT8K = Package("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "wav", "menardi", "female", "it-IT")


def write_g722(path: Path, wav: np.ndarray) -> None:
    """16 kHz float32 -> a raw G.722 file, as the packages ship them (64 kbit/s, no container)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="g722") as container:
        stream = container.add_stream("g722", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.clip(wav, -1, 1) * 32767).astype(np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """sounds/ with English, Spanish and French G.722 prompts and an 8 kHz WAV package, doc/ with transcripts."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("asterisk")
    sounds, doc = root / "sounds", root / "doc"
    prompts = {EN: ["auth-thankyou", "digits/5", "beep", "silence/1", "tiny", "vm-nobox"],
               ES: ["hola", "adios"], FR: ["bonjour", "merci", "au-revoir", "oui", "non", "salut"]}
    for k, (package, names) in enumerate(prompts.items()):
        for j, name in enumerate(names):
            seconds = 0.3 if name == "tiny" else 1.2 + 0.1 * j
            write_g722(sounds / package.folder / f"{name}.g722", speechlike(seconds, seed=10 * k + j))
    for j, name in enumerate(["ciao", "grazie"]):
        path = sounds / IT8K.folder / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speechlike(1.5, seed=50 + j, sr=8000), 8000, subtype="PCM_16")
    (doc / "asterisk-core-sounds-en").mkdir(parents=True)
    with gzip.open(doc / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz", "wt", encoding="utf-8") as f:
        f.write("; English prompts\nauth-thankyou: Thank you.\ndigits/5: five\nbeep: [a beep]\n"
                "silence/1: (1 second of silence)\ntiny: a\n")  # vm-nobox has no line: kept without text
    (doc / "asterisk-core-sounds-fr").mkdir(parents=True)
    (doc / "asterisk-core-sounds-fr" / "core-sounds-fr.txt.gz").write_bytes(gzip.compress(
        "\ufeffbonjour: Bonjour (emphase).\nmerci: merci: Merci [beaucoup]\noui: Oui [!]\n".encode()))
    moh = root / "moh"
    write_g722(moh / "track-a.g722", speechlike(3.0, seed=90))
    write_g722(moh / "reno_project-system.g722", speechlike(2.0, seed=91))
    return root


def listing(tree):
    return asterisk.list_utterances((EN, ES, FR, IT8K), tree / "sounds", (tree / "doc",))


def test_transcripts_are_cleaned_of_notes_symbols_and_non_speech():
    assert asterisk.clean_transcript("[ascending tones]") == (False, None)
    assert asterisk.clean_transcript("(1 second of silence)") == (False, None)
    assert asterisk.clean_transcript("<beep ascending>") == (False, None)
    assert asterisk.clean_transcript("at [@]") == (True, "at")
    assert asterisk.clean_transcript('IAX (note: does not say "2")') == (True, "IAX")
    assert asterisk.clean_transcript("Spiacente, [quello] non è valido.") == (True, None)  # maybe spoken: no text
    assert asterisk.lookup({"digits/1f": "una"}, "digits/1F") == "una"


def test_listing_keeps_speech_with_its_speaker_language_and_transcript(tree):
    utts = {(u.speaker, u.language, u.prompt): u for u in listing(tree)}
    en = {p: u for (s, lang, p), u in utts.items() if lang == "en-US"}
    assert set(en) == {"auth-thankyou", "digits/5", "vm-nobox"}  # beep, silence and the 0.3 s prompt left out
    assert en["auth-thankyou"].transcript == "Thank you." and en["digits/5"].transcript == "five"
    assert en["vm-nobox"].transcript is None
    fr = {p: u.transcript for (s, lang, p), u in utts.items() if lang == "fr-CA"}
    assert fr["bonjour"] == "Bonjour."  # the translator's note dropped
    assert fr["merci"] is None and fr["oui"] == "Oui" and fr["salut"] is None  # a repeated id, "[beaucoup]", none
    assert {u.speaker for u in utts.values()} == {"allison-smith", "june-wallack", "menardi"}
    assert len({u.id for u in utts.values()}) == len(utts)
    assert all("/" not in u.id for u in utts.values())


def test_g722_decodes_to_the_audio_that_was_encoded(tree):
    path = tree / "sounds" / EN.folder / "auth-thankyou.g722"
    wav, sr = asterisk.decode(path, "g722")
    assert sr == 16000 and wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 2 * path.stat().st_size  # 64 kbit/s: two samples a byte
    assert asterisk.file_duration(path, "g722") == pytest.approx(len(wav) / 16000)
    original = speechlike(1.2, seed=0)
    lag = int(np.argmax(np.correlate(wav[:4000], original[:2000], "valid")))  # the codec's delay
    n = len(original) - lag
    assert np.corrcoef(wav[lag:lag + n], original[:n])[0, 1] > 0.95  # a codec, not a rewrite
    with pytest.raises(AudioError, match=r"missing\.g722"):
        asterisk.decode(tree / "missing.g722", "g722")


def test_the_corpus_holds_the_test_speaker_out_in_every_language(tree, tmp_path):
    counts = real_corpus.write_corpus(tmp_path / "real", listing(tree), moh_dir=tree / "moh")
    test = CutSet.from_file(tmp_path / "real" / "test_cuts.jsonl.gz")
    train = CutSet.from_file(tmp_path / "real" / "train_cuts.jsonl.gz")
    valid = CutSet.from_file(tmp_path / "real" / "valid_cuts.jsonl.gz") or []  # 3 % of 10 prompts: maybe none
    assert {c.supervisions[0].speaker for c in test} == {"allison-smith"}
    assert {c.supervisions[0].language for c in test} == {"en-US", "es-MX"}
    assert "allison-smith" not in {c.supervisions[0].speaker for c in [*train, *valid]}
    assert counts == {"train": len(train), "valid": len(valid), "test": len(test)} and counts["test"] == 5
    cut = next(c for c in train if c.supervisions[0].speaker == "menardi")
    assert not Path(cut.recording.sources[0].source).is_absolute()  # the corpus can be moved whole
    audio = cut.with_recording_path_prefix(str(tmp_path / "real")).load_audio()
    assert cut.sampling_rate == 16000 and audio.shape == (1, cut.num_samples)
    assert cut.num_samples == pytest.approx(1.5 * 16000, abs=2)  # 8 kHz resampled to 16 kHz
    assert cut.supervisions[0].custom["bandwidth_hz"] == 4000 and cut.supervisions[0].custom["codec"] == "wav"
    assert sorted(p.name for p in (tmp_path / "real" / "music").rglob("*.flac")) == [
        "reno_project-system.flac", "track-a.flac"]
    assert (tmp_path / "real" / "music" / "test" / "reno_project-system.flac").is_file()
    again = real_corpus.write_corpus(tmp_path / "real", listing(tree), moh_dir=None)  # resumed: same cuts
    assert again == counts


def test_manifest_asterisk_command(tree, tmp_path, capsys):
    rc = cli_main(["manifest", "asterisk", str(tmp_path / "out"), "--sounds", str(tree / "sounds"),
                   "--doc", str(tree / "doc"), "--moh", str(tree / "moh")])
    assert rc == 0 and "test_cuts.jsonl.gz" in capsys.readouterr().out
    assert CutSet.from_file(tmp_path / "out" / "train_cuts.jsonl.gz")
    rc = cli_main(["manifest", "asterisk", str(tmp_path / "none"), "--sounds", str(tmp_path / "empty")])
    assert rc == 2 and "asterisk-core-sounds" in capsys.readouterr().err


INSTALLED = asterisk.SOUNDS_DIR / EN.folder


@pytest.mark.skipif(not INSTALLED.is_dir(), reason="needs asterisk-core-sounds-en-g722 (make system-deps)")
def test_the_installed_english_package():
    utts = asterisk.list_utterances((EN,))
    assert 500 < len(utts) < 600 and all(u.speaker == "allison-smith" for u in utts)
    thanks = next(u for u in utts if u.prompt == "auth-thankyou")
    assert thanks.transcript == "Thank you."
    wav = asterisk.load(thanks.path, "g722")
    assert 0.02 < float(np.sqrt(np.mean(wav**2))) < 0.5


def test_real_tts_cases_clone_the_held_out_speaker_in_english(tmp_path):
    from training.evaluation.real_cases import real_tts_cases

    sounds, doc = tmp_path / "sounds", tmp_path / "doc" / "asterisk-core-sounds-en"
    lines = []
    for k in range(4):
        write_g722(sounds / EN.folder / f"sentence-{k}.g722", speechlike(3.5 + 0.5 * k, seed=k))
        lines.append(f"sentence-{k}: Sentence number {k} is spoken here.")
    write_g722(sounds / ES.folder / "frase.g722", speechlike(4.0, seed=9))  # her Spanish: never an English target
    for k in range(6):
        write_g722(sounds / FR.folder / f"phrase-{k}.g722", speechlike(4.0, seed=20 + k))
    doc.mkdir(parents=True)
    with gzip.open(doc / "core-sounds-en.txt.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    fr_doc = tmp_path / "doc" / "asterisk-core-sounds-fr"
    fr_doc.mkdir()
    with gzip.open(fr_doc / "core-sounds-fr.txt.gz", "wt") as f:
        f.write("".join(f"phrase-{k}: Phrase {k}.\n" for k in range(6)))
    utts = asterisk.list_utterances((EN, ES, FR), sounds, (tmp_path / "doc",))
    real_corpus.write_corpus(tmp_path / "real", utts, valid_fraction=1.0, moh_dir=None)  # June: all valid

    cases = real_tts_cases(tmp_path / "real" / "test_cuts.jsonl.gz", n=3)
    assert len(cases) == 3
    for case in cases:
        assert case.info["speaker"] == "allison-smith" and case.text.startswith("Sentence number")
        assert case.prompt_text.startswith("Sentence number") and case.prompt_text != case.text
        assert 3.0 <= case.info["prompt_s"] <= 6.0
        assert case.info["other_speaker"] == "june-wallack"  # a real talker of the valid split


def test_band_limited_cuts_are_no_enhancement_or_separation_targets(tree, tmp_path):
    from training.data.loading import wideband

    real_corpus.write_corpus(tmp_path / "real", listing(tree), moh_dir=None)
    cuts = [*CutSet.from_file(tmp_path / "real" / "train_cuts.jsonl.gz"),
            *(CutSet.from_file(tmp_path / "real" / "test_cuts.jsonl.gz"))]
    kept = {c.supervisions[0].speaker for c in cuts if wideband()(c)}
    dropped = {c.supervisions[0].speaker for c in cuts if not wideband()(c)}
    assert dropped == {"menardi"} and kept == {"allison-smith", "june-wallack"}  # 8 kHz WAV vs G.722
    synthetic = next(iter(CutSet.from_file(tmp_path / "real" / "train_cuts.jsonl.gz"))).drop_supervisions()
    assert wideband()(synthetic)  # a cut that says nothing of its bandwidth is kept


def test_band_limited_cuts_are_no_vocoder_targets(tree, tmp_path, monkeypatch):
    """A vocoder that hears 8 kHz sources learns to leave the high band empty: its loader keeps what the enhancement
    and separation targets keep."""
    import training.trainers.vocoder as vocoder_training

    real_corpus.write_corpus(tmp_path / "real", listing(tree), moh_dir=None)
    seen = {}

    def capture(data, dataset, sampling, num_workers=0, keep=None):
        seen["keep"] = keep
        raise KeyboardInterrupt  # the filter is all this test needs

    monkeypatch.setattr(vocoder_training, "loader_factory", capture)
    with pytest.raises(KeyboardInterrupt):
        vocoder_training.train_vocoder(tmp_path / "real" / "train_cuts.jsonl.gz", tmp_path / "run")
    cuts = list(CutSet.from_file(tmp_path / "real" / "train_cuts.jsonl.gz"))
    assert {c.supervisions[0].speaker for c in cuts if seen["keep"](c)} == {"june-wallack"}
    assert {c.supervisions[0].speaker for c in cuts} == {"june-wallack", "menardi"}


def test_speed_copies_are_new_speakers_with_their_pitch_moved_and_bandwidth_scaled(tree, tmp_path, capsys):
    from training.data.loading import wideband
    from training.data.manifest import open_cuts

    real_corpus.write_corpus(tmp_path / "real", listing(tree), moh_dir=None)
    source, out = tmp_path / "real" / "train_cuts.jsonl.gz", tmp_path / "real-sp" / "train_cuts.jsonl.gz"
    assert cli_main(["manifest", "speed", str(source), str(out), "--factors", "0.9", "1.2"]) == 0
    originals = {c.id: c for c in open_cuts(source)}  # relative paths resolved
    copies = list(CutSet.from_file(out))
    assert len(copies) == 2 * len(originals) and f"wrote {len(copies)} cuts" in capsys.readouterr().out
    speakers = {c.supervisions[0].speaker for c in copies}
    assert speakers == {f"{s}-sp{f}" for s in ("june-wallack", "menardi") for f in ("0.9", "1.2")}
    for copy in copies:
        factor = 0.9 if copy.supervisions[0].speaker.endswith("0.9") else 1.2
        original = originals[copy.id.rsplit("_sp", 1)[0]]
        assert copy.duration == pytest.approx(original.duration / factor, abs=1e-3)
        audio = copy.load_audio()[0]  # made on the fly from the original file, relative paths resolved
        assert abs(len(audio) - round(original.duration * 16000 / factor)) <= 2
        band = copy.supervisions[0].custom["bandwidth_hz"]
        assert band == pytest.approx(min(8000.0, original.supervisions[0].custom["bandwidth_hz"] * factor))
    # G.722 (7 kHz) copies stay targets at 0.9x (6.3 kHz) and 1.2x; the 8 kHz package's stay out at any factor.
    assert {c.supervisions[0].speaker for c in copies if wideband()(c)} == {"june-wallack-sp0.9", "june-wallack-sp1.2"}
    # Resampled, not time-stretched: the copy is the original read 1.2x faster, so pitch and formants move with it.
    cut = next(c for c in copies if c.supervisions[0].speaker == "june-wallack-sp1.2")
    original, copy = originals[cut.id.rsplit("_sp", 1)[0]].load_audio()[0], cut.load_audio()[0]
    faster = np.interp(np.arange(len(copy)) * 1.2, np.arange(len(original)), original)
    assert np.corrcoef(faster[:-50], copy[:-50])[0, 1] > 0.9
    assert cli_main(["manifest", "speed", str(source), str(out), "--factors", "1.0"]) == 2  # a copy of itself: no
