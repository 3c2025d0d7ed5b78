"""Choose a checkpoint's cross-scale fusion and reporting threshold on validation images.

The network runs once per validation image (fp32, every pyramid level kept apart); every
candidate fusion of :data:`FUSION_CANDIDATES` then fuses the same per-level detections, and
its FROC is computed on the same images and lesions. The candidate with the highest
sensitivity at ``target_fpi`` false positives per image wins (ties: the higher CPM, then the
earlier candidate: the paper's WBF comes first). Its score threshold at ``target_fpi`` is the
operating point: the lowest score whose operating point has at most ``target_fpi`` FPs per
image on validation. Both are written into the checkpoint's JSON spec (``fusion``,
``operating_point``), where :meth:`MultiScaleDetector.from_checkpoint
<monai_smalldet.inference.MultiScaleDetector.from_checkpoint>`, the CLI, the bundle and the
deploy app read them.

The threshold is a validation estimate: on other data (other images, another vendor) the
false-positive rate at that threshold differs, which is why the spec records what it was
measured on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FUSION_CANDIDATES",
    "Calibration",
    "calibrate_checkpoint",
    "calibrate_outputs",
    "threshold_at_fpi",
]

log = logging.getLogger(__name__)

#: (name, kwargs) of the fusions compared; the first is the paper's WBF (iou 0.55, avg). Candidates
#: with ``weights`` of another length than the outputs' pyramid levels are skipped.
FUSION_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("wbf", {}),
    ("wbf", {"conf_type": "max"}),
    ("wbf", {"conf_type": "max", "iou_thr": 0.3}),
    ("wbf", {"conf_type": "box_and_model_avg", "iou_thr": 0.3}),
    ("wbf", {"weights": [1.0, 0.0, 0.0]}),  # the 1X level alone
    # coarse levels down-weighted: a lesion only a coarse level sees keeps half (or a quarter) of
    # its score, so the coarse levels' false positives rank below the 1X level's findings
    ("wbf", {"conf_type": "max", "iou_thr": 0.3, "weights": [1.0, 0.5, 0.25]}),
    ("wbf", {"conf_type": "max", "iou_thr": 0.3, "weights": [1.0, 0.5, 0.0]}),
    ("nms", {"iou_thr": 0.3}),
    ("nms", {"iou_thr": 0.5}),
)


def threshold_at_fpi(result: Any, fpi: float) -> float:
    """Lowest score threshold of an FROC result whose operating point has at most ``fpi`` false
    positives per image (``inf`` when even the highest-scoring prediction exceeds it)."""
    ok = (np.asarray(result.fpi) <= fpi) & np.isfinite(result.thresholds)
    return float(np.asarray(result.thresholds)[ok].min()) if ok.any() else float("inf")


def _finite_threshold(threshold: float, preds: Sequence[Mapping[str, Any]]) -> float:
    """``threshold``, or where no threshold keeps the FPI low enough (``inf``) the next float
    above every score: it reports nothing, as ``inf`` would, and stays valid JSON."""
    if math.isfinite(threshold):
        return threshold
    top = max((float(np.max(p["label_scores"])) for p in preds if len(p["label_scores"])), default=1.0)
    return float(np.nextafter(np.float32(max(top, 1.0)), np.float32(np.inf)))


@dataclass
class Calibration:
    """What :func:`calibrate_outputs` found.

    Attributes:
        fusion: ``{"name", "kwargs"}`` of the chosen fusion.
        operating_point: ``{"score_threshold", "target_fpi", "sensitivity", "cpm", "split",
            "num_images", "num_lesions", "precision"}`` measured with it.
        candidates: one row per candidate: ``{"name", "kwargs", "sensitivity", "cpm", "score_threshold"}``.
    """

    fusion: dict[str, Any]
    operating_point: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _num_levels(kwargs: Mapping[str, Any], n: int) -> bool:
    weights = kwargs.get("weights")
    return weights is None or len(weights) == n


def calibrate_outputs(
    outputs: Sequence[Any],
    items: Sequence[Mapping[str, Any]],
    target_fpi: float = 0.3,
    candidates: Sequence[tuple[str, Mapping[str, Any]]] = FUSION_CANDIDATES,
    split: str = "validation",
) -> Calibration:
    """Pick the fusion and threshold from detector outputs on validation images.

    Args:
        outputs: :class:`~monai_smalldet.inference.MultiScaleOutput` per image (``per_scale`` used).
        items: the datalist items of the same images (``box``, ``label``, ...).
        target_fpi: false positives per image of the operating point.
        candidates: ``(fusion name, kwargs)`` pairs compared.
        split: name of the split, recorded in the operating point.

    Raises:
        ValueError: no images, no lesions, or outputs and items of different lengths.
    """
    from ..fusion import get_fusion
    from ..metrics import froc

    if not outputs or len(outputs) != len(items):
        raise ValueError(f"need one output per item, got {len(outputs)} outputs for {len(items)} items.")
    num_lesions = sum(len(it.get("box") or []) for it in items)
    if num_lesions == 0:
        raise ValueError("the calibration images hold no lesion: no sensitivity can be measured.")
    rows, best = [], None
    for name, kwargs in candidates:
        if not _num_levels(kwargs, len(outputs[0].per_scale)):
            continue
        fuse = get_fusion(name, **dict(kwargs))
        preds = []
        for out in outputs:
            fused = fuse(out.per_scale, out.image_size_hw)
            preds.append({"box": fused.boxes, "label_scores": fused.scores})
        result = froc(preds, list(items), fpis=(target_fpi,), n_bootstrap=0, stratify=False)
        row = {
            "name": name,
            "kwargs": dict(kwargs),
            "sensitivity": float(result.sensitivity_at(target_fpi)),
            "cpm": float(result.cpm),
            "score_threshold": _finite_threshold(threshold_at_fpi(result, target_fpi), preds),
        }
        rows.append(row)
        log.info(
            "calibration candidate %s %s: sensitivity@%g %.3f, CPM %.3f",
            name,
            kwargs,
            target_fpi,
            row["sensitivity"],
            row["cpm"],
        )
        if best is None or (row["sensitivity"], row["cpm"]) > (best["sensitivity"], best["cpm"]):
            best = row
    if best is None:
        raise ValueError("no fusion candidate fits the number of pyramid levels of the outputs.")
    op = {
        "score_threshold": best["score_threshold"],
        "target_fpi": float(target_fpi),
        "sensitivity": best["sensitivity"],
        "cpm": best["cpm"],
        "split": split,
        "num_images": len(items),
        "num_lesions": int(num_lesions),
        "precision": "fp32",
    }
    return Calibration({"name": best["name"], "kwargs": best["kwargs"]}, op, rows)


def calibrate_checkpoint(
    checkpoint: str | os.PathLike[str],
    items: Sequence[Mapping[str, Any]],
    target_fpi: float = 0.3,
    candidates: Sequence[tuple[str, Mapping[str, Any]]] = FUSION_CANDIDATES,
    split: str = "validation",
    write: bool = True,
    **detector_kwargs: Any,
) -> Calibration:
    """Run a checkpoint on ``items`` in fp32, choose its fusion and operating point
    (:func:`calibrate_outputs`) and, with ``write``, store both in its JSON spec (atomically;
    the weights are not touched).

    Raises:
        monai_smalldet.data.dicom.MammogramReadError: an image cannot be read (named in the error).
        ValueError: see :func:`calibrate_outputs`.
    """
    from ..inference import MultiScaleDetector
    from ..networks import write_spec
    from ..transforms import LoadMammogram

    detector_kwargs.setdefault("precision", "fp32")
    detector = MultiScaleDetector.from_checkpoint(checkpoint, fusion="wbf", **detector_kwargs)
    loader = LoadMammogram()
    outputs = [detector.predict(loader(item["image"])) for item in items]
    result = calibrate_outputs(outputs, items, target_fpi, candidates, split)
    if write and detector.spec is not None:
        spec = dataclasses.replace(
            detector.spec, fusion=result.fusion, operating_point=result.operating_point
        )
        write_spec(checkpoint, spec)
        log.info(
            "wrote fusion %s and operating point %s into the spec of %s",
            result.fusion,
            result.operating_point,
            checkpoint,
        )
    return result
