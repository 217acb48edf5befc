"""`cxrgen app` on tiny saved models: served on localhost and driven through gradio_client with phantom images, once
in a real browser (headless Chromium through Selenium), and published as a Hub Space to the fake Hub."""

import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from test_image_processing import write_dicom
from tiny_folders import save_cmcrl_folder, save_trrg_folder

gradio = pytest.importorskip("gradio", reason='the app tests need the [app] extra: pip install -e ".[app]"')
gradio_client = pytest.importorskip("gradio_client", reason="the app tests need the [app] extra (gradio_client)")

from cxrgen.app import build_app, intended_use, launch, space_files  # noqa: E402
from cxrgen.cli import main  # noqa: E402
from cxrgen.data.annotation import read_annotation  # noqa: E402
from cxrgen.data.phantom_benchmark import build_phantom_benchmark  # noqa: E402
from cxrgen.inference import generate_reports, load_generator  # noqa: E402
from cxrgen.labels import CHEXPERT_OBSERVATIONS  # noqa: E402
from cxrgen.visualization import labeled_observations  # noqa: E402

torch.set_num_threads(1)

# Debian's chromium package; `.ci/run` installs it where it is missing.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = os.environ.get("CXRGEN_APP_SCREENSHOTS")  # where the browser test also saves its screenshot


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, process=None, timeout=120):
    """Poll ``url`` until it answers; fail with the server's output if it exits first or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    """The two views (frontal, lateral) of one phantom test study, 32 px."""
    root = tmp_path_factory.mktemp("phantom")
    annotation = read_annotation(
        build_phantom_benchmark(root, source="synthetic", image_size=32, synthetic_studies=15, seed=3)
    )
    return [str(root / "images" / path) for path in annotation["test"][0]["image_path"]]


@pytest.fixture(scope="module")
def cmcrl_folder(tmp_path_factory):
    return save_cmcrl_folder(tmp_path_factory.mktemp("cmcrl") / "model")


@pytest.fixture(scope="module")
def cmcrl_server(cmcrl_folder):
    """`cxrgen app --model <tiny CMCRL> --port N` in a subprocess; yields its URL."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cxrgen.cli", "app", "--model", str(cmcrl_folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def trrg_server(tmp_path_factory):
    """The app of a tiny TRRG, served in this process; yields (URL, folder)."""
    folder = save_trrg_folder(tmp_path_factory.mktemp("trrg") / "model")
    app = build_app(folder)
    launch(app, port=free_port(), prevent_thread_lock=True)
    try:
        yield app.local_url, folder
    finally:
        app.close()


def client(url):
    return gradio_client.Client(url, verbose=False)


def test_cmcrl_app_gives_the_report_its_observations_and_overlays(cmcrl_server, cmcrl_folder, phantom_study):
    files = [gradio_client.handle_file(path) for path in phantom_study]
    report, observations, clues, figures = client(cmcrl_server).predict(files, 1, 8, api_name="/generate")
    expected = generate_reports(load_generator(cmcrl_folder), [phantom_study], num_beams=1, max_new_tokens=8)[0]
    assert report == expected["report"]
    assert [row[0] for row in observations["data"]] == list(CHEXPERT_OBSERVATIONS)
    assert dict(observations["data"]) == labeled_observations(report)
    assert clues["data"] == []
    assert len(figures) == 2 and all("attention rollout" in figure["caption"] for figure in figures)
    assert [figure["caption"].split(":")[0] for figure in figures] == ["View 1", "View 2"]


def test_bad_uploads_get_the_cli_messages(cmcrl_server, cmcrl_folder, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    app = client(cmcrl_server)
    with pytest.raises(gradio_client.exceptions.AppError, match="Cannot read image file 'broken.png'") as raised:
        app.predict([gradio_client.handle_file(str(broken))], 1, 8, api_name="/generate")
    with pytest.raises(gradio_client.exceptions.AppError, match="Upload the study's views first"):
        app.predict([], 1, 8, api_name="/generate")
    # The CLI words the same error, naming the file by its full path where the app names the upload.
    assert main(["generate", "--model", str(cmcrl_folder), str(broken)]) == 2
    cli_message = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("cxrgen generate: error: ")
    assert cli_message.replace(str(broken), broken.name) == str(raised.value)


def test_dicom_views_are_read(cmcrl_server, cmcrl_folder, phantom_study, tmp_path):
    pytest.importorskip("pydicom", reason='DICOM uploads need the [dicom] extra: pip install -e ".[dicom]"')
    frontal = tmp_path / "frontal.dcm"
    write_dicom(frontal, np.asarray(Image.open(phantom_study[0]).convert("L"), dtype=np.uint16) * 16)
    study = [str(frontal), phantom_study[1]]
    files = [gradio_client.handle_file(path) for path in study]
    report, _, _, figures = client(cmcrl_server).predict(files, 1, 8, api_name="/generate")
    assert (
        report == generate_reports(load_generator(cmcrl_folder), [study], num_beams=1, max_new_tokens=8)[0]["report"]
    )
    assert len(figures) == 2


def test_trrg_app_gives_probabilities_and_clues(trrg_server, phantom_study):
    url, folder = trrg_server
    files = [gradio_client.handle_file(path) for path in phantom_study]
    report, observations, clues, figures = client(url).predict(files, 1, 4, api_name="/generate")
    expected = generate_reports(load_generator(folder), [phantom_study], num_beams=1, max_new_tokens=4)[0]
    assert report == expected["report"]
    assert [row[:2] for row in clues["data"]] == [[c["observation"], c["polarity"]] for c in expected["clues"]]
    assert len(clues["data"]) == 3  # top-3 clue selection
    [chart] = figures
    assert "clues injected" in chart["caption"]


def test_intended_use_comes_from_the_model_card(cmcrl_folder, tmp_path):
    text = intended_use(Path(cmcrl_folder))
    assert "Research use only" in text and "not for clinical use" in text.lower()
    assert "synthetic phantom images" in text  # the phantom-data warning of the card
    assert intended_use(tmp_path) == ""


def test_a_missing_model_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["app", "--model", str(tmp_path / "missing")]) == 2
    assert "Model folder not found" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["app", "--model", "runs/missing"]) == 2  # could be a repo id: the Hub is asked, offline here
    assert "runs/missing is no model folder here, and it could not be fetched" in capsys.readouterr().err


def test_importing_the_cli_does_not_load_gradio():
    code = "import sys, cxrgen, cxrgen.cli; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver; .ci/run does)",
)
def test_in_a_real_browser(cmcrl_server, phantom_study, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the [app] extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(argument)
    # The system chromedriver: Selenium Manager's own browser downloads are not reachable offline.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(cmcrl_server)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#views input[type=file]"))
        assert "Research use only." in driver.find_element(By.TAG_NAME, "body").text
        upload.send_keys("\n".join(phantom_study))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#views .file-preview tr, #views tbody tr")) >= 2)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        report = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#report textarea").get_attribute("value"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#figures img")) >= 2)
        time.sleep(1)  # let the gallery finish its layout before the screenshot
        screenshot = tmp_path / "app-cmcrl.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if SCREENSHOT_DIR:
            shutil.copy(screenshot, Path(SCREENSHOT_DIR) / screenshot.name)
    finally:
        driver.quit()
    expected = client(cmcrl_server).predict(
        [gradio_client.handle_file(path) for path in phantom_study], 3, 15, api_name="/generate"
    )[0]
    assert report == expected  # the page's defaults: the saved generation_config (3 beams, 15 new tokens)


def test_push_space_serves_the_app_of_the_pushed_model(cmcrl_folder, fake_hub, capsys, tmp_path):
    model_repo, space_repo = "cxrgen-test/cmcrl-app", "cxrgen-test/cmcrl-app-space"
    code = main(["push", "--model", str(cmcrl_folder), "--repo", model_repo, "--space", space_repo])
    assert code == 0 and space_repo in capsys.readouterr().out
    space = fake_hub.spaces[space_repo]
    assert space.sdk == "gradio" and not space.private
    files = {name: content.decode() for name, content in space.head.files.items()}
    assert files == space_files(model_repo)
    assert f'build_app("{model_repo}")' in files["app.py"] and "cxrgen[app]" in files["requirements.txt"]
    assert f"- {model_repo}" in files["README.md"] and "Research use only" in files["README.md"]

    # The Space's app.py, run as a module (not __main__, so it builds the app without serving it), loads the
    # model by its repo id from the Hub.
    (tmp_path / "app.py").write_text(files["app.py"])
    app = runpy.run_path(str(tmp_path / "app.py"), run_name="space_app")["demo"]
    assert isinstance(app, gradio.Blocks) and "model.safetensors" in fake_hub.downloaded(model_repo)
    assert fake_hub.unhandled == []
