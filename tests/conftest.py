"""Shared fixtures: small asymmetric mammogram-like stored values and a DICOM MG writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monai_smalldet.data.dicom_writer import write_mammogram_dicom

#: (rows, columns) of the test images: small, and not square so that axis swaps show.
TEST_SHAPE = (64, 48)


@pytest.fixture
def mg_pixels() -> np.ndarray:
    """Deterministic 12-bit stored values of shape (64, 48), brighter towards the top-left."""
    rng = np.random.default_rng(1234)
    rows, cols = TEST_SHAPE
    ramp = np.add.outer(np.linspace(3000, 500, rows), np.linspace(800, 0, cols))
    noise = rng.integers(0, 200, size=TEST_SHAPE)
    return np.clip(ramp + noise, 0, 4095).astype(np.uint16)


@pytest.fixture
def write_mg(tmp_path: Path) -> Callable[..., Path]:
    """Write a DICOM MG into ``tmp_path``: ``write_mg(name, pixels, **kwargs) -> Path``."""

    def _write(name: str, pixels: np.ndarray, **kwargs: Any) -> Path:
        kwargs.setdefault("pixel_spacing_mm", 0.07)
        kwargs.setdefault("laterality", "L")
        kwargs.setdefault("view", "CC")
        return write_mammogram_dicom(tmp_path / name, pixels, **kwargs)

    return _write


@pytest.fixture(autouse=True)
def _restore_denormal_floats():
    """The CPU engines flush denormal floats while they run (about 2x faster training) and
    restore the setting afterwards; this resets it after each test all the same, so that a
    test that sets it itself cannot leave later tests (hypothesis draws subnormal floats)
    without IEEE-754 arithmetic."""
    yield
    import torch

    torch.set_flush_denormal(False)
