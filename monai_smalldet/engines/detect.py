"""Batch detection for the bundle's ``inference`` config: :func:`monai_smalldet.batch.detect_files`
with a detector loaded from a checkpoint (what ``monai-smalldet detect`` runs too)."""

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
    """Detect on every image of ``inputs``; one JSON per image (boxes in original pixels).

    Args:
        inputs: image files or folders (searched recursively). Output names are the paths
            relative to a given folder, so give folders when images in different folders
            share a file name.
        checkpoint: ``model.pt`` with its ``model.json`` spec beside it.
        output_dir: where the JSON files (and overlays, and ``failed.json``) go.
        mode, fusion, batch_size, device, backend, precision: how the detector runs
            (``fusion=None``: the checkpoint's calibrated fusion, else the paper's WBF).
        overlay, resume, assume_spacing_mm: see :func:`~monai_smalldet.batch.detect_files`
            (``assume_spacing_mm=None``: an image that records no pixel spacing fails).

    Returns:
        ``output_dir``.

    Raises:
        FileNotFoundError: ``inputs`` hold no image file.
        RuntimeError: no image could be processed (see ``failed.json``).
    """
    from ..batch import detect_files, expand_inputs
    from ..inference import MultiScaleDetector

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not expand_inputs(items):
        raise FileNotFoundError(f"no input images found in {[str(i) for i in items]}.")
    overrides: dict = {"mode": mode, "backend": backend, "precision": precision, "batch_size": batch_size}
    if fusion:
        overrides["fusion"] = fusion
    detector = MultiScaleDetector.from_checkpoint(checkpoint, device=device, **overrides)
    result = detect_files(
        detector,
        items,
        output_dir,
        checkpoint=checkpoint,
        overlay=overlay,
        resume=resume,
        assume_spacing_mm=assume_spacing_mm,
    )
    if not result.written:
        raise RuntimeError(
            f"no image could be processed ({len(result.failed)} failed, see {output_dir}/failed.json)."
        )
    return str(output_dir)
