"""Packaging: metadata and dependencies live in setup.cfg.

Only the shipped weights need code: the top-level ``weights/`` folder is
installed as package data under ``ase_definet/_weights/`` (every model file its
``registry.json`` lists, the registry itself and the models' split files),
where :func:`ase_definet.weights.weights_dirs` finds it in any install. The
training data under ``weights/data/`` stays out of the wheel.
"""
import json
from pathlib import Path

from setuptools import find_packages, setup

WEIGHTS = Path(__file__).parent / "weights"


def shipped_files() -> list[str]:
    """``registry.json``, each model file it names and its ``NAME.split.json``."""
    models = json.loads((WEIGHTS / "registry.json").read_text())["models"]
    files = ["registry.json"]
    for entry in models.values():
        files.append(entry["file"])
        split = Path(entry["file"]).with_suffix(".split.json").name
        if (WEIGHTS / split).is_file():
            files.append(split)
    return files


setup(
    packages=find_packages(include=["ase_definet", "ase_definet.*"]) + ["ase_definet._weights"],
    package_dir={"ase_definet._weights": "weights"},
    package_data={"ase_definet._weights": shipped_files()},
    include_package_data=False,
)
