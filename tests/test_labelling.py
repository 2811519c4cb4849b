"""Phone labels for manifest rows without alignments, by the prompt aligner (`training/data/labelling.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from model.aligner import AlignerConfig, PromptAligner
from model.duration import expand_durations
from model.text import PhoneVocab, text_to_phones
from tests.conftest import speechlike, write_aligned_corpus
from training.data.alignments import durations_from_phones, phones_to_frames
from training.data.labelling import SOURCE, SOURCE_KEY, frames_to_phone_times, label_manifest
from training.data.manifest import read_manifest, rows_with_phones

VOCAB = PhoneVocab.default()


def test_phone_times_give_back_the_frames_they_came_from() -> None:
    symbols = ["_", "h", "@", "l", "oU", "_"]
    frames = np.array([3, 7, 1, 12, 30, 2])
    times = frames_to_phone_times(symbols, frames)
    assert [t[0] for t in times] == symbols and times[0][1] == 0 and times[-1][2] == frames.sum() / 100
    assert durations_from_phones(times)[1].tolist() == frames.tolist()
    ids = VOCAB.encode(symbols)
    assert phones_to_frames(times, int(frames.sum()), VOCAB).tolist() == expand_durations(ids, frames).tolist()


def test_rows_without_phones_get_the_frontends_phones_and_the_rest_is_kept(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    manifest = write_aligned_corpus(corpus, ["The cat sat on the mat.", "Rain fell on the quiet town."])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    exact = rows[0]["phones"]
    del rows[1]["phones"]  # a flite/festival-like row: text, no alignment
    sf.write(corpus / "short.wav", speechlike(0.05, seed=1), 16000)  # 5 frames cannot hold a sentence
    rows.append({"audio": "short.wav", "duration": 0.05, "text": "A sentence far too long for five frames."})
    rows.append({"audio": "u0.wav", "duration": rows[0]["duration"], "text": "  "})  # nothing to align
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    torch.manual_seed(0)
    out = tmp_path / "labels" / "train_cuts.jsonl.gz"  # another folder: audio paths must still resolve
    counts = label_manifest(manifest, PromptAligner(AlignerConfig(channels=16, dilations=(1,))), out, progress=False)
    assert counts == {"kept": 1, "aligned": 1, "failed": 2}
    labelled = read_manifest(out)
    assert all(u.audio.is_file() for u in labelled)
    kept = labelled[0].meta["phones"]
    assert [p[0] for p in kept] == [p[0] for p in exact]
    np.testing.assert_allclose([p[1:] for p in kept], [p[1:] for p in exact], atol=1e-9)
    assert SOURCE_KEY not in labelled[0].meta
    new = labelled[1].meta
    assert new[SOURCE_KEY] == SOURCE
    assert [p[0] for p in new["phones"]] == text_to_phones("Rain fell on the quiet town.")
    ends = [p[2] for p in new["phones"]]
    assert all(p[2] > p[1] for p in new["phones"]) and ends == sorted(ends)  # every phone >= 1 frame, in order
    assert abs(ends[-1] - labelled[1].duration) <= 0.01  # the whole utterance, to the frame
    assert len(rows_with_phones(labelled)) == 2  # the failed rows are kept, without phones


def test_a_transcript_in_another_language_is_aligned_as_the_nearest_english_phones() -> None:
    """French, Italian or Russian transcripts: espeak-ng's phones in that language, mapped onto the English
    vocabulary (kept, nearest, or bare of their marks; language switches dropped), then force-aligned."""
    import pytest

    from model.features import MelSpectrogram
    from training.data.foreign_phones import espeak_voice, foreign_phones, to_english
    from training.data.labelling import align_utterance

    assert to_english(["(en)", "A~", "t;", "ts", "r", "_"], VOCAB) == ["A:", "t", "t", "s", "r", "_"]
    assert [espeak_voice(t) for t in ("fr-CA", "it-IT", "ru-RU", "en-GB")] == ["fr", "it", "ru", "en-us"]
    with pytest.raises(ValueError, match="zh-CN"):
        espeak_voice("zh-CN")
    known = set(VOCAB.to_list())
    for text, language in (("Bonjour, comment allez-vous ?", "fr-CA"), ("Attivato il servizio.", "it-IT"),
                           ("Регистрация оператора удалена.", "ru-RU")):
        phones = foreign_phones(text, language)
        assert phones and set(phones) <= known and len([p for p in phones if p != "_"]) >= 8, (language, phones)
    assert "O:" in foreign_phones("Bonjour", "fr-CA")  # the nasal vowel of "bon", without its nasality

    torch.manual_seed(0)
    aligner = PromptAligner(AlignerConfig(channels=16, dilations=(1,)))
    mel = MelSpectrogram(aligner.config.mel)
    wav = speechlike(2.0, seed=3)
    times = align_utterance(aligner, mel, wav, "Регистрация оператора удалена.", "ru-RU")
    assert [p[0] for p in times] == foreign_phones("Регистрация оператора удалена.", "ru-RU")
    assert all(b > a for _, a, b in times) and abs(times[-1][2] - len(wav) / 16000) <= 0.01


def test_tts_crops_of_other_languages_keep_their_audio_and_drop_their_phones(tmp_path: Path) -> None:
    """`finetune --phone-languages en`: an Italian cut's mapped phones are not used (all PAD, the voice learnt from
    the audio context alone); English and unmarked cuts keep theirs; without the option every cut keeps them."""
    from training.data.manifest import open_cuts
    from training.tasks.tts import AlignedCropDataset

    manifest = write_aligned_corpus(tmp_path, ["The cat sat on the mat.", "Rain fell on the quiet town."])
    english, italian = list(open_cuts(manifest))
    italian.supervisions[0].language = "it-IT"
    english.supervisions[0].language = "en-US"
    only_english = AlignedCropDataset(3.0, VOCAB, phone_languages=("en",))
    every = AlignedCropDataset(3.0, VOCAB)
    for cut in (english, italian):
        labelled = every.item(cut, seed=0)
        assert (labelled["phones"] > 0).mean() > 0.9
        chosen = only_english.item(cut, seed=0)
        np.testing.assert_array_equal(chosen["wav"], labelled["wav"])
        expected = labelled["phones"] if cut is english else np.zeros_like(labelled["phones"])
        np.testing.assert_array_equal(chosen["phones"], expected)
