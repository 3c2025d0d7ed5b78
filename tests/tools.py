"""System programs the tests run against (DICOM validators, servers)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """The path of the system program ``name`` (from the Debian package ``package``).

    Absent: the test fails under ``CI=true`` (``.ci/system-tools`` installs it there) and skips
    with the reason elsewhere.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def cad_and_json_findings(cad: dict, summary: dict) -> tuple[list, list]:
    """``(in the CAD SR, reported in summary.json)``: each finding as (SOP Instance UID, box
    rounded to 1/1000 px, score to 1e-4), sorted, so a test compares the two lists."""

    def key(sop: str, finding: dict) -> tuple:
        return sop, [round(v, 3) for v in finding["box"]], round(finding["score"], 4)

    expected = sorted(
        key(i["sop_instance_uid"], f) for i in summary["images"] for f in i["findings"] if f["reported"]
    )
    return sorted(key(f["sop_instance_uid"], f) for f in cad["findings"]), expected
