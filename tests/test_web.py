"""The camera page in a real headless Chromium (Debian's chromium + chromium-driver) with a fake camera."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from emotorch.choices import FERPLUS_CLASSES

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives the browser")
skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Counts getUserMedia calls, so the test can prove that the camera is not asked for before consent.
COUNT_CAMERA_CALLS = """
window.__cameraCalls = 0;
if (navigator.mediaDevices) {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => { window.__cameraCalls++; return original(c); };
}
const fillText = CanvasRenderingContext2D.prototype.fillText;  // the last label drawn on the overlay
CanvasRenderingContext2D.prototype.fillText = function (t, ...rest) {
  if (this.canvas.id === "overlay") window.__lastLabel = t;
  return fillText.call(this, t, ...rest);
};
"""


def face_video(path: Path, frames: int = 20) -> Path:
    """A y4m clip (Chromium's fake-camera format) of the astronaut's smiling face in a 640x480 frame."""
    photo = cv2.resize(skdata.astronaut(), (480, 480))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 80:560] = photo
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv)
    return path


def browser(tmp_path: Path, camera: Path | None, size=(1200, 900)):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(flag)
    if camera is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-video-capture={camera}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_CAMERA_CALLS})
    return driver


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).get_attribute("textContent").strip()


def top_bar_matches_its_share(driver) -> bool:
    """Whether the top bar's rendered fill is its probability's share of the track (within 1% + 3 px)."""
    top = driver.find_element(By.CSS_SELECTOR, "#bars li.top")
    share = float(top.find_element(By.CSS_SELECTOR, ".value").text.rstrip("%")) / 100
    track = top.find_element(By.CSS_SELECTOR, ".track").rect["width"]
    fill = top.find_element(By.CSS_SELECTOR, ".fill").rect["width"]
    return share > 0.3 and track > 100 and abs(fill - share * track) <= 0.01 * track + 3


def test_consent_then_live_emotion_and_recommendations(server, tmp_path):
    driver = browser(tmp_path, face_video(tmp_path / "face.y4m"), size=(1280, 900))
    try:
        driver.get(server + "/")
        assert driver.find_element(By.ID, "consent").is_displayed()
        assert not driver.find_element(By.ID, "live").is_displayed()
        assert driver.find_element(By.ID, "stop").is_displayed() and driver.find_element(By.ID, "forget").is_displayed()
        assert not driver.find_element(By.ID, "stop").is_enabled()  # no camera yet: nothing to stop
        consent = " ".join(text(driver, "consent").split())  # exactly what is kept: feedback, no images or emotions
        assert "Nothing is stored" not in consent
        assert "What is never stored: camera frames and photos" in consent and "Your emotions" in consent
        assert "opened or liked" in consent and "until you press Forget me" in consent
        classes = httpx.get(server + "/v1/model").json()["classes"]  # the served model's, named on the page
        wait_for_text = WebDriverWait(driver, 30)
        wait_for_text.until(lambda d: f"one of {len(classes)} ({classes[0]}, " in text(d, "consent"))
        assert "seven" not in text(driver, "consent") and f"{classes[-2]} or {classes[-1]}" in text(driver, "consent")
        assert driver.execute_script("return window.__cameraCalls") == 0  # no camera before consent

        # keyboard only: the consent button has the focus; Enter starts the camera
        assert driver.switch_to.active_element.get_attribute("id") == "consent-camera"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: text(d, "emotion") in FERPLUS_CLASSES)
        assert driver.execute_script("return window.__cameraCalls") == 1
        assert text(driver, "emotion") == "happy"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) >= 5)
        wait.until(lambda d: float(text(d, "fps")) > 0)
        bars = driver.find_elements(By.CSS_SELECTOR, "#bars li")
        assert [b.get_attribute("data-emotion") for b in bars] == list(FERPLUS_CLASSES)  # the served model's
        wait.until(lambda d: top_bar_matches_its_share(d))
        reasons = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#recs .reason")]
        assert all(reasons) and any("happy" in r for r in reasons)
        driver.execute_script("window.__opened = []; window.open = (url) => { window.__opened.push(url); };")
        opens = driver.find_elements(By.CSS_SELECTOR, "#recs li .actions button:first-child")
        assert len(opens) == len(driver.find_elements(By.CSS_SELECTOR, "#recs li"))  # every starter item has a page
        for button in opens:
            assert button.text == "Open"
            driver.execute_script("arguments[0].click()", button)  # as a user's click, without scrolling
        opened = driver.execute_script("return window.__opened")
        assert len(opened) == len(opens) and all(url.startswith("https://") for url in opened), opened
        shots = Path(os.environ.get("EMOTORCH_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "page_live.png"))
        bars_bottom = driver.execute_script("return document.getElementById('bars').getBoundingClientRect().bottom")
        assert bars_bottom <= driver.execute_script("return window.innerHeight")  # in view at 1280x900, unscrolled
        label, emotion, confidence = driver.execute_script(  # one moment: the box on the face and the readout
            "return [window.__lastLabel, document.getElementById('emotion').textContent, "
            "document.getElementById('confidence').textContent]"
        )
        assert label == f"{emotion} {confidence}", (label, emotion, confidence)

        like = driver.find_element(By.CSS_SELECTOR, "#recs li .actions button:nth-child(2)")
        like.click()
        wait.until(lambda d: "Liked" in like.text)

        driver.find_element(By.ID, "snap").click()  # selfie mode: one frame, and the camera goes off
        wait.until(lambda d: "1 face(s) found" in text(d, "status"))
        assert driver.find_element(By.ID, "still").is_displayed() and text(driver, "emotion") == "happy"
        assert driver.execute_script("return document.getElementById('video').srcObject") is None
        driver.find_element(By.ID, "resume").click()
        wait.until(lambda d: "Camera on" in text(d, "status"))
        assert driver.execute_script("return window.__cameraCalls") == 2

        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: "Camera stopped" in text(d, "status"))
        assert driver.execute_script("return document.getElementById('video').srcObject") is None
        assert not driver.find_element(By.ID, "still").is_displayed()  # no snapped face left on screen
        assert not driver.find_element(By.ID, "snap").is_displayed()
        assert not driver.find_element(By.ID, "stop").is_enabled()

        driver.find_element(By.ID, "forget").click()  # impressions and the like, stored for this page's id
        wait.until(lambda d: d.find_elements(By.ID, "forget-notice"))
        assert "stored feedback event(s) deleted" in text(driver, "forget-notice")
        assert int(text(driver, "forget-notice").split(": ")[1].split()[0]) >= 2
        assert driver.find_element(By.ID, "consent").is_displayed()
    finally:
        driver.quit()


def test_without_a_camera_on_a_phone_sized_screen(server, tmp_path):
    driver = browser(tmp_path, camera=None, size=(390, 844))
    try:
        driver.get(server + "/")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        driver.find_element(By.ID, "consent-camera").click()
        status = driver.find_element(By.ID, "status")
        WebDriverWait(driver, 30).until(lambda d: "error" in status.get_attribute("class"))
        assert "no camera was found" in text(driver, "status").lower(), text(driver, "status")
        assert "upload a photo" in text(driver, "status").lower()
        assert "once the camera or a photo shows a face" in text(driver, "recs-note")  # not an empty card
        # selfie mode instead: upload one photo
        photo = tmp_path / "me.jpg"
        cv2.imwrite(str(photo), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 60).until(lambda d: text(d, "emotion") == "happy")
        assert "1 face(s) found" in text(driver, "status")
        readings = driver.execute_script(  # the crowd's shares say neutral, the expressive head's say angry
            "const one = (name) => EMOTIONS.map((e) => (e === name ? 1 : 0));"
            "return ['expressive', 'crowd'].map((reading) => "
            "EMOTIONS[readEmotion(one('neutral'), one('angry'), {reading, expressive_head: true})]);"
        )
        assert readings == ["angry", "neutral"]
        assert not driver.find_element(By.ID, "fps-readout").is_displayed()  # a photo has no frame rate
        assert not driver.find_element(By.ID, "snap").is_displayed()  # no camera: nothing to snap
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(Path(os.environ.get("EMOTORCH_SCREENSHOTS", tmp_path)) / "page_phone.png"))
    finally:
        driver.quit()


def test_api_docs_render_with_no_network(server, tmp_path):
    """/docs (Swagger UI) and /redoc render from assets the server itself serves: no CDN."""
    driver = browser(tmp_path, camera=None)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(server + "/docs")
        wait.until(
            lambda d: (
                "EmoTorch"
                in d.execute_script(
                    "const t = document.querySelector('.swagger-ui .info .title'); return t ? t.textContent : ''"
                )
            )
        )
        wait.until(lambda d: "/v1/emotions" in d.find_element(By.TAG_NAME, "body").text)
        driver.get(server + "/redoc")
        wait.until(lambda d: "/v1/emotions" in d.find_element(By.TAG_NAME, "body").get_attribute("textContent"))
        for page in ("/docs", "/redoc"):  # every fetch is local, or blocked by the docs' CSP (ReDoc's logo)
            driver.get(server + page)
            time.sleep(1)
            fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            blocked = " ".join(e["message"] for e in driver.get_log("browser") if "has been blocked" in e["message"])
            assert any(url.startswith(server + "/static-offline-docs/") for url in fetched), fetched
            assert all(url.startswith(server) or url in blocked for url in fetched), (fetched, blocked)
    finally:
        driver.quit()
