"""The demo page's editing panel in a headless Chromium against the shipped bundle's real TTS model: a recording is
loaded, a word of its transcript changed, and the answer (the recording with that word regenerated) is drawn beside
it; the server's refusals appear by the field they are about."""

import base64
import io

import numpy as np
import soundfile as sf

from tests.page_harness import FETCH_DOWNLOAD, SPECTROGRAMS, drawn, headless_chromium, running_server, save_screenshot
from tests.test_service_demo import ERRORS

VOICE = "espeak-en-029-Mike"


def test_a_word_of_a_recording_is_changed_through_the_page(demo_engine, demo_pipeline, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    pipe, _ = demo_pipeline
    voice = pipe.voices[VOICE]
    sf.write(tmp_path / "take.wav", voice.wav, 16000, subtype="PCM_16")
    take, _ = sf.read(tmp_path / "take.wav", dtype="float32")
    seconds = len(take) / 16000
    with running_server(demo_engine) as url, headless_chromium(tmp_path / "profile") as browser:
        wait = WebDriverWait(browser, 60)
        browser.get(url)
        wait.until(lambda b: b.find_element(By.ID, "edit-submit").is_enabled())

        browser.find_element(By.ID, "edit-submit").click()  # nothing loaded: the page says so by the file
        assert "Choose a recording" in wait.until(ready.visibility_of_element_located((By.ID, "edit-file-error"))).text

        browser.find_element(By.ID, "edit-file").send_keys(str(tmp_path / "take.wav"))
        browser.find_element(By.ID, "edit-transcript").send_keys(voice.text)
        # the new text starts as the transcript, to change words in place; sent unchanged: the 422 by the text
        assert browser.find_element(By.ID, "edit-text").get_attribute("value") == voice.text
        browser.find_element(By.ID, "edit-submit").click()
        message = wait.until(ready.visibility_of_element_located((By.ID, "edit-text-error")))
        assert "Error 422 (invalid_parameter): text says what the recording already says" in message.text

        browser.find_element(By.ID, "edit-text").clear()
        browser.find_element(By.ID, "edit-text").send_keys(voice.text.replace(" sad ", " purple "))
        browser.find_element(By.ID, "edit-submit").click()
        wait.until(lambda b: b.find_elements(By.ID, "edit-download") or b.execute_script(ERRORS, "#edit-section"))
        assert not browser.execute_script(ERRORS, "#edit-section")
        assert not browser.find_elements(By.ID, "edit-text-error")  # cleared by the new attempt
        edited, rate = sf.read(io.BytesIO(base64.b64decode(browser.execute_async_script(FETCH_DOWNLOAD,
                                                                                       "edit-download"))))
        assert rate == 16000 and 0 < len(edited) - len(take) < 0.5 * rate  # "purple" takes longer than "sad"
        assert np.array_equal(edited[: int(0.3 * rate)], take[: int(0.3 * rate)])  # the untouched start, as sent
        assert np.array_equal(edited[-2 * rate:], take[-2 * rate:])  # and the untouched end
        before, after = browser.execute_script(SPECTROGRAMS, "#edit-result")
        assert before["label"] == f"Input (before) ({seconds:.1f} s)", before
        assert after["label"].startswith("Edited (after)") and drawn(after, len(edited) / rate), after
        timings = browser.find_element(By.CSS_SELECTOR, "#edit-result .timings").text
        assert "Inference" in timings and "Seed" in timings, timings
        save_screenshot(browser, "bundle-edit")
