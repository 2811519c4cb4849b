"""Shared fixtures: a debug-size model and a tiny generated corpus (no files from outside the test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel
from service.engine import PipelineEngine

torch.set_num_threads(1)  # tests are tiny: threads only fight for the two cores


@pytest.fixture
def debug_model() -> SpeechFlowModel:
    torch.manual_seed(0)
    model = SpeechFlowModel(ModelConfig(network=preset("debug")))
    # Non-zero output projection, so that tests about outputs are not trivially about zeros.
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.1)
    return model.eval()


@pytest.fixture
def task_pipe(debug_model, tmp_path):
    """A bundle of debug-preset models for pretrain / enhance / separate, the separator with a random output layer
    (so its speakers differ), loaded as a CPU `SpeechFlowPipeline`."""
    from model.bundle import write_bundle
    from model.pipeline import SpeechFlowPipeline

    debug_model.save_pretrained(tmp_path / "pre")
    sep = random_output_layer(SpeechFlowModel(ModelConfig(task="separate", network=preset("debug", x_dim=160))), 1)
    sep.save_pretrained(tmp_path / "sep")
    write_bundle(tmp_path / "b", {"pretrain": tmp_path / "pre", "enhance": tmp_path / "pre",
                                  "separate": tmp_path / "sep"})
    return SpeechFlowPipeline.from_pretrained(tmp_path / "b", device="cpu")


def random_output_layer(model: SpeechFlowModel, seed: int, std: float = 0.1) -> SpeechFlowModel:
    """A seeded non-zero output projection. The network zero-initialises it, so a fresh model's velocity is 0
    everywhere: samples never consult the network, and batching, windowing or speaker-order tests would pass
    whatever the code does."""
    with torch.no_grad():
        model.net.out_proj.weight.normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
    return model


def speechlike(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """A harmonic tone with a wandering pitch and syllable-rate envelope: cheap, deterministic "speech"."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    return (0.2 * wav * envelope + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def write_tiny_corpus(root: Path) -> Path:
    """Eight short files (1 to 2.75 s) and a manifest with relative paths."""
    rows = []
    for i in range(8):
        path = root / "wavs" / f"utt{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = speechlike(1.0 + 0.25 * i, seed=i)
        sf.write(path, wav, 16000)
        rows.append({"audio": f"wavs/utt{i}.wav", "duration": len(wav) / 16000})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path)


TTS_SENTENCES = ["The cat sat on the mat.", "Rain fell on the quiet town.", "She sells sea shells by the shore.",
                 "A big dog ran home."]
TTS_TRAIN = dict(lr=1e-3, warmup=2, batch_seconds=6.0, max_seconds=2.0, log_every=1, precision="fp32",
                 num_workers=0, device="cpu")


def write_aligned_corpus(root: Path, sentences: list[str]) -> Path:
    """espeak-ng sentences at 16 kHz (two voices) and a manifest with their exact phone alignments."""
    from model.audio import resample
    from model.espeak import synthesize

    rows = []
    for i, text in enumerate(sentences):
        result = synthesize(text, voice="en-us" if i % 2 else "en-gb")
        wav = resample(result.wav, result.sample_rate, 16000)
        sf.write(root / f"u{i}.wav", wav, 16000)
        rows.append({"audio": f"u{i}.wav", "duration": len(wav) / 16000, "speaker": f"s{i % 2}", "text": text,
                     "phones": [[p.symbol, p.start, p.end] for p in result.phones]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "train.jsonl"


def write_tts_bundle(root: Path, manifest: Path, voice_text: str, steps: int) -> Path:
    """A debug bundle with a TTS model, its duration model and one built-in voice "anna" (the manifest's u0.wav)."""
    from model.bundle import write_bundle, write_voices
    from training.trainers.duration import train_duration
    from training.trainers.finetune import finetune
    from training.trainers.trainer import TrainConfig

    SpeechFlowModel(ModelConfig(network=preset("debug"))).save_pretrained(root / "pre")
    tts = finetune("tts", root / "pre", manifest, root / "tts", TrainConfig(steps=steps, **TTS_TRAIN))
    dur = train_duration(manifest, root / "dur", None, TrainConfig(steps=steps, **TTS_TRAIN))
    write_bundle(root / "bundle", {"tts": tts, "duration": dur})
    wav, _ = sf.read(manifest.parent / "u0.wav", dtype="float32")
    write_voices(root / "bundle", {"anna": (wav, voice_text)})
    return root / "bundle"


DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"


class WarmEngine(PipelineEngine):
    """A `PipelineEngine` on a pipeline that is warm already: ``warmup`` returns the step cost measured when it was
    warmed instead of running every task again (about 2 s on two cores, for each app a test makes)."""

    def __init__(self, pipeline, cost: float | None) -> None:
        super().__init__(pipeline)
        self.cost = cost

    def warmup(self) -> float | None:
        return self.cost


@pytest.fixture(scope="session")
def demo_pipeline():
    """The shipped bundle (checkpoints/demo: trained tiny enhance, separate and TTS models, built-in voices, a
    prompt aligner and a trained Vocos vocoder) on the CPU, warmed up once: (pipeline, the step cost its warm-up
    measured). Tests about what the models make run on it: its outputs are speech, so a wrong path shows."""
    import warnings

    if not (DEMO_BUNDLE / "bundle.json").exists():
        pytest.skip("needs the shipped bundle checkpoints/demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PipelineEngine.load(DEMO_BUNDLE, device="cpu")
        cost = engine.warmup()
    return engine.pipeline, cost


@pytest.fixture
def demo_engine(demo_pipeline) -> WarmEngine:
    """An engine on the shipped bundle for an app to serve (``create_app(settings, demo_engine)``)."""
    return WarmEngine(*demo_pipeline)


# Two TTS answers that must be equal (a request in a shared live batch and the same request alone) differ by float
# rounding only: the network masks the padding, but a padded batch's matmuls and reductions run over other shapes,
# and the guided ODE steps and the neural vocoder amplify those last bits. On the shipped bundle, over seeds and
# join points: up to 7e-5 on waveforms peaking near 0.5 (1.5e-4 of the peak), plus one 16-bit step (3e-5) in an
# encoded answer. The bound, 2e-3 of the expected peak, is ten times that and 1/500 of the speech; a request that
# took another path (another seed, other sampling settings) differs at the speech's own scale (0.5-1 of the peak).
TTS_ROUNDING = 2e-3


def assert_same_speech(actual: np.ndarray, expected: np.ndarray) -> None:
    """``actual`` is ``expected`` up to float rounding (`TTS_ROUNDING` of its peak, sample by sample)."""
    np.testing.assert_allclose(actual, expected, atol=TTS_ROUNDING * float(np.abs(expected).max()), rtol=0)
