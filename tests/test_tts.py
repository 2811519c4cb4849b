"""TTS at debug size: fine-tuning on phone-aligned rows, bundling with a duration model and voices, synthesis."""


import numpy as np
import pytest
import soundfile as sf

from model.errors import AudioError, ConfigError
from model.modeling import SpeechFlowModel
from model.pipeline import SpeechFlowPipeline, join_with_crossfade
from model.text import TextError
from tests.conftest import TTS_SENTENCES, write_aligned_corpus, write_tts_bundle

SENTENCES = TTS_SENTENCES


@pytest.fixture(scope="module")
def aligned_corpus(tmp_path_factory):
    return write_aligned_corpus(tmp_path_factory.mktemp("aligned"), SENTENCES)


@pytest.fixture(scope="module")
def tts_bundle(aligned_corpus, tmp_path_factory):
    return write_tts_bundle(tmp_path_factory.mktemp("ttsb"), aligned_corpus, SENTENCES[0], steps=3)


def test_tts_model_carries_its_phone_vocabulary(tts_bundle):
    model = SpeechFlowModel.from_pretrained(tts_bundle / "tts")
    assert model.config.task == "tts" and model.config.network.n_phones == len(model.config.phones) > 40
    assert model.config.extra["init"]["fresh"] == ["phone_embed.weight"]


def test_synthesis_with_a_voice_and_with_a_prompt(tts_bundle, aligned_corpus):
    pipe = SpeechFlowPipeline.from_pretrained(tts_bundle, device="cpu")
    assert list(pipe.voices) == ["anna"]
    out, sr = pipe.tts("Good morning.", voice="anna", steps=2, seed=1)
    assert sr == 16000 and out.dtype == np.float32 and len(out) > 0.1 * sr and np.isfinite(out).all()
    assert np.array_equal(out, pipe.tts("Good morning.", voice="anna", steps=2, seed=1)[0])  # seeded
    prompt, _ = sf.read(aligned_corpus.parent / "u1.wav", dtype="float32")
    out2, _ = pipe.tts("Good morning.", prompt_wav=prompt, prompt_sr=16000, prompt_text=SENTENCES[1], steps=2)
    assert len(out2) > 0.1 * sr
    # slower speech is longer (the duration model's prediction, scaled)
    slow, _ = pipe.tts("Good morning to you all.", voice="anna", steps=2, speed=0.5)
    fast, _ = pipe.tts("Good morning to you all.", voice="anna", steps=2, speed=2.0)
    assert len(slow) > 2 * len(fast)


def test_long_text_is_split_into_chunks_and_joined(tts_bundle):
    pipe = SpeechFlowPipeline.from_pretrained(tts_bundle, device="cpu")
    one, _ = pipe.tts("The sun rose over the hills.", voice="anna", steps=2)
    many, _ = pipe.tts(" ".join(["The sun rose over the hills."] * 8), voice="anna", steps=2)
    assert len(many) > 5 * len(one)


def test_tts_bad_input_gives_clear_errors(tts_bundle):
    pipe = SpeechFlowPipeline.from_pretrained(tts_bundle, device="cpu")
    with pytest.raises(ConfigError, match="unknown voice"):
        pipe.tts("Hi.", voice="nobody")
    with pytest.raises(ConfigError, match="prompt_text"):
        pipe.tts("Hi.", prompt_wav=np.zeros(16000, np.float32), prompt_sr=16000)
    with pytest.raises(AudioError, match="prompt"):
        pipe.tts("Hi.", prompt_wav=np.zeros(1600, np.float32), prompt_sr=16000, prompt_text="hi")
    with pytest.raises(TextError):
        pipe.tts("   ", voice="anna")
    with pytest.warns(UserWarning):
        out, _ = pipe.tts("Hello 🙂 world", voice="anna", steps=2)
    assert len(out) > 0


def test_join_with_crossfade():
    a, b = np.ones(100, np.float32), np.zeros(100, np.float32)
    out = join_with_crossfade([a, b], 10)
    assert len(out) == 190 and out[0] == 1 and out[-1] == 0 and 0 < out[94] < 1


def test_each_model_reads_phones_with_its_own_vocabulary(monkeypatch):
    """A duration model trained on data with one more symbol (ids shifted) still gets the right phones."""
    import torch

    from model.duration import DurationConfig, DurationModel
    from model.text import PhoneVocab, text_to_phones
    from model.tts import align_prompt, plan_chunks

    tts_vocab = PhoneVocab.default()
    shifted = PhoneVocab([*tts_vocab.symbols[:2], "x!", *tts_vocab.symbols[2:]])  # every id moves up by one
    durations = DurationModel(DurationConfig(vocab=shifted.to_list(), dim=16, depth=1, heads=2, ffn_dim=32))
    seen = []  # the phone symbols behind every id sequence the duration network was given
    real_predict_log = durations.predict_log

    def predict_log(ids, *args, **kwargs):
        seen.append([shifted.symbols[i] for i in ids[0].tolist()])
        return real_predict_log(ids, *args, **kwargs)

    monkeypatch.setattr(durations, "predict_log", predict_log)
    with pytest.warns(UserWarning):  # an untrained model is far off the prompt's length
        prompt = align_prompt("Hello there.", torch.zeros(120, 80), tts_vocab, durations)
    assert seen[0] == text_to_phones("Hello there.")  # the prompt path
    assert prompt.durations.sum() == 120
    [chunk] = plan_chunks("Good morning.", tts_vocab, durations, prompt)
    assert seen[1] == text_to_phones("Hello there.") + text_to_phones("Good morning.")  # the new text's path
    # the TTS model's frame labels use its own ids
    assert [tts_vocab.symbols[i] for i in chunk.ids] == text_to_phones("Good morning.")
