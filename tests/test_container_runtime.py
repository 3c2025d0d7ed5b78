"""The MAP's runtime without what its base image lacks: holoscan-cli 4.2's base image has no
``libGL.so.1``, which the GUI build of OpenCV (``opencv-python``) links. The package depends on
``ultralytics-opencv-headless`` (the same ``ultralytics`` code, with ``opencv-python-headless``),
so nothing it imports needs libGL. The test masks libGL the way a container lacks it: in a
private mount namespace, ``/dev/null`` is bind-mounted over the library file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _libgl_files() -> list[str]:
    proc = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=60)
    found = {line.split("=>")[-1].strip() for line in proc.stdout.splitlines() if "libGL.so.1 " in line}
    return sorted(os.path.realpath(p) for p in found)


def _requirement_closure(names: list[str]) -> set[str]:
    """Distributions that installing ``names`` pulls in, from the installed packages' metadata
    (markers evaluated here, extras not followed)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower().replace("_", "-"))
    return seen


def test_nothing_the_map_installs_pulls_the_gui_opencv():
    """The MAP's requirements and the package's own dependencies, followed through the
    installed metadata: OpenCV only as ``opencv-python-headless``. (The ``benchmark`` extra's
    sahi pulls ``opencv-python``: a benchmark environment only.)"""
    import re

    listed = []
    for line in (REPO / "apps" / "mammo_detect" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            listed.append(re.split(r"[<>=!~ \[]", line, maxsplit=1)[0])
    closure = _requirement_closure([*listed, "monai-smalldet"])
    assert "opencv-python-headless" in closure and "ultralytics-opencv-headless" in closure
    assert not {"opencv-python", "ultralytics"} & closure


@pytest.mark.slow
def test_the_app_runs_with_libgl_masked(tmp_path):
    from monai_smalldet.data.dicom_writer import write_mammogram_dicom
    from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint

    inp = tmp_path / "in"
    pixels = np.full((160, 128), 900, np.uint16)
    pixels[40:120, :90] = 2000
    write_mammogram_dicom(inp / "L_CC.dcm", pixels, pixel_spacing_mm=0.5, laterality="L", view="CC")
    torch.manual_seed(0)
    spec = NetworkSpec(
        tile_size_px=128,
        pixel_spacing_mm=0.5,
        scales=(1.0, 0.5),
        operating_point={"score_threshold": 0.25, "target_fpi": 0.3, "split": "validation"},
    )
    save_checkpoint(tmp_path / "model" / "model.pt", build_network("n"), spec)
    libs = _libgl_files()
    mounts = " && ".join(f"mount --bind /dev/null {lib}" for lib in libs) or "true"
    probe = "import ctypes\ntry:\n    ctypes.CDLL('libGL.so.1')\nexcept OSError:\n    print('libGL masked')\n"
    app = f"{sys.executable} -m apps.mammo_detect -i {inp} -o {tmp_path / 'out'} -m {tmp_path / 'model'}"
    script = f"{mounts} && {sys.executable} -c \"{probe}\" && {sys.executable} -c 'import cv2' && {app}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 and ("unshare" in proc.stderr or "mount:" in proc.stderr):
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()[:300]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "libGL masked" in proc.stdout or not libs
    run = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert run["num_images"] == 1 and run["num_failed"] == 0
