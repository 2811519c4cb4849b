"""What the page tests share: a real uvicorn server on a free loopback port in a thread, Debian's headless
Chromium driven by selenium, and the scripts that read the page's state back (downloads, spectrogram canvases)."""

import contextlib
import os
import socket
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn

from bench.inprocess import wait_until_ready
from service.app import create_app
from service.settings import Settings

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@contextlib.contextmanager
def running_server(engine, ready_attempts: int = 2000, **settings):
    """Base URL of a uvicorn server for ``engine`` (None: the bundle in ``settings``, loaded and warmed up at start)
    on a free loopback port, in a thread, once it is ready."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(Settings(**{"max_wait_ms": 0, **settings}), engine)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url) as client:
            wait_until_ready(client, ready_attempts)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def headless_chromium(profile: Path):
    """A selenium driver for Debian's headless Chromium (skips the test when it is not installed). Its microphone
    is Chromium's fake one (a beeping tone, permission granted without asking), and audio may start without a
    gesture, so that recording and streamed playback run unattended."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required",
                 "--window-size=900,1300", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(browser, name: str) -> None:
    """SPEECHFLOW_DEMO_SCREENSHOTS=dir keeps a picture of each flow's end (to look at the page, not asserted)."""
    if directory := os.environ.get("SPEECHFLOW_DEMO_SCREENSHOTS"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        browser.set_window_size(900, browser.execute_script("return document.body.scrollHeight + 40"))
        browser.save_screenshot(str(Path(directory) / f"{name}.png"))


# The download link's bytes, base64 (read as a data URL: spreading a long array into fromCharCode overflows)
FETCH_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById(arguments[0]).href).then((r) => r.blob()).then((blob) => {
  const reader = new FileReader();
  reader.onload = () => done(reader.result.split(",")[1]);
  reader.readAsDataURL(blob);
}).catch((error) => done("failed: " + error));
"""

# What a spectrogram canvas shows: its size, how many distinct colours and its mean brightness (0-255), read back
# from its pixels; and where its playhead is (percent of the width) and what its player is at.
SPECTROGRAMS = """
return [...document.querySelectorAll(arguments[0] + " figure.spectrogram")].map((figure) => {
  const canvas = figure.querySelector("canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let brightness = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    brightness += (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
  }
  const audio = figure.querySelector("audio");
  return {label: figure.querySelector("figcaption").textContent, width: canvas.width, height: canvas.height,
          colours: colours.size, brightness: brightness / (pixels.length / 4),
          playhead: parseFloat(figure.querySelector(".playhead").style.left), time: audio.currentTime,
          duration: audio.duration, src: audio.src};
});
"""


def drawn(picture: dict, seconds: float) -> bool:
    """A canvas with one column per 10 ms frame, 80 mel rows and a picture on it (not one flat colour)."""
    return picture["width"] == int(seconds * 100) + 1 and picture["height"] == 80 and picture["colours"] > 20
