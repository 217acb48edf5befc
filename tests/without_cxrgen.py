"""Run a Python script in a subprocess that cannot import cxrgen, as a Hub user without the package runs a saved
folder's remote code. The block holds however cxrgen is installed (editable, wheel, on sys.path)."""

import os
import subprocess
import sys
from pathlib import Path

# `sys.modules[name] = None` makes every import of that name fail, whichever finder would have found it.
BLOCK_CXRGEN = """import sys
sys.modules["cxrgen"] = None
try:
    import cxrgen
except ImportError:
    pass
else:
    sys.exit("cxrgen is importable in the isolated process")
"""


def run_without_cxrgen(script: str, args: list[str], workdir: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in ``workdir``, offline, with a fresh HF home and modules cache there; cxrgen
    cannot be imported. Returns the completed process (stdout and stderr captured as text)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(workdir / "hf_home"),
        HF_MODULES_CACHE=str(workdir / "hf_modules"),
        OMP_NUM_THREADS="1",
    )
    path = workdir / "without_cxrgen.py"
    path.write_text(BLOCK_CXRGEN + script)
    return subprocess.run(
        [sys.executable, str(path), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
