"""Batch detection for the bundle's ``inference`` config: the ``monai-smalldet detect`` command."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["run_detect"]


def run_detect(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    mode: str = "tiled",
    fusion: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    backend: str = "torch",
    precision: str = "auto",
    overlay: bool = False,
    resume: bool = False,
    assume_spacing_mm: float | None = None,
) -> str:
    """Run ``monai-smalldet detect`` (one JSON per image, boxes in original pixels) and check it.

    Args:
        inputs: image files or folders (searched recursively). Output names are the paths
            relative to a given folder, so give folders when images in different folders
            share a file name.
        checkpoint: ``model.pt`` with its ``model.json`` spec beside it.
        output_dir: where the JSON files (and overlays) go.
        mode, fusion, batch_size, device, backend, precision, overlay, resume, assume_spacing_mm:
            the command's options (``fusion=None``: the checkpoint's calibrated fusion, else the
            paper's WBF; ``assume_spacing_mm=None``: an image that records no pixel spacing fails).

    Returns:
        ``output_dir``.

    Raises:
        RuntimeError: the command wrote no result.
    """
    from ..cli import main

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    argv = [
        "detect",
        *(str(i) for i in items),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(output_dir),
        "--mode",
        mode,
        "--backend",
        backend,
        "--precision",
        precision,
        "--quiet",
    ]
    if fusion:
        argv += ["--fusion", str(fusion)]
    if batch_size is not None:
        argv += ["--batch-size", str(int(batch_size))]
    if device:
        argv += ["--device", str(device)]
    if overlay:
        argv.append("--overlay")
    if resume:
        argv.append("--resume")
    if assume_spacing_mm is not None:
        argv += ["--assume-spacing-mm", str(float(assume_spacing_mm))]
    code = main(argv)
    if code != 0:
        raise RuntimeError(
            f"monai-smalldet detect failed with exit code {code} (see {output_dir}/failed.json)."
        )
    return str(output_dir)
