"""The demo page at /: served by the app (open even when API keys are set), self-contained, and working in a real
headless Chromium against a fake engine (Debian's chromium + chromium-driver, driven by selenium): enhancement and
separation with before/after spectrograms, voices recorded (Chromium's fake microphone) or uploaded, saved, spoken
in with streamed playback and deleted, and the API's errors shown next to the control they are about; and once
against the real models of the shipped bundle (checkpoints/demo on the CPU), every flow end to end."""

import asyncio
import base64
import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from bench.inprocess import serving
from model.audio import encode_audio
from service.app import STATIC_DIR, create_app
from service.settings import Settings
from tests.conftest import speechlike
from tests.page_harness import FETCH_DOWNLOAD, SPECTROGRAMS, drawn, headless_chromium, running_server, save_screenshot


def test_the_page_and_its_files_are_served_without_a_key_while_the_api_needs_one():
    async def main():
        app = create_app(Settings(api_keys="secret"), FakeEngine())
        async with serving(app) as client:
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            scripts = re.findall(r'<script src="/static/([\w.]+)"', page.text)
            assert scripts[-1] == "app.js" and {"spectrogram.js", "api.js"} <= set(scripts)
            assert 'href="/static/style.css"' in page.text
            for name, media_type in [*((s, "javascript") for s in scripts), ("style.css", "text/css")]:
                r = await client.get(f"/static/{name}")
                assert r.status_code == 200 and media_type in r.headers["content-type"], (name, r.text)
            missing = await client.get("/static/nothing.js")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
            assert (await client.get("/v1/models")).status_code == 401
            r = await client.get("/v1/models", headers={"Authorization": "Bearer secret"})
            assert r.status_code == 200

    asyncio.run(main())


def test_the_page_fetches_nothing_from_elsewhere():
    page = (STATIC_DIR / "index.html").read_text()
    assert 'src="/static/spectrogram.js"' in page
    for path in STATIC_DIR.iterdir():
        assert "://" not in path.read_text(), f"{path.name} refers to another site; the page must work offline"




@pytest.fixture
def live_server():
    """(base URL, engine) of a uvicorn server with a fake engine on a free loopback port, in a thread."""
    engine = FakeEngine()
    with running_server(engine) as url:
        yield url, engine


STEP_S = 0.05


@pytest.fixture
def tts_server(tmp_path):
    """(base URL, engine) with TTS too. Each step takes STEP_S and a live batch holds one row (one sentence), so the
    sentences of a request finish one after another, as a real model's do, and streaming has something to show."""
    engine = FakeEngine(tasks=("enhance", "separate", "tts"), step_cost=(STEP_S, 0.0))
    with running_server(engine, max_batch_size=1, data_dir=str(tmp_path / "data")) as url:
        yield url, engine


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path / "profile") as driver:
        yield driver


def test_enhance_and_separate_through_the_page_in_a_headless_browser(live_server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, engine = live_server
    noisy = speechlike(2.0, seed=3)
    (tmp_path / "noisy.wav").write_bytes(encode_audio(noisy, 16000, "wav"))
    wait = WebDriverWait(browser, 10)
    browser.get(url)
    wait.until(ready.text_to_be_present_in_element((By.ID, "server-info"), "Models: enhance, separate"))
    note = browser.find_element(By.ID, "tts-note").text
    assert "no TTS model" in note and not browser.find_element(By.ID, "tts-text").is_enabled()
    assert not browser.find_element(By.ID, "voice-save").is_enabled()

    browser.find_element(By.ID, "submit").click()  # nothing chosen yet: a readable message by the file, no request
    message = wait.until(ready.visibility_of_element_located((By.ID, "file-error")))
    assert "Choose an audio file" in message.text and engine.prepared == []

    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=enhance]").click()
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "noisy.wav"))
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    browser.find_element(By.ID, "steps").send_keys("1000")  # over the server's max_steps: its 422 names "steps"
    browser.find_element(By.ID, "submit").click()
    message = wait.until(ready.visibility_of_element_located((By.ID, "steps-error")))
    assert "Error 422 (invalid_parameter): steps must be at most" in message.text
    assert browser.find_element(By.ID, "steps").get_attribute("aria-invalid") == "true"
    assert not browser.find_elements(By.ID, "file-error")  # the old message went with the new attempt
    assert engine.prepared == []

    browser.find_element(By.ID, "steps").clear()
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "ensemble").send_keys("2")
    browser.find_element(By.ID, "submit").click()
    link = wait.until(ready.presence_of_element_located((By.ID, "task-download")))
    assert not browser.find_elements(By.ID, "steps-error")  # cleared by the new run

    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "enhanced.wav"
    assert not browser.find_element(By.ID, "task-error").is_displayed()
    timings = browser.find_element(By.CSS_SELECTOR, "#task-result .timings").text
    assert all(label in timings for label in ("Total time", "Queue wait", "Batch size\n1", "Seed\n7",
                                              "Draws averaged\n2")), timings
    downloaded = browser.execute_async_script(FETCH_DOWNLOAD, "task-download")
    result, rate = sf.read(io.BytesIO(base64.b64decode(downloaded)), dtype="float32")
    assert rate == 16000 and result.shape == noisy.shape and abs(result - noisy / 2).max() < 1e-3  # fake: x / 2
    assert [(task, len(wav), p.seed, p.sampling.ensemble) for task, wav, p in engine.prepared] == [
        ("enhance", len(noisy), 7, 2)]

    before, after = browser.execute_script(SPECTROGRAMS, "#task-result")
    assert before["label"] == "Input (before) (2.0 s)" and after["label"] == "Enhanced (after) (2.0 s)"
    assert drawn(before, 2.0) and drawn(after, 2.0), (before, after)
    # one loudness scale for both: the fake halves the input (-6 dB), so the output is drawn darker
    assert after["brightness"] < before["brightness"] - 5, (before, after)

    # clicking the middle of the picture seeks there (and plays on from there), with the playhead over it
    frame = browser.find_elements(By.CSS_SELECTOR, "#task-result .spectrogram-frame")[1]
    ActionChains(browser).move_to_element(frame).click().perform()
    seeked = browser.execute_script(SPECTROGRAMS, "#task-result")[1]
    assert 0.9 < seeked["time"] < 1.3 and 45 < seeked["playhead"] < 65, seeked
    wait.until(lambda b: browser.execute_script(SPECTROGRAMS, "#task-result")[1]["playhead"] > seeked["playhead"] + 5)
    save_screenshot(browser, "enhance")

    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=separate]").click()
    browser.find_element(By.ID, "submit").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "task-download"), "separated"))
    pictures = browser.execute_script(SPECTROGRAMS, "#task-result")
    assert [p["label"] for p in pictures] == ["Input (before) (2.0 s)", "Speaker 1 (2.0 s)", "Speaker 2 (2.0 s)"]
    assert all(drawn(p, 2.0) for p in pictures) and all(p["src"].startswith("blob:") for p in pictures)
    save_screenshot(browser, "separate")

    # raw pcm, which browsers cannot decode: read by the page itself, so it gets its picture and a player too
    Select(browser.find_element(By.ID, "format")).select_by_value("pcm")
    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=enhance]").click()
    browser.find_element(By.ID, "submit").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "task-download"), "enhanced.pcm"))
    before, after = browser.execute_script(SPECTROGRAMS, "#task-result")
    assert drawn(after, 2.0) and abs(after["duration"] - 2.0) < 0.01 and after["brightness"] < before["brightness"]


# Every text the streaming progress shows, in order (the stream can be over before a poll from here would see it).
WATCH_PROGRESS = """
window.progressSeen = [];
const text = document.getElementById("tts-progress-text");
new MutationObserver(() => window.progressSeen.push(text.textContent)).observe(text, {childList: true});
"""


def recording_seconds(status: str) -> float:
    """3.4 from "Recording… 3.4 s", the page's status while recording (0 before it starts)."""
    return float(status.split()[1]) if status.startswith("Recording…") else 0.0


def test_a_recorded_voice_is_saved_spoken_in_with_streaming_and_deleted(tts_server, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    url, engine = tts_server
    wait = WebDriverWait(browser, 15)
    browser.get(url)
    wait.until(ready.text_to_be_present_in_element((By.ID, "server-info"), "Models: enhance, separate, tts"))
    try:  # the voices are listed after the models: generous on a loaded CI machine, and saying why if never
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "tts-text").is_enabled()
                                         and b.find_element(By.ID, "voice-save").is_enabled())
    except TimeoutException:
        pytest.fail(f"TTS never enabled: {browser.find_element(By.ID, 'tts-note').text!r}")

    browser.find_element(By.ID, "tts-submit").click()  # no text: the server's 422 is shown by the text box
    message = wait.until(ready.visibility_of_element_located((By.ID, "tts-text-error")))
    assert "input is empty" in message.text

    record = browser.find_element(By.ID, "prompt-record")  # Chromium's fake microphone: a beeping tone
    record.click()
    wait.until(lambda b: recording_seconds(b.find_element(By.ID, "prompt-state").text) >= 3.5)
    record.click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "prompt-state"), "Recorded"))
    seconds = float(browser.find_element(By.ID, "prompt-state").text.split()[1])
    assert 3.4 < seconds < 5, seconds

    browser.find_element(By.ID, "voice-transcript").send_keys("Hello from the fake microphone.")
    browser.find_element(By.ID, "voice-name").clear()
    browser.find_element(By.ID, "voice-name").send_keys("Beeper")
    browser.find_element(By.ID, "voice-save").click()  # consent not ticked: the server's refusal, by the checkbox
    message = wait.until(ready.visibility_of_element_located((By.ID, "voice-consent-error")))
    assert "consent must be true" in message.text
    browser.find_element(By.ID, "voice-consent").click()
    browser.find_element(By.ID, "voice-save").click()
    item = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#voice-list li[data-voice]")))
    voice = item.get_attribute("data-voice")
    assert voice.startswith("voice_") and "Beeper" in item.text and "Hello from the fake microphone." in item.text
    assert not browser.find_elements(By.ID, "voice-consent-error")
    assert browser.find_element(By.ID, "tts-voice").get_attribute("value") == voice  # chosen for TTS

    text = "This is the first sentence. Here comes the second one. A third follows it. And this is the last."
    browser.find_element(By.ID, "tts-text").send_keys(text)
    browser.execute_script(WATCH_PROGRESS)
    browser.find_element(By.ID, "tts-submit").click()
    result = wait.until(lambda b: b.find_element(By.ID, "tts-error").text
                        or b.find_element(By.CSS_SELECTOR, "#tts-result[data-complete-ms]"))
    assert not isinstance(result, str), result
    first, complete = (float(result.get_attribute(f"data-{name}-ms")) for name in ("first-audio", "complete"))
    # four sentences made one after another: the first is playing while the other three are still being made (at
    # least their steps' sleep later, whatever the overheads of the server and the browser add to both times)
    progress = browser.execute_script("return window.progressSeen")
    later_steps = 3 / 4 * sum(step.task == "tts" for step in engine.steps)
    assert result.get_attribute("data-chunks") == "4", progress
    assert complete - first > 0.8 * later_steps * STEP_S * 1000, (first, complete, later_steps)
    assert progress[0] == "Generating the first sentence…", progress
    assert [line.split(" ·")[0] for line in progress[1:]] == [f"{n} of about 4 sentences" for n in range(1, 5)]
    assert result.get_attribute("data-audio-state") == "running"
    assert not browser.find_elements(By.ID, "tts-text-error") and not browser.find_element(By.ID, "tts-progress") \
        .is_displayed()
    spoken = engine.prepared[-1][1]
    assert spoken.text == text and spoken.prompt is not None and abs(len(spoken.prompt) / 16000 - seconds) < 0.1
    assert spoken.prompt_text == "Hello from the fake microphone."
    (picture,) = browser.execute_script(SPECTROGRAMS, "#tts-result")
    audio_seconds = len(text) * 0.05  # the fake speaks 20 characters a second
    assert abs(picture["duration"] - audio_seconds) < 0.3 and picture["colours"] > 20, picture
    fetched = browser.execute_async_script(FETCH_DOWNLOAD, "tts-download")
    assert not fetched.startswith("failed"), fetched
    downloaded = base64.b64decode(fetched)
    speech, rate = sf.read(io.BytesIO(downloaded), dtype="float32")
    assert rate == 24000 and np.abs(speech).max() > 0.05  # the fake's 220 Hz tone, all four sentences
    save_screenshot(browser, "voice")

    browser.find_element(By.ID, f"delete-{voice}").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "voice-list"), "None yet."))
    assert httpx.get(f"{url}/v1/audio/voices").json()["data"] == []
    assert [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#tts-voice option")] == ["alice"]


# What the page says for the other ways a browser refuses recording (no device, busy, an insecure page)
MICROPHONE_PROBLEMS = """
const said = Object.fromEntries(["NotFoundError", "NotReadableError"].map(
  (name) => [name, micProblem(new DOMException("", name))]));
Object.defineProperty(window, "isSecureContext", {get: () => false, configurable: true});
said.insecure = recordingUnavailable();
return said;
"""
REFUSE_MICROPHONE = """
navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


# The ids in the list of saved voices, read in one go (the list is re-rendered while it is being read from here)
VOICE_IDS = "return [...document.querySelectorAll('#voice-list li[data-voice]')].map((li) => li.dataset.voice);"


def test_an_uploaded_prompt_is_transcribed_by_the_server_and_corrected(tts_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from model import recognizer
    from model.espeak import synthesize

    if not recognizer.available():
        pytest.skip("needs pocketsphinx (speechflow[asr]) to transcribe the prompt")
    url, _ = tts_server
    spoken = synthesize("The weather is lovely today, so we will walk to the park after lunch.")
    (tmp_path / "prompt.wav").write_bytes(encode_audio(spoken.wav, spoken.sample_rate, "wav"))
    (tmp_path / "short.wav").write_bytes(encode_audio(speechlike(1.0, seed=1), 16000, "wav"))
    wait = WebDriverWait(browser, 20)
    browser.get(url)
    wait.until(lambda b: b.find_element(By.ID, "voice-save").is_enabled())

    browser.execute_script(REFUSE_MICROPHONE)  # as a browser does when the user said no
    browser.find_element(By.ID, "prompt-record").click()
    message = wait.until(ready.visibility_of_element_located((By.ID, "prompt-record-error")))
    assert "refused access to the microphone (permission denied" in message.text and "choose a file" in message.text
    said = browser.execute_script(MICROPHONE_PROBLEMS)
    assert "no microphone was found" in said["NotFoundError"] and "another program" in said["NotReadableError"]
    assert said["insecure"].startswith("Recording needs a secure page (https, or http on localhost)"), said

    browser.find_element(By.ID, "voice-consent").click()
    browser.find_element(By.ID, "prompt-file").send_keys(str(tmp_path / "short.wav"))
    browser.find_element(By.ID, "voice-save").click()  # 1 s: refused by the page, before any upload
    message = wait.until(ready.visibility_of_element_located((By.ID, "prompt-file-error")))
    assert "The prompt is 1.0 s long; use 3 to 10 s" in message.text
    save_screenshot(browser, "errors")

    browser.find_element(By.ID, "prompt-file").send_keys(str(tmp_path / "prompt.wav"))
    browser.find_element(By.ID, "voice-save").click()  # no transcript: the server transcribes it
    saved = wait.until(ready.visibility_of_element_located((By.ID, "voice-saved")))
    heard = browser.find_element(By.ID, "voice-transcript").get_attribute("value")
    assert heard and f"The server heard: “{heard}”" in saved.text and "save again" in saved.text
    # the page lists the saved voice once its list request returns, a moment after the message
    item = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#voice-list li[data-voice]")))
    assert "(transcribed by the server)" in item.text
    first = item.get_attribute("data-voice")

    correct = "The weather is lovely today, so we will walk to the park after lunch."
    browser.find_element(By.ID, "voice-transcript").clear()
    browser.find_element(By.ID, "voice-transcript").send_keys(correct)
    browser.find_element(By.ID, "voice-save").click()  # the corrected voice replaces the transcribed one
    wait.until(lambda b: b.execute_script(VOICE_IDS) not in ([], [first])
               and b.execute_script("return document.querySelectorAll('#voice-list li').length") == 1)
    (card,) = httpx.get(f"{url}/v1/audio/voices").json()["data"]
    assert card["transcript"] == correct and not card["transcribed"] and card["id"] != first
    save_screenshot(browser, "upload")


# The error messages shown in a section (in its error box or by its controls), joined: "" when there are none
ERRORS = """
return [...document.querySelectorAll(`${arguments[0]} .field-error:not(.note), ${arguments[0]} .error:not([hidden])`)]
  .map((element) => element.textContent).join(" | ");
"""
DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
PROMPT_TEXT = "The weather is lovely today, so we will walk to the park after lunch."


@pytest.fixture
def demo_server(tmp_path):
    """Base URL of a server on the shipped bundle (checkpoints/demo: enhance, separate and tts) on the CPU."""
    if not (DEMO_BUNDLE / "bundle.json").exists():
        pytest.skip("needs the shipped bundle checkpoints/demo")
    with running_server(None, ready_attempts=12000, bundle=str(DEMO_BUNDLE), device="cpu",
                        data_dir=str(tmp_path / "data")) as url:
        yield url


@pytest.mark.filterwarnings("ignore:using griffin-lim")  # the demo bundle has no trained vocoder
def test_every_flow_of_the_page_on_the_shipped_bundle(demo_server, browser, tmp_path):
    """The real models behind the page: enhancement and separation draw their before/after spectrograms, an uploaded
    espeak-ng prompt is saved as a voice (its transcript typed) and speech is streamed in it, chunk by chunk, then
    asked of the TTS student."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from model.espeak import synthesize

    url = demo_server
    rng = np.random.default_rng(0)
    prompt = synthesize(PROMPT_TEXT)  # about 4 s at espeak-ng's 22.05 kHz: the page resamples it to draw it
    rate, seconds = prompt.sample_rate, len(prompt.wav) / prompt.sample_rate
    noisy = prompt.wav + 0.05 * rng.standard_normal(len(prompt.wav)).astype(np.float32)
    other = synthesize("Two people are talking at the same time here, and one of them is a woman.", "en-us+f3")
    n = min(len(prompt.wav), len(other.wav))
    mixture = 0.5 * (prompt.wav[:n] + other.wav[:n])
    for name, wav in [("noisy.wav", noisy), ("mixture.wav", mixture), ("prompt.wav", prompt.wav)]:
        (tmp_path / name).write_bytes(encode_audio(wav, rate, "wav"))
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    wait.until(ready.text_to_be_present_in_element((By.ID, "server-info"), "device: cpu"))
    info = browser.find_element(By.ID, "server-info").text
    assert info.startswith("Models: pretrain, enhance, separate, tts ·"), info

    # enhancement: the real model's answer, at the input's rate and length, drawn beside the input
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "noisy.wav"))
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda b: b.execute_script(ERRORS, "#task-section") or b.find_elements(By.ID, "task-download"))
    assert not browser.execute_script(ERRORS, "#task-section")
    enhanced, got_rate = sf.read(io.BytesIO(base64.b64decode(browser.execute_async_script(FETCH_DOWNLOAD,
                                                                                         "task-download"))))
    assert got_rate == rate and len(enhanced) == len(noisy) and 0.01 < np.abs(enhanced).max() <= 1
    pauses = np.abs(prompt.wav) < 1e-4  # where espeak-ng is silent, the input is only noise (~5x less after it)
    assert enhanced[pauses].std() < 0.5 * noisy[pauses].std(), (enhanced[pauses].std(), noisy[pauses].std())
    before, after = browser.execute_script(SPECTROGRAMS, "#task-result")
    labels = [before["label"], after["label"]]
    assert labels == [f"Input (before) ({seconds:.1f} s)", f"Enhanced (after) ({seconds:.1f} s)"], labels
    assert all(abs(p["width"] - seconds * 100) < 2 and p["height"] == 80 and p["colours"] > 20 for p in (before,
                                                                                                        after))
    assert after["brightness"] < before["brightness"], (before, after)  # the noise taken out: darker on one scale
    save_screenshot(browser, "bundle-enhance")

    # separation: the input and two speakers
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "mixture.wav"))
    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=separate]").click()
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda b: b.execute_script(ERRORS, "#task-section")
               or "separated" in b.find_element(By.ID, "task-download").text)
    assert not browser.execute_script(ERRORS, "#task-section")
    pictures = browser.execute_script(SPECTROGRAMS, "#task-result")
    assert [p["label"].rsplit(" (", 1)[0] for p in pictures] == ["Input (before)", "Speaker 1", "Speaker 2"], pictures
    assert all(abs(p["width"] - n / rate * 100) < 2 and p["colours"] > 20 for p in pictures), pictures
    save_screenshot(browser, "bundle-separate")

    # a voice from an uploaded prompt, its transcript typed (so nothing hangs on how well it would be recognised)
    browser.find_element(By.ID, "prompt-file").send_keys(str(tmp_path / "prompt.wav"))
    wait.until(ready.text_to_be_present_in_element((By.ID, "prompt-state"), f"prompt.wav: {seconds:.1f} s"))
    browser.find_element(By.ID, "voice-transcript").send_keys(PROMPT_TEXT)
    browser.find_element(By.ID, "voice-name").clear()
    browser.find_element(By.ID, "voice-name").send_keys("Espeak")
    browser.find_element(By.ID, "voice-consent").click()
    browser.find_element(By.ID, "voice-save").click()
    wait.until(lambda b: b.execute_script(ERRORS, "#voice-section") or b.execute_script(VOICE_IDS))
    assert not browser.execute_script(ERRORS, "#voice-section")
    (voice,) = browser.execute_script(VOICE_IDS)
    assert browser.find_element(By.ID, "tts-voice").get_attribute("value") == voice
    (card,) = httpx.get(f"{url}/v1/audio/voices").json()["data"]
    assert card["transcript"] == PROMPT_TEXT and not card["transcribed"] and abs(card["seconds"] - seconds) < 0.05

    # speech in that voice, streamed: one chunk per sentence, played as it comes, then the whole as a WAV
    text = "Good morning to you. The park is just around the corner."
    browser.find_element(By.ID, "tts-text").send_keys(text)
    browser.execute_script(WATCH_PROGRESS)
    browser.find_element(By.ID, "tts-submit").click()
    result = wait.until(lambda b: b.execute_script(ERRORS, "#tts-section")
                        or b.find_element(By.CSS_SELECTOR, "#tts-result[data-complete-ms]"))
    assert not isinstance(result, str), result
    progress = browser.execute_script("return window.progressSeen")
    assert result.get_attribute("data-chunks") == "2", progress
    # the real pipeline cross-fades its chunks and sends the last fade (20 ms) as a third delta: played, not counted
    counted = list(dict.fromkeys(line.split(" ·")[0] for line in progress[1:]))
    assert counted == ["1 of about 2 sentences", "2 of about 2 sentences"], progress
    assert result.get_attribute("data-audio-state") == "running"
    speech, speech_rate = sf.read(io.BytesIO(base64.b64decode(browser.execute_async_script(FETCH_DOWNLOAD,
                                                                                          "tts-download"))))
    assert speech_rate == 24000 and 1.5 < len(speech) / speech_rate < 10 and np.abs(speech).max() > 0.01
    (picture,) = browser.execute_script(SPECTROGRAMS, "#tts-result")
    assert abs(picture["duration"] - len(speech) / speech_rate) < 0.05 and picture["colours"] > 20, picture
    assert abs(picture["width"] - len(speech) / speech_rate * 100) < 2, picture
    save_screenshot(browser, "bundle-voice")

    # the same text from the two-step student, asked for on the page and not streamed: the answer says how
    browser.find_element(By.ID, "tts-stream").click()
    Select(browser.find_element(By.ID, "tts-quality")).select_by_value("fast")
    browser.find_element(By.ID, "tts-submit").click()
    wait.until(lambda b: b.execute_script(ERRORS, "#tts-section")
               or "Quality\nfast" in b.find_element(By.CSS_SELECTOR, "#tts-result").text)
    assert not browser.execute_script(ERRORS, "#tts-section")
    timings = browser.find_element(By.CSS_SELECTOR, "#tts-result .timings").text
    assert "Quality\nfast" in timings and "Steps\n2" in timings, timings
