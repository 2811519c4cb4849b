"""The README's main job, end to end: the real service on the shipped bundle, one request per task it serves.

The answers must be audio of the right shape that is neither silence nor noise: enhancement must bring the output
closer to the clean speech than its input was, separation must split a two-talker mixture into two different
signals (its quality is measured by `speechflow evaluate`, not here), and TTS must put speech-like energy over the
whole length of what it says (not silence, not noise, a length that fits the text).
"""

import asyncio
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.inprocess import serving
from model.examples import mixture_example, noisy_example
from service.app import create_app
from service.settings import Settings
from training.evaluation.metrics import si_sdr

BUNDLE = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"


def _wav_bytes(wav: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_the_shipped_bundle_answers_every_task_it_serves():
    noisy, clean = noisy_example(snr_db=5.0)
    mixture, _ = mixture_example()
    sr, n = 16000, len(mixture)

    async def main():
        async with serving(create_app(Settings(bundle=str(BUNDLE), device="cpu", max_wait_ms=0))) as client:
            for _ in range(1200):  # the bundle loads and warms up in the background: wait for readiness (<= 120 s)
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
            tasks = {m["task"] for m in (await client.get("/v1/models")).json()["data"] if m["endpoint"]}
            assert "enhance" in tasks
            for quality in ("", "fast", "full"):  # the bundle's default is its one-step student
                response = await client.post("/v1/enhance", files={"file": ("noisy.wav", _wav_bytes(noisy))},
                                             data={"seed": "0", **({"quality": quality} if quality else {})})
                assert response.status_code == 200, response.text
                assert response.headers["x-quality"] == (quality or "fast")
                assert response.headers["x-steps"] == ("4" if quality == "full" else "1")
                enhanced, out_sr = sf.read(io.BytesIO(response.content), dtype="float32")
                assert out_sr == sr and enhanced.shape == noisy.shape
                assert si_sdr(enhanced, clean) > si_sdr(noisy, clean) + 3.0, quality
            if "separate" in tasks:
                response = await client.post("/v1/separate", files={"file": ("mix.wav", _wav_bytes(mixture))},
                                             data={"seed": "0"})  # a fixed draw: the bound holds for it
                assert response.status_code == 200, response.text
                assert response.headers["x-quality"] == "fast" and response.headers["x-steps"] == "1"  # the student
                two, _ = sf.read(io.BytesIO(response.content), dtype="float32")
                assert two.shape == (n, 2)
                # The demo separator is weakly trained (SI-SDRi 4.8 dB mean in its evaluation, see bundle.json), so
                # this checks what it guarantees: the mask split adds back up to the mixture, and the two outputs
                # are two different, non-silent signals rather than copies of the input.
                np.testing.assert_allclose(two.sum(1), mixture, atol=2e-3)
                assert all(np.sqrt(np.mean(two[:, k] ** 2)) > 0.05 * np.sqrt(np.mean(mixture**2)) for k in (0, 1))
                assert abs(np.corrcoef(two[:, 0], two[:, 1])[0, 1]) < 0.9

            assert tasks == {"pretrain", "enhance", "separate", "tts"}  # every task the README's curl examples use
            if "tts" in tasks:
                voice = (await client.get("/v1/voices")).json()["voices"][0]["id"]
                response = await client.post("/v1/tts", data={"text": TTS_TEXT, "voice": voice, "seed": "0"})
                assert response.status_code == 200, response.text
                speech, out_sr = sf.read(io.BytesIO(response.content), dtype="float32")
                assert out_sr == 16000
                check_speech_like(speech, out_sr, words=len(TTS_TEXT.split()))

    asyncio.run(main())


TTS_TEXT = "The little boat drifted slowly across the quiet lake."


def check_speech_like(wav: np.ndarray, sr: int, words: int) -> None:
    """Speech energy where the text is: a length that fits the words, most 50 ms frames within 20 dB of the loudest
    (not a short burst in silence), and a spectrum far from flat (harmonics and formants, not noise)."""
    seconds = len(wav) / sr
    assert 0.15 * words < seconds < 0.8 * words, f"{seconds:.2f} s for {words} words"
    hop = sr // 20
    frames = wav[: len(wav) // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    assert rms.max() > 1e-3
    assert np.mean(rms > 0.1 * rms.max()) > 0.5
    power = np.abs(np.fft.rfft(frames * np.hanning(hop), axis=1)) ** 2 + 1e-12
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    loud = rms > 0.1 * rms.max()
    assert np.median(flatness[loud]) < 0.3
