import json
import warnings

import numpy as np
import pytest
import torch

from model.errors import AudioError, CheckpointError, ConfigError
from model.pipeline import SpeechFlowPipeline
from tests.conftest import speechlike


@pytest.fixture
def pipe(debug_model, tmp_path) -> SpeechFlowPipeline:
    debug_model.save_pretrained(tmp_path / "bundle" / "pretrained")
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps({"tasks": ["pretrain"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Griffin-Lim fallback announces itself
        return SpeechFlowPipeline.from_pretrained(tmp_path / "bundle", device="cpu")


def test_infill_regenerates_only_the_spans(pipe):
    wav = speechlike(2.0, seed=3)
    out, sr = pipe.infill(wav, 16000, [(0.5, 1.0)], steps=4, seed=1)
    assert sr == 16000 and out.shape == wav.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[: int(0.49 * sr)], wav[: int(0.49 * sr)])
    np.testing.assert_array_equal(out[int(1.01 * sr) :], wav[int(1.01 * sr) :])
    assert not np.allclose(out[int(0.6 * sr) : int(0.9 * sr)], wav[int(0.6 * sr) : int(0.9 * sr)])
    assert "griffin-lim" in pipe.vocoder_name


def test_infill_keeps_the_callers_rate_and_batch_matches_single(pipe):
    from model.infilling import InfillRequest

    wav44 = speechlike(1.5, seed=4, sr=44100)
    out, sr = pipe.infill(wav44, 44100, [(0.2, 0.6)], steps=2, seed=7)
    assert sr == 44100 and len(out) == len(wav44)
    # outside the regenerated frames the samples are the input's own, at its own rate
    np.testing.assert_array_equal(out[: int(0.19 * sr)], wav44[: int(0.19 * sr)])
    np.testing.assert_array_equal(out[int(0.61 * sr) :], wav44[int(0.61 * sr) :])
    batch = pipe.infill_batch([InfillRequest(speechlike(1.0, seed=5), 16000, [(0.1, 0.3)]),
                               InfillRequest(wav44, 44100, [(0.2, 0.6)])], steps=2, seed=[0, 7])
    # equal up to float noise of batched matmuls (an untrained model gives huge, chaotic-phase outputs)
    assert np.abs(batch[1][0] - out).max() <= 1e-4 * np.abs(out).max()


@pytest.mark.parametrize("spans", [[], [(1.0, 0.5)], [(-1.0, 0.5)], [(5.0, 6.0)]])
def test_infill_rejects_bad_spans(pipe, spans):
    with pytest.raises(ConfigError):
        pipe.infill(speechlike(1.0, seed=0), 16000, spans, steps=2)


def test_infill_rejects_bad_audio_and_missing_tasks(pipe):
    with pytest.raises(AudioError):
        pipe.infill(np.array([np.nan] * 16000, dtype=np.float32), 16000, [(0.1, 0.2)])
    with pytest.raises(ConfigError, match="no 'enhance' model"):
        pipe.model("enhance")


def test_loading_a_model_directory_or_failing_clearly(debug_model, tmp_path):
    debug_model.save_pretrained(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert SpeechFlowPipeline.from_pretrained(tmp_path / "run", device="cpu").tasks == ["pretrain"]
    with pytest.raises(CheckpointError, match="neither a bundle"):
        SpeechFlowPipeline.from_pretrained(tmp_path / "empty")


@pytest.mark.parametrize("sr", [8000, 16000, 48000])
def test_enhance_and_separate_return_the_input_rate_and_length(task_pipe, sr):
    wav = speechlike(1.3, seed=2, sr=sr)
    out, out_sr = task_pipe.enhance(wav, sr, steps=2)
    assert out_sr == sr and out.shape == wav.shape and np.isfinite(out).all()
    sep, sep_sr = task_pipe.separate(wav, sr, steps=2)
    assert sep_sr == sr and sep.shape == (2, len(wav)) and np.isfinite(sep).all()
    # the mask reconstruction splits the mixture: the two outputs add back up to it
    if sr == 16000:
        np.testing.assert_allclose(sep.sum(0), wav, atol=1e-3)


def test_separation_in_windows_alone_equals_in_a_batch(task_pipe):
    """On a separation model whose velocities are not all zero (the fixture's output layer), so that the network's
    padding and the stitching of windows (speaker order kept across them) are what is compared."""
    model = task_pipe.model("separate")
    dtype = next(model.net.parameters()).dtype  # bf16 where the CPU runs it fast (dtype auto)
    x = torch.randn(1, 30, 160, generator=torch.Generator().manual_seed(0)).to(dtype)
    cond = torch.randn(1, 30, 80, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        assert model.net(x, torch.full((1,), 0.5), cond, torch.ones(1, 30, dtype=torch.bool)).abs().mean() > 1e-3
    long, short = speechlike(7.0, seed=3), speechlike(1.5, seed=4)
    alone = task_pipe.separate(long, 16000, steps=2, seed=5, window_s=3.0)[0]
    batch = task_pipe.separate_batch([(short, 16000), (long, 16000)], steps=2, seed=[0, 5], window_s=3.0)
    np.testing.assert_allclose(batch[1][0], alone, atol=1e-4)
    assert np.abs(alone[0] - alone[1]).mean() > 1e-3  # two different speakers, not one signal twice


def test_long_input_in_windows_equals_batch_and_vocoder_path(task_pipe):
    long = speechlike(9.0, seed=3)
    short = speechlike(2.0, seed=4)
    alone = task_pipe.enhance(long, 16000, steps=2, seed=5, window_s=3.0)[0]
    batch = task_pipe.enhance_batch([(short, 16000), (long, 16000)], steps=2, seed=[0, 5], window_s=3.0)
    np.testing.assert_allclose(batch[1][0], alone, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        voc, _ = task_pipe.enhance(short, 16000, steps=2, reconstruction="vocoder")
    assert voc.shape == short.shape
    with pytest.raises(ConfigError, match="reconstruction"):
        task_pipe.enhance(short, 16000, reconstruction="magic")
