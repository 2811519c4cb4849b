"""The service on a real (debug-size, random-weight) bundle: loading, warm-up, batching into the pipeline, and
results identical to the offline pipeline's."""

import asyncio
import io
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.inprocess import serving
from model.audio import encode_audio
from model.bundle import write_bundle
from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel
from model.pipeline import SpeechFlowPipeline
from service.app import create_app
from service.settings import Settings
from tests.conftest import speechlike


@pytest.fixture
def bundle(debug_model, tmp_path):
    debug_model.save_pretrained(tmp_path / "pre")
    separate = SpeechFlowModel(ModelConfig(task="separate", network=preset("debug", x_dim=160)))
    torch.nn.init.normal_(separate.net.out_proj.weight, std=0.1)  # a zero output layer would make every velocity 0
    separate.save_pretrained(tmp_path / "sep")
    return write_bundle(tmp_path / "b", {"pretrain": tmp_path / "pre", "enhance": tmp_path / "pre",
                                         "separate": tmp_path / "sep"})


def offline(bundle, task: str, data: bytes, seed: int) -> np.ndarray:
    """What the offline pipeline makes of the same upload (decoded the same way), as the response would carry it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = SpeechFlowPipeline.from_pretrained(bundle, device="cpu")
    wav, sr = sf.read(io.BytesIO(data), dtype="float32")
    out, _ = getattr(pipe, task)(wav, sr, steps=2, solver="euler", seed=seed)
    return sf.read(io.BytesIO(encode_audio(out, sr, "wav")), dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("processing", ["engine", "worker"])
def test_a_debug_bundle_served_end_to_end(bundle, processing):
    uploads = [encode_audio(speechlike(s, seed=i, sr=sr), sr, "wav")
               for i, (s, sr) in enumerate([(1.2, 8000), (0.7, 16000), (1.0, 22050)])]
    settings = Settings(bundle=str(bundle), device="cpu", max_batch_size=3, max_wait_ms=60_000, processing=processing)
    app = create_app(settings)  # loads the bundle itself

    async def main():
        async with serving(app) as client:
            await app.state.runtime.wait_ready()  # warm-up ran every served task
            models = (await client.get("/v1/models")).json()
            assert {m["id"]: m["endpoint"] for m in models["data"]} == {
                "pretrain": "/v1/audio/infill", "enhance": "/v1/enhance", "separate": "/v1/separate"}
            assert models["engine"]["device"] == "cpu"
            form = {"steps": "2", "solver": "euler"}
            # three at once fill a batch (max_batch_size=3), so it runs at once despite the long max_wait
            sep = await asyncio.gather(*(client.post("/v1/separate", files={"file": ("x.wav", d, "audio/wav")},
                                                     data={**form, "seed": str(i)}) for i, d in enumerate(uploads)))
            enh = await asyncio.gather(*(client.post("/v1/enhance", files={"file": ("x.wav", d, "audio/wav")},
                                                     data={**form, "seed": str(i)}) for i, d in enumerate(uploads)))
            return sep, enh

    separated, enhanced = asyncio.run(main())
    for task, responses, channels in [("separate", separated, 2), ("enhance", enhanced, 1)]:
        assert [r.headers["x-batch-size"] for r in responses] == ["3.0"] * 3
        for i, (r, data) in enumerate(zip(responses, uploads, strict=True)):
            assert r.status_code == 200, r.text
            audio, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
            source = sf.info(io.BytesIO(data))
            assert sr == source.samplerate and audio.shape == (source.frames, channels)
            # batched in the server == alone offline (same seed), up to 16-bit rounding and batched-matmul noise
            np.testing.assert_allclose(audio, offline(bundle, task, data, seed=i), atol=2e-3)
    stages = {s.labels["stage"] for m in app.state.runtime.metrics.registry.collect()
              if m.name == "speechflow_inference_seconds" for s in m.samples}
    assert stages == {"prepare", "step", "postprocess"}


def test_bench_compares_the_server_with_the_pipeline_alone(bundle):
    import httpx

    from bench.config import BenchConfig
    from bench.run import run_bench

    app = create_app(Settings(bundle=str(bundle), device="cpu", max_wait_ms=1))
    cfg = BenchConfig(url="http://127.0.0.1", task="enhance", concurrency=2, requests=4, audio_seconds=0.5,
                      steps=2, solver="euler", baseline=str(bundle), baseline_device="cpu", baseline_repeats=1)

    async def main():
        async with serving(app):
            await app.state.runtime.wait_ready()
            return await run_bench(cfg, transport=httpx.ASGITransport(app=app))

    report = asyncio.run(main())
    assert report["ok"] == 4 and report["integrity"]["ok"]
    base = report["baseline"]
    assert set(base["by_batch_size"]) == {"1", "2"} and base["device"] == "cpu"
    assert base["best_audio_seconds_per_s"] == max(r["audio_seconds_per_s"] for r in base["by_batch_size"].values())
    # both sides ran the same sampling settings: the request's, spelled out (guidance: the task's default)
    assert (report["config"]["steps"], report["config"]["solver"], report["config"]["guidance"]) == (2, "euler", 2.0)
    assert report["versus_baseline"]["throughput_share"] > 0
    assert "latency_overhead_ms" not in report["versus_baseline"]  # only meaningful at concurrency 1
