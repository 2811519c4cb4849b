"""The demo page at /: served by the app (open even when API keys are set), self-contained, and working in a real
headless Chromium against a fake engine (Debian's chromium + chromium-driver, driven by selenium)."""

import asyncio
import base64
import contextlib
import io
import os
import socket
import threading
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import uvicorn

from model.audio import encode_audio
from service.app import STATIC_DIR, create_app
from service.settings import Settings
from service.testing import FakeEngine, serving, wait_until_ready
from tests.conftest import speechlike

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def test_the_page_and_its_files_are_served_without_a_key_while_the_api_needs_one():
    async def main():
        app = create_app(Settings(api_keys="secret"), FakeEngine())
        async with serving(app) as client:
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert 'src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
            for name, media_type in [("app.js", "javascript"), ("style.css", "text/css")]:
                r = await client.get(f"/static/{name}")
                assert r.status_code == 200 and media_type in r.headers["content-type"], (name, r.text)
            missing = await client.get("/static/nothing.js")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
            assert (await client.get("/v1/models")).status_code == 401
            r = await client.get("/v1/models", headers={"Authorization": "Bearer secret"})
            assert r.status_code == 200

    asyncio.run(main())


def test_the_page_fetches_nothing_from_elsewhere():
    for path in STATIC_DIR.iterdir():
        assert "://" not in path.read_text(), f"{path.name} refers to another site; the page must work offline"


@contextlib.contextmanager
def running_server(engine, **settings):
    """Base URL of a uvicorn server for ``engine`` on a free loopback port, in a thread, once it is ready."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(Settings(**{"max_wait_ms": 0, **settings}), engine)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url) as client:
            wait_until_ready(client)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def headless_chromium(profile: Path):
    """A selenium driver for Debian's headless Chromium (skips the test when it is not installed)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=900,1300", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def live_server():
    """(base URL, engine) of a uvicorn server with a fake engine on a free loopback port, in a thread."""
    engine = FakeEngine()
    with running_server(engine) as url:
        yield url, engine


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path / "profile") as driver:
        yield driver


FETCH_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById("task-download").href).then((r) => r.arrayBuffer()).then((buffer) => {
  done(btoa(String.fromCharCode(...new Uint8Array(buffer))));
}).catch((error) => done("failed: " + error));
"""


def test_enhance_through_the_page_in_a_headless_browser(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    url, engine = live_server
    noisy = speechlike(0.5, seed=3)
    (tmp_path / "noisy.wav").write_bytes(encode_audio(noisy, 16000, "wav"))
    wait = WebDriverWait(browser, 10)
    browser.get(url)
    wait.until(ready.text_to_be_present_in_element((By.ID, "server-info"), "Models: enhance, separate"))
    note = browser.find_element(By.ID, "tts-note").text
    assert "no TTS model" in note and not browser.find_element(By.ID, "tts-text").is_enabled()

    browser.find_element(By.ID, "submit").click()  # nothing chosen yet: a readable message, no request
    wait.until(ready.visibility_of_element_located((By.ID, "task-error")))
    assert "Choose an audio file" in browser.find_element(By.ID, "task-error").text and engine.prepared == []

    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=enhance]").click()
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "noisy.wav"))
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "submit").click()
    link = wait.until(ready.presence_of_element_located((By.ID, "task-download")))

    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "enhanced.wav"
    assert browser.find_element(By.CSS_SELECTOR, "#task-result audio").get_attribute("src").startswith("blob:")
    assert not browser.find_element(By.ID, "task-error").is_displayed()
    timings = browser.find_element(By.CSS_SELECTOR, "#task-result .timings").text
    assert all(label in timings for label in ("Total time", "Queue wait", "Batch size\n1", "Seed\n7")), timings
    downloaded = browser.execute_async_script(FETCH_DOWNLOAD)
    result, rate = sf.read(io.BytesIO(base64.b64decode(downloaded)), dtype="float32")
    assert rate == 16000 and result.shape == noisy.shape and abs(result - noisy / 2).max() < 1e-3  # fake: x / 2
    assert [(task, len(wav), p.seed) for task, wav, p in engine.prepared] == [("enhance", len(noisy), 7)]
    if screenshot := os.environ.get("SPEECHFLOW_DEMO_SCREENSHOT"):
        browser.save_screenshot(screenshot)
