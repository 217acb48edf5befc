"""Shared pytest fixtures."""

import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub
from huggingface_hub import constants as hub_constants
from transformers import dynamic_module_utils
from transformers.utils import hub as transformers_hub

FAKE_HUB_TOKEN = "hf_fake_hub_test_token"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A FakeHub serving huggingface_hub's HTTP requests, with HF_HOME, caches, token and remote code in tmp_path."""
    home = tmp_path / "hf_home"
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
        "HF_ASSETS_CACHE",
        "HF_XET_CACHE",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_MODULES_CACHE", str(home / "modules"))
    monkeypatch.setenv("HF_TOKEN", FAKE_HUB_TOKEN)

    # huggingface_hub and transformers read these variables at import time, so their constants are patched too.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    old_home = hub_constants.HF_HOME
    for name, value in list(vars(hub_constants).items()):
        if isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(hub_constants, name, str(home) + value[len(old_home) :])
    for name, subfolder in (("HF_HUB_CACHE", "hub"), ("HF_ASSETS_CACHE", "assets"), ("HF_XET_CACHE", "xet")):
        monkeypatch.setattr(hub_constants, name, str(home / subfolder))
    for module in (transformers_hub, dynamic_module_utils):
        monkeypatch.setattr(module, "HF_MODULES_CACHE", str(home / "modules"))

    # Remote code is imported as the package transformers_modules, whose path is one HF_MODULES_CACHE: hide the
    # modules imported before, and drop the ones this test imports.
    # Earlier in-process loads put other modules caches on sys.path; the first one would shadow this test's.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if not Path(entry, "transformers_modules").is_dir()])
    for name in [name for name in sys.modules if name.split(".")[0] == "transformers_modules"]:
        monkeypatch.delitem(sys.modules, name)
    with FakeHub(FAKE_HUB_TOKEN) as hub:
        yield hub
    for name in [name for name in sys.modules if name.split(".")[0] == "transformers_modules"]:
        del sys.modules[name]
