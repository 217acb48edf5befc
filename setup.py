import re
from pathlib import Path

from setuptools import find_packages, setup

# One source for the transformers floor: the package checks it at import time.
MIN_TRANSFORMERS_VERSION = re.search(
    r'^MIN_TRANSFORMERS_VERSION = "([^"]+)"', Path(__file__).with_name("cxrgen").joinpath("__init__.py").read_text(), re.M
).group(1)

setup(
    name="cxrgen",
    version="0.1.0",
    description="Chest X-ray radiology report generation (CMCRL, TRRG) as Hugging Face transformers models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cxrgen", "cxrgen.*"]),
    package_data={"cxrgen": ["evaluation/rrg_metric/*.py", "hub_cards/*.md"]},
    install_requires=[
        "torch>=2.4",
        f"transformers>={MIN_TRANSFORMERS_VERSION},<6",
        "accelerate>=1.0",
        "peft>=0.17",
        "bitsandbytes>=0.45",
        "datasets>=3.0",
        "evaluate>=0.4",
        "huggingface-hub>=2.0",
        "safetensors>=0.4",
        "trl>=0.20",
        "tokenizers>=0.21",
        "pillow>=10.0",
        "numpy>=1.24",
        "packaging>=20.0",
        "pycocoevalcap>=1.2",
        "pyyaml>=6.0",
    ],
    extras_require={
        "dicom": ["pydicom>=3.0"],
        "dev": ["pytest>=8.0", "scikit-learn>=1.3", "pydicom>=3.0"],
    },
    entry_points={"console_scripts": ["cxrgen=cxrgen.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
