"""What only a CUDA machine can show (scripts/gpu-check.sh runs this file there); skipped without CUDA."""

import numpy as np
import pytest
import torch

from model.examples import noisy_example
from model.pipeline import SpeechFlowPipeline
from tests.test_shipped_bundle import BUNDLE
from training.evaluation.metrics import si_sdr

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_bundle_enhances_on_cuda_in_bf16_like_on_the_cpu_in_fp32():
    noisy, clean = noisy_example(snr_db=5.0)
    cpu = SpeechFlowPipeline.from_pretrained(BUNDLE, device="cpu", dtype="fp32")
    gpu = SpeechFlowPipeline.from_pretrained(BUNDLE, device="cuda", dtype="auto")
    assert gpu.dtype_name in ("bf16", "fp16")
    out_cpu, _ = cpu.enhance(noisy, 16000, seed=0)
    out_gpu, _ = gpu.enhance(noisy, 16000, seed=0)
    assert si_sdr(out_gpu, out_cpu) > 20  # the same enhancement, up to precision
    assert si_sdr(out_gpu, clean) > si_sdr(noisy, clean)


def test_tts_runs_on_cuda():
    gpu = SpeechFlowPipeline.from_pretrained(BUNDLE, device="cuda")
    audio, sr = gpu.tts("A short sentence on the graphics card.", voice=next(iter(gpu.voices)), seed=0)
    assert sr == 16000 and np.isfinite(audio).all() and len(audio) > sr and np.abs(audio).max() > 0.01


def test_a_missing_cuda_index_is_a_clear_error():
    from model.devices import resolve_device
    from model.errors import ConfigError

    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
