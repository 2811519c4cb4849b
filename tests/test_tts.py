"""TTS at debug size: fine-tuning on phone-aligned rows, bundling with a duration model and voices, synthesis."""

import json

import numpy as np
import pytest
import soundfile as sf

from model.bundle import write_bundle, write_voices
from model.errors import AudioError, ConfigError
from model.espeak import synthesize
from model.modeling import SpeechFlowModel
from model.pipeline import SpeechFlowPipeline, join_with_crossfade
from model.text import TextError
from training.duration import train_duration
from training.finetune import finetune
from training.trainer import TrainConfig

FAST = dict(lr=1e-3, warmup=2, batch_seconds=6.0, max_seconds=2.0, log_every=1, precision="fp32", num_workers=0,
            device="cpu")
SENTENCES = ["The cat sat on the mat.", "Rain fell on the quiet town.", "She sells sea shells by the shore.",
             "A big dog ran home."]


@pytest.fixture(scope="module")
def aligned_corpus(tmp_path_factory):
    """espeak-ng speech with its exact phone alignments, resampled to 16 kHz like the corpus."""
    from model.audio import resample

    root = tmp_path_factory.mktemp("aligned")
    rows = []
    for i, text in enumerate(SENTENCES):
        result = synthesize(text, voice="en-us" if i % 2 else "en-gb")
        wav = resample(result.wav, result.sample_rate, 16000)
        sf.write(root / f"u{i}.wav", wav, 16000)
        rows.append({"audio": f"u{i}.wav", "duration": len(wav) / 16000, "speaker": f"s{i % 2}", "text": text,
                     "phones": [[p.symbol, p.start, p.end] for p in result.phones]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "train.jsonl"


@pytest.fixture(scope="module")
def tts_bundle(aligned_corpus, tmp_path_factory):
    from model.config import ModelConfig, preset

    root = tmp_path_factory.mktemp("ttsb")
    SpeechFlowModel(ModelConfig(network=preset("debug"))).save_pretrained(root / "pre")
    tts = finetune("tts", root / "pre", aligned_corpus, root / "tts", TrainConfig(steps=3, **FAST))
    dur = train_duration(aligned_corpus, root / "dur", None, TrainConfig(steps=3, **FAST))
    write_bundle(root / "bundle", {"tts": tts, "duration": dur})
    wav, _ = sf.read(aligned_corpus.parent / "u0.wav", dtype="float32")
    write_voices(root / "bundle", {"anna": (wav, SENTENCES[0])})
    return root / "bundle"


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
