"""/v1/audio/speech as OpenAI's own client uses it: the official `openai` package (sync and async clients,
``with_streaming_response``) against a real server (uvicorn on a free loopback port, in a thread): every format is
one valid 24 kHz file whether read whole or streamed, pcm is OpenAI's raw 24 kHz 16-bit, audio starts before
generation ends, /v1/models lists OpenAI's model names, and the input limit is OpenAI's. The fake engine speaks
a 220 Hz tone of 0.05 s per character, one chunk per sentence; the last test runs the shipped bundle.

aac is checked without trusting the encoder's own library alone: the ADTS framing is parsed here (sync words,
AAC-LC, 24 kHz, mono, frames that tile the file, a frame count that fits the duration), PyAV decodes it, and where
Debian's ``faad`` (FAAD2, a decoder that shares no code with FFmpeg) is installed it decodes it too and must give
back the waveform that the pcm answer carries."""

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from bench.fake_engine import FAKE_SECONDS_PER_CHAR, FakeEngine
from model.audio import encode_audio, resample
from service.openai_names import OPENAI_MAX_INPUT_CHARS, OPENAI_SPEECH_MODELS
from tests.page_harness import running_server

RATE = 24_000
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")  # OpenAI's six
SERVED = (*FORMATS, "ogg")
SENTENCES = ("One sentence.", "Another sentence here.", "And the third one.")
THREE = " ".join(SENTENCES)
SECONDS = FAKE_SECONDS_PER_CHAR * sum(map(len, SENTENCES))  # what the fake says for THREE
QUICK = {"steps": 2, "solver": "euler", "seed": 7}  # SpeechFlow's own fields, through the client's extra_body
LONG = "The quick brown fox jumps over the lazy dog while the farmer watches it from his porch. "  # 89 chars
EXACT = ("pcm", "wav", "flac")  # lossless: exactly the samples; the codecs add delay and padding (< 0.1 s here)
ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


# --- decoding, by a library other than the one that encoded where there is one ------------------------------------
def adts_frames(data: bytes) -> int:
    """The number of 1024-sample AAC frames in an ADTS stream, checking that every frame header is AAC-LC, 24 kHz,
    mono, and that the frames tile the data exactly (what a player that reads frame by frame relies on)."""
    pos = frames = 0
    while pos < len(data):
        h = data[pos : pos + 7]
        assert len(h) == 7 and h[0] == 0xFF and h[1] & 0xF6 == 0xF0, f"no ADTS sync word at byte {pos}"
        assert h[2] >> 6 == 1, "not AAC-LC"  # the profile field is the object type - 1
        assert ADTS_RATES[(h[2] >> 2) & 0xF] == RATE
        assert ((h[2] & 1) << 2 | h[3] >> 6) == 1, "not mono"
        length = (h[3] & 3) << 11 | h[4] << 3 | h[5] >> 5
        assert length > 7
        frames += (h[6] & 3) + 1  # raw data blocks in this frame
        pos += length
    assert pos == len(data), "the last frame runs past the end"
    return frames


def decode_aac(data: bytes) -> tuple[np.ndarray, int]:
    """PyAV's decoder, after the ADTS structure check; the frame count must fit the decoded length."""
    import av

    frames = adts_frames(data)
    with av.open(io.BytesIO(data)) as container:
        audio = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    assert len(audio) == 1024 * frames
    return audio.astype(np.float32), rate


def faad_decode(data: bytes) -> np.ndarray:
    """FAAD2's decoding at 24 kHz. faad takes AAC-LC at 24 kHz or less for possible HE-AAC and answers at twice the
    rate, the same signal upsampled (and as stereo, its parametric-stereo guess): back to 24 kHz mono."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = f"{tmp}/speech.aac", f"{tmp}/speech.wav"
        with open(src, "wb") as f:
            f.write(data)
        subprocess.run(["faad", "-q", "-b", "4", "-o", out, src], check=True, capture_output=True, timeout=30)
        audio, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate in (RATE, 2 * RATE)
    return resample(audio[:, 0], rate, RATE)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Any answer -> (float samples, rate). pcm is OpenAI's: 16-bit little-endian at 24 kHz, no header."""
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, RATE
    if fmt == "aac":
        return decode_aac(data)
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")  # libsndfile: wav, flac, ogg, mp3, opus
    return audio, rate


def check_file(data: bytes, fmt: str, seconds: float = SECONDS) -> np.ndarray:
    """One valid 24 kHz mono file of ``seconds`` (lossless: to the sample)."""
    audio, rate = decode(data, fmt)
    assert rate == RATE and audio.ndim == 1, (fmt, rate, audio.shape)
    if fmt in EXACT:
        assert len(audio) == round(seconds * RATE), (fmt, len(audio))
    else:  # the codecs' delay and padding add a little; none loses more than rounding to its frames
        assert -0.01 * RATE < len(audio) - seconds * RATE < 0.1 * RATE, (fmt, len(audio))
    return audio


def aligned_snr(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 4096) -> float:
    """dB of ``reference`` over the difference, at the lag (a codec's delay) where they match best."""
    n = len(reference)
    lags = range(max_lag)
    best = max(lags, key=lambda lag: float(np.dot(decoded[lag : lag + n], reference[: len(decoded[lag : lag + n])])))
    part = decoded[best : best + n]
    ref = reference[: len(part)]
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((part - ref) ** 2), 1e-20)))


# --- the fake engine behind a real socket ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def url():
    with running_server(FakeEngine(tasks=("tts",))) as base:
        yield base


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_every_format_read_whole_by_the_sync_client_is_one_valid_24khz_file(url):
    speech = client(url).audio.speech
    answers = {fmt: speech.create(model="tts-1", voice="alloy", input=THREE, response_format=fmt, extra_body=QUICK)
               for fmt in SERVED}
    decoded = {fmt: check_file(answer.content, fmt) for fmt, answer in answers.items()}
    assert answers["wav"].response.headers["x-sample-rate"] == "24000"
    assert answers["pcm"].response.headers["content-type"] == "audio/L16;rate=24000;channels=1"
    assert answers["aac"].response.headers["content-type"] == "audio/aac"
    # pcm: OpenAI's raw 24 kHz 16-bit, seconds x 24000 x 2 bytes; the lossless files hold the same samples
    assert len(answers["pcm"].content) == round(SECONDS * RATE) * 2
    assert np.array_equal(decoded["pcm"], decoded["wav"]) and np.array_equal(decoded["pcm"], decoded["flac"])
    reference = decoded["pcm"]
    for fmt in ("mp3", "opus", "ogg", "aac"):  # the lossy codecs carry the same tone
        assert aligned_snr(decoded[fmt], reference) > 20, fmt  # measured: 26 dB (mp3) to 39 dB (ogg)
    default = speech.create(model="gpt-4o-mini-tts", voice="alloy", input=THREE, extra_body=QUICK)
    assert default.response.headers["content-type"] == "audio/mpeg"  # OpenAI's default format
    assert default.content == answers["mp3"].content  # the same request, the same bytes


# CI installs faad (the Makefile's apt packages): there a missing decoder fails the test instead of skipping it
@pytest.mark.skipif(shutil.which("faad") is None and not os.environ.get("CI"),
                    reason="needs Debian's faad (FAAD2) as an independent decoder")
def test_aac_decodes_with_faad_to_the_pcm_answers_waveform(url):
    speech = client(url).audio.speech
    aac = speech.create(model="tts-1", voice="alloy", input=THREE, response_format="aac", extra_body=QUICK).content
    pcm = speech.create(model="tts-1", voice="alloy", input=THREE, response_format="pcm", extra_body=QUICK).content
    reference = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    decoded = faad_decode(aac)
    assert abs(len(decoded) - len(reference)) < 2048 + 1024  # priming and the last frame's padding
    assert aligned_snr(decoded, reference) > 20  # measured: 30 dB, as PyAV's decoding of the same file


def test_pcm_is_24khz_raw_16bit_and_v1_tts_keeps_the_models_16khz(url):
    one = "Hello there."  # one sentence: all of it is there with the first chunk, so it comes as one file
    speech = client(url).audio.speech
    raw = speech.with_raw_response.create(model="tts", voice="alloy", input=one, response_format="pcm")
    assert len(raw.content) == round(FAKE_SECONDS_PER_CHAR * len(one) * RATE) * 2
    assert raw.headers["x-sample-rate"] == "24000" and raw.headers["content-length"] == str(len(raw.content))
    assert raw.headers["x-rows"] == "1" and "x-inference-time-ms" in raw.headers  # a whole file's headers
    native = httpx.post(f"{url}/v1/tts", data={"text": one, "voice": "alice", "response_format": "pcm"}, timeout=30)
    assert native.headers["x-sample-rate"] == "16000"
    assert len(native.content) == round(FAKE_SECONDS_PER_CHAR * len(one) * 16000) * 2
    # the 24 kHz answer is the 16 kHz speech resampled (to 16-bit rounding of the 16 kHz copy)
    upsampled = resample(np.frombuffer(native.content, "<i2").astype(np.float32) / 32768, 16000, RATE)
    assert np.abs(upsampled - np.frombuffer(raw.content, "<i2") / 32768).max() < 1e-3


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_async_client_streams_each_format_as_one_file(url, fmt):
    async def main() -> tuple[bytes, bytes, dict]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as aclient:
            async with aclient.audio.speech.with_streaming_response.create(
                    model="tts-1-hd", voice="nova", input=THREE, response_format=fmt, extra_body=QUICK) as r:
                pieces = [piece async for piece in r.iter_bytes()]
                headers = dict(r.headers)
            whole = await aclient.audio.speech.create(model="tts-1-hd", voice="nova", input=THREE,
                                                      response_format=fmt, extra_body=QUICK)
            return b"".join(pieces), whole.content, headers

    streamed, whole, headers = asyncio.run(main())
    audio = check_file(streamed, fmt)
    if fmt == "opus":  # an Ogg stream's serial number is random: the same file but for those bytes
        assert np.array_equal(audio, decode(whole, fmt)[0])
    else:
        assert streamed == whole  # read piece by piece or at once: the same file
    # three sentences: sent as they are generated (chunked), except flac, which is sent whole at the end
    assert ("content-length" in headers) == (fmt == "flac")


def test_sse_through_the_client_carries_the_same_audio(url):
    with client(url).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=THREE, response_format="pcm", stream_format="sse",
            extra_body=QUICK) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [json.loads(block[len("data: "):]) for block in text.split("\n\n") if block.startswith("data: ")]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"} and events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(audio) == round(SECONDS * RATE) * 2
    assert events[-1]["usage"]["audio_seconds"] == pytest.approx(SECONDS, abs=1e-3)


def test_models_lists_openais_names_with_created_and_owner(url):
    models = {m.id: m for m in client(url).models.list()}
    assert set(models) == {"tts", *OPENAI_SPEECH_MODELS}
    for model in models.values():
        assert model.object == "model" and model.owned_by == "speechflow" and model.created > 1_600_000_000
    raw = httpx.get(f"{url}/v1/models").json()["data"]
    assert {m["id"]: (m["alias_of"], m["endpoint"]) for m in raw}["tts-1"] == ("tts", "/v1/audio/speech")
    assert client(url).models.retrieve("tts-1-hd") == models["tts-1-hd"]
    with pytest.raises(openai.NotFoundError, match=r"no model 'whisper-1': this server has tts, tts-1"):
        client(url).models.retrieve("whisper-1")


def test_an_uploaded_voice_and_instructions_through_the_client(tmp_path):
    with running_server(FakeEngine(tasks=("tts",)), data_dir=str(tmp_path)) as base:
        sample = encode_audio((0.2 * np.sin(np.arange(32000) / 9)).astype(np.float32), 16000, "wav")
        uploaded = httpx.post(f"{base}/v1/audio/voices", data={"name": "Me", "consent": "true", "transcript": "hi"},
                              files={"audio_sample": ("me.wav", sample, "audio/wav")}).json()["id"]
        speech = client(base).audio.speech
        for fmt in ("wav", "aac"):
            spoken = speech.create(model="tts-1", voice={"id": uploaded}, input="Hi.", response_format=fmt)
            check_file(spoken.content, fmt, seconds=FAKE_SECONDS_PER_CHAR * 3)
        cheerful = speech.with_raw_response.create(model="gpt-4o-mini-tts", voice={"id": "alice"}, input="Hi.",
                                                   response_format="opus", instructions="Speak cheerfully.")
    assert cheerful.headers["x-instructions"] == "ignored" and cheerful.content[:4] == b"OggS"


def test_errors_surface_as_the_clients_exception_types(url):
    speech = client(url).audio.speech
    with pytest.raises(openai.UnprocessableEntityError, match="aac"):  # the 422 lists what is served
        speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="webm")  # type: ignore[arg-type]
    with pytest.raises(openai.UnprocessableEntityError, match="unknown voice"):
        speech.create(model="tts-1", voice="nobody", input="Hi.")
    with pytest.raises(openai.NotFoundError):
        speech.create(model="whisper-1", voice="alloy", input="Hi.")


def test_input_takes_openais_4096_characters_and_names_the_limit_above(url):
    speech = client(url).audio.speech
    longest = (LONG * 50)[:OPENAI_MAX_INPUT_CHARS]  # 47 sentences: rows and frames within the cost bounds
    answer = speech.create(model="tts-1", voice="alloy", input=longest, response_format="pcm", extra_body=QUICK)
    assert len(answer.content) > 0
    with pytest.raises(openai.APIStatusError) as refused:
        speech.create(model="tts-1", voice="alloy", input=longest + "x")
    assert refused.value.status_code == 413 and "4096" in str(refused.value)
    assert refused.value.body["code"] == "text_too_long" and refused.value.body["param"] == "input"


def test_a_server_that_sets_max_text_chars_bounds_both_endpoints():
    with running_server(FakeEngine(tasks=("tts",)), max_text_chars=20) as base:
        with pytest.raises(openai.APIStatusError) as refused:
            client(base).audio.speech.create(model="tts-1", voice="alloy", input="x" * 21)
        native = httpx.post(f"{base}/v1/tts", data={"text": "x" * 21, "voice": "alice"}, timeout=30)
    assert refused.value.status_code == native.status_code == 413 and "limit is 20" in str(refused.value)


class CostlyEngine(FakeEngine):
    """A fake whose warm-up measured a slow machine: 10 ms per frame and network evaluation."""

    def warmup(self) -> float | None:
        super().warmup()
        return 0.01


def test_the_cost_bound_refuses_an_input_that_could_not_be_spoken_in_time():
    with running_server(CostlyEngine(tasks=("tts",))) as base:
        speech = client(base).audio.speech
        with pytest.raises(openai.APIStatusError) as refused:
            speech.create(model="tts-1", voice="alloy", input=LONG * 40)  # 3,560 characters: ~30 min of compute
        assert refused.value.status_code == 413 and refused.value.body["code"] == "request_too_costly"
        assert "timeout" in str(refused.value) and refused.value.body["param"] == "input"
        assert len(speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="pcm").content) > 0


# --- the shipped bundle ---------------------------------------------------------------------------------------------
def test_the_shipped_bundle_streams_24khz_speech_to_the_client(demo_engine):
    from tests.test_shipped_bundle import check_speech_like

    text = "The boat drifted on the lake. Birds sang."
    voice, same = sorted(demo_engine.voices)[0], {"seed": 3, "steps": 2}
    with running_server(demo_engine) as base:
        speech = client(base).audio.speech
        with speech.with_streaming_response.create(model="tts-1", voice=voice, input=text, response_format="pcm",
                                                   extra_body=same) as r:
            assert r.headers["x-sample-rate"] == "24000" and "content-length" not in r.headers  # two sentences
            pcm = b"".join(r.iter_bytes())
        aac = speech.create(model="tts-1", voice=voice, input=text, response_format="aac", extra_body=same)
    wav = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    check_speech_like(wav, RATE, len(text.split()))
    decoded, rate = decode_aac(aac.content)
    assert rate == RATE and abs(len(decoded) - len(wav)) < 3072
    # the same speech (same seed) through AAC at 64 kbit/s; measured 20-27 dB, by either decoder
    assert aligned_snr(decoded, wav) > 12
    if shutil.which("faad"):
        assert aligned_snr(faad_decode(aac.content), wav) > 12


def test_the_client_check_script_passes_against_the_shipped_bundle(demo_engine, tmp_path):
    """scripts/openai-client-check.py, which imports nothing but `openai` and the standard library, is what a user
    runs against `make serve`; here it runs against the shipped bundle served on a real socket."""
    with running_server(demo_engine) as base:
        done = subprocess.run([sys.executable, "scripts/openai-client-check.py", "--base-url", f"{base}/v1",
                               "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout
    played, rate = sf.read(tmp_path / "three-sentences-24k.wav")
    assert rate == RATE and len(played) > 3 * RATE
