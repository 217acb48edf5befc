"""A screenshot of ``cxrgen app`` in headless Chromium, for a saved model and one study of an annotation.

Serves the app of ``--model`` on a free local port, opens it in Debian's chromium (through Selenium and the system
chromedriver: no browser download), uploads the study's views, waits for the report and the figures, and saves a
full-page screenshot. The screenshots in this folder (``APP.md``) were taken with the ``cxrgen demo`` models:

    cxrgen demo --output cxrgen-demo && cxrgen demo --model trrg --output cxrgen-demo-trrg
    python benchmarks/app_screenshot.py --model cxrgen-demo/model --data cxrgen-demo/data \\
        --output benchmarks/app-cmcrl.png
    python benchmarks/app_screenshot.py --model cxrgen-demo-trrg/model --data cxrgen-demo-trrg/data \\
        --output benchmarks/app-trrg.png
"""

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cxrgen.data.annotation import read_annotation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(model: str, port: int) -> subprocess.Popen:
    """``cxrgen app`` in a subprocess, returned once it answers."""
    process = subprocess.Popen([sys.executable, "-m", "cxrgen.cli", "app", "--model", model, "--port", str(port)])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cxrgen app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("cxrgen app did not answer within 180 s")


def screenshot(url: str, views: list[str], output: Path, width: int = 1400) -> str:
    """Upload ``views``, generate, save a full-page screenshot to ``output``; return the report shown."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#views input[type=file]")).send_keys("\n".join(views))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#views tbody tr")) >= len(views))
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        report = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#report textarea").get_attribute("value"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#figures img"))
        time.sleep(2)  # the gallery's layout settles after its images load
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height)
        time.sleep(1)
        output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(output))
        return report
    finally:
        driver.quit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved model folder")
    parser.add_argument("--data", required=True, help="a folder with annotation.json and images/ (cxrgen prepare)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=int, default=0, help="which study of the split")
    parser.add_argument("--output", required=True, type=Path, help="the PNG to write")
    args = parser.parse_args()
    data = Path(args.data)
    entry = read_annotation(data / "annotation.json")[args.split][args.index]
    views = [str((data / "images" / path).resolve()) for path in entry["image_path"]]
    port = free_port()
    process = serve(args.model, port)
    try:
        report = screenshot(f"http://127.0.0.1:{port}/", views, args.output)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"Study {entry['id']} ({args.split} #{args.index})")
    print(f"Reference: {entry['report']}")
    print(f"Generated: {report}")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
