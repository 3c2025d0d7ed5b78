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
