"""`finetune serve`: the page's API through Flask's test client, and the page itself in a real headless Chromium."""

import io
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from finetune.cli import main
from finetune.serve import create_app, exposure_warning

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """A tiny run trained with the CLI on colour classes (class_a red, class_b green, class_c blue)."""
    from conftest import make_image_folder
    from test_cli import TINY_FLAGS

    root = tmp_path_factory.mktemp("serve")
    data = make_image_folder(root / "data", per_class=16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        result = CliRunner().invoke(main, ["train", str(data), *TINY_FLAGS, "--head-epochs", "8", "--tune-epochs",
                                           "0", "--output", str(root / "runs"), "--name", "colours"])
    assert result.exit_code == 0, result.output
    return root / "runs" / "colours", data


@pytest.fixture(scope="module")
def client(served_run):
    return create_app(served_run[0]).test_client()


def _png(color, size=(48, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_info_and_a_prediction_with_its_grad_cam(client):
    info = client.get("/api/info").json
    assert info["classes"] == ["class_a", "class_b", "class_c"] and info["multi_label"] is False
    answer = client.post("/api/predict", data={"image": (io.BytesIO(_png((220, 40, 40))), "red.png")}).json
    assert answer["file"] == "red.png" and answer["top"][0]["label"] == "class_a"
    assert len(answer["top"]) == 3 and sum(t["probability"] for t in answer["top"]) == pytest.approx(1, abs=1e-4)
    assert answer["image"].startswith("data:image/png;base64,")
    assert answer["gradcam"]["image"].startswith("data:image/png;base64,")


def test_bad_uploads_get_a_reason_and_nothing_leaks(client):
    broken = client.post("/api/predict", data={"image": (io.BytesIO(b"not an image"), "notes.png")})
    assert broken.status_code == 400 and broken.json["error"].startswith("notes.png: ")
    assert "image" in client.post("/api/predict", data={}).json["error"]
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no outside resources


def test_oversized_uploads_and_foreign_host_headers_are_refused(served_run):
    app = create_app(served_run[0], max_upload_mb=0.001)
    client = app.test_client()
    big = client.post("/api/predict", data={"image": (io.BytesIO(b"x" * 4096), "big.png")})
    assert big.status_code == 413 and "over 0.001 MB" in big.json["error"]
    assert client.get("/api/info", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/info", headers={"Host": "localhost:8000"}).status_code == 200


def test_binding_beyond_loopback_warns():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert "anyone who can reach this machine" in exposure_warning("0.0.0.0")


@pytest.fixture
def browser_tmp():
    """Chromium's TMPDIR: it leaves its singleton socket folder there after quit(). A short path (not tmp_path):
    the socket's path must fit in 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as folder:
        yield folder


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                    reason="no headless browser: `apt-get install chromium chromium-driver` (.ci/run installs them)")
def test_the_page_in_headless_chromium(served_run, tmp_path, browser_tmp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from finetune.training.ordinal import OrdinalRule

    run_dir, data = served_run
    ordinal_run = tmp_path / "colours-ordinal"  # the same run with an ordinal rule: the page shows its decision
    shutil.copytree(run_dir, ordinal_run)
    OrdinalRule([0.5, 1.5]).save(ordinal_run / "ordinal.json")
    with _browser(ordinal_run, browser_tmp) as (browser, url):
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda b: "class_a" in b.find_element(By.ID, "about").text)
        picks = [data / "class_c" / "img_000.png", data / "class_a" / "img_000.png"]
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in [*picks, tmp_path / "broken.jpg"]))
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".card.done")) == 2
                                         and b.find_elements(By.CSS_SELECTOR, ".card.failed"))
        cards = {c.find_element(By.TAG_NAME, "h2").text: c for c in browser.find_elements(By.CSS_SELECTOR, ".card")}
        assert cards["img_000.png"] is not None
        top = sorted(c.find_element(By.CSS_SELECTOR, ".prediction .label").text
                     for c in browser.find_elements(By.CSS_SELECTOR, ".card.done"))
        assert top == ["class_a", "class_c"]
        decisions = sorted(c.find_element(By.CLASS_NAME, "labels").text for c in
                           browser.find_elements(By.CSS_SELECTOR, ".card.done"))
        assert [d.split(" (")[0] for d in decisions] == ["decision: class_a", "decision: class_c"]
        assert all("(ordinal rule, expected grade" in d for d in decisions)
        assert "broken.jpg: " in cards["broken.jpg"].find_element(By.CLASS_NAME, "error").text
        WebDriverWait(browser, 10).until(ready.presence_of_element_located((By.CSS_SELECTOR, ".card.done img")))
        shot = Path(os.environ.get("FINETUNE_SERVE_SCREENSHOT", tmp_path / "serve.png"))
        assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] > 500
        pixels = np.asarray(Image.open(shot).convert("RGB"))
        assert pixels.std() > 10  # a rendered page, not a blank one


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A text run on a tiny GloVe file (synthetic reviews whose sentiment words tell the label)."""
    from tiny_text import reviews

    root = tmp_path_factory.mktemp("serve_text")
    texts, labels = reviews(120)
    run_dir, _, _ = _train_text(root, texts, labels)
    return run_dir


def _train_text(root, texts, labels):
    import csv

    from tiny_text import make_tiny_glove

    from finetune import TrainConfig, train

    with open(root / "reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    glove = make_tiny_glove(root / "glove.tiny.8d.txt")
    return train(TrainConfig(data=str(root / "reviews.csv"), backbone=f"glove:{glove}", head_epochs=30, tune_epochs=2,
                             batch_size=16, output=str(root / "runs"), name="reviews"), verbose=0)


def test_a_text_run_answers_texts_with_word_scores(text_run):
    client = create_app(text_run).test_client()
    info = client.get("/api/info").json
    assert info["kind"] == "text" and info["classes"] == ["great", "other"] and info["sequence_length"] >= 8
    answer = client.post("/api/predict", data={"text": "great tasty fresh tea"}).json
    assert answer["top"][0]["label"] == "great", answer
    words = {w["word"]: w["score"] for w in answer["words"]["words"]}
    assert list(words) == ["great", "tasty", "fresh", "tea"] and words["great"] > words["tea"]
    assert client.post("/api/predict", json={"text": "awful stale soup"}).json["top"][0]["label"] == "other"
    empty = client.post("/api/predict", data={"text": "   "})
    assert empty.status_code == 400 and "empty" in empty.json["error"]
    assert "text" in client.post("/api/predict", data={"image": (io.BytesIO(_png((1, 2, 3))), "a.png")}).json["error"]


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                    reason="no headless browser: `apt-get install chromium chromium-driver` (.ci/run installs them)")
def test_the_text_page_in_headless_chromium(text_run, tmp_path, browser_tmp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with _browser(text_run, browser_tmp) as (browser, url):
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda b: "tokens" in b.find_element(By.ID, "about").text)
        assert not browser.find_element(By.ID, "drop").is_displayed()
        for text in ("great tasty fresh tea", "awful stale soup <b>bold</b>"):
            area = browser.find_element(By.ID, "text")
            area.clear()
            area.send_keys(text)
            browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".card.done")) == 2)
        cards = {c.find_element(By.TAG_NAME, "h2").text: c for c in browser.find_elements(By.CSS_SELECTOR, ".card.done")}
        assert cards["great tasty fresh tea"].find_element(By.CSS_SELECTOR, ".prediction .label").text == "great"
        assert cards["awful stale soup <b>bold</b>"].find_element(By.CSS_SELECTOR, ".prediction .label").text == "other"
        words = [w.text for w in cards["great tasty fresh tea"].find_elements(By.CSS_SELECTOR, ".word")]
        assert words == ["great", "tasty", "fresh", "tea"]
        assert not browser.find_elements(By.TAG_NAME, "b")  # the text is shown as text, never as markup
        shot = Path(os.environ.get("FINETUNE_SERVE_TEXT_SCREENSHOT", tmp_path / "serve_text.png"))
        assert browser.save_screenshot(str(shot))


class _browser:
    """A served run and a headless Chromium pointed at it: ``with _browser(run, tmp) as (browser, url)``."""

    def __init__(self, run_dir, browser_tmp):
        self.run_dir, self.browser_tmp = run_dir, browser_tmp

    def __enter__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, create_app(self.run_dir), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,800"):
            options.add_argument(flag)
        service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": self.browser_tmp})
        self.browser = webdriver.Chrome(service=service, options=options)
        return self.browser, f"http://localhost:{self.server.server_port}/"

    def __exit__(self, *exc):
        self.browser.quit()
        self.server.shutdown()
