"""The README's `finetune serve` screenshot: the demo's run, two ELPV cells dropped on the page, in headless Chromium.

Run after `make demo` (needs Debian's chromium and chromium-driver):
    .venv/bin/python examples/serve_screenshot.py runs/elpv-demo docs/serve.png data/elpv/3_defective/<cell>.png ...
"""

import shutil
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from finetune.serve import create_app


def main(run_dir: str, out: str, *images: str) -> None:
    server = make_server("127.0.0.1", 0, create_app(run_dir), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,760"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        browser.get(f"http://localhost:{server.server_port}/")
        for image in images:  # one at a time: the newest card goes on top
            browser.find_element(By.ID, "files").send_keys(image)
            count = len(browser.find_elements(By.CSS_SELECTOR, ".card.done"))
            WebDriverWait(browser, 120).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".card.done")) > count - 1
                                              and not b.find_elements(By.CSS_SELECTOR, ".card:not(.done)"))
        time.sleep(0.5)
        browser.save_screenshot(out)
        print(f"wrote {out}")
    finally:
        browser.quit()
        server.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
