"""The MAP packager (holoscan-cli) copies ``--add``ed code into the image and puts **every
sub-folder** of it on PYTHONPATH. A module of the package named like a standard-library or
installed top-level module then shadows it (``transforms/io.py`` hid the standard ``io``,
``metrics/ignite.py`` hid pytorch-ignite). These tests lay the code out the same way."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_folders() -> list[Path]:
    """Every folder holding the package's or the app's code (what lands on PYTHONPATH)."""
    out = []
    for root in (REPO / "monai_smalldet", REPO / "apps"):
        out.append(root)
        out += sorted(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")
    return out


def _module_names(folder: Path) -> set[str]:
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    return names | {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}


def test_no_module_is_named_like_a_standard_or_installed_top_level_module():
    taken = set(sys.stdlib_module_names) | set(importlib.metadata.packages_distributions())
    clashes = {
        str(folder.relative_to(REPO) / name): name
        for folder in _code_folders()
        for name in _module_names(folder)
        if name in taken
    }
    assert clashes == {}


def test_imports_resolve_to_the_real_modules_with_every_sub_folder_on_the_path():
    """In a fresh interpreter with the packager's PYTHONPATH, ``io`` and ``ignite`` are the
    real ones and the app's modules import."""
    shadowable = sorted(
        {name for folder in _code_folders() for name in _module_names(folder)}
        & (set(sys.stdlib_module_names) | {"ignite", "monai", "torch", "pydicom", "highdicom"})
    )
    probe = (
        "import importlib, json, sys\n"
        "import apps.mammo_detect.app, monai_smalldet.metrics.froc_metric\n"
        f"names = {['io', 'ignite', *shadowable]!r}\n"
        "print(json.dumps({n: getattr(importlib.import_module(n), '__file__', None) for n in names}))\n"
    )
    path = os.pathsep.join([str(REPO), *(str(p) for p in _code_folders())])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = (REPO / "monai_smalldet", REPO / "apps")
    inside = {n: f for n, f in files.items() if f and any(Path(f).resolve().is_relative_to(o) for o in ours)}
    assert inside == {}
