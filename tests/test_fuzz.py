"""Fuzzing the DICOM reading path: regressions found so far, and a short atheris smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from monai_smalldet.data.dicom import MammogramReadError, read_mammogram

REGRESSIONS = sorted((Path(__file__).parent / "data" / "fuzz_regressions").glob("*"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzz_regressions_give_the_typed_error(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MammogramReadError) as info:
            read_mammogram(path)
    assert path.name in str(info.value)


def test_there_are_regressions():
    assert REGRESSIONS


@pytest.mark.slow
def test_atheris_smoke_run(tmp_path):
    result = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fuzz_dicom",
            "--runs",
            "300",
            "--light",
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--results",
            str(result),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    summary = json.loads(result.read_text())
    assert proc.returncode == 0 and summary["crashes"] == 0, proc.stderr[-3000:]
    assert summary["runs"] == 300
