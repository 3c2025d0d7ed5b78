"""Whole-image validation of the multi-scale detector as a MONAI ``SupervisedEvaluator``.

Validation runs what inference runs: each *whole* mammogram (as
:class:`~monai_smalldet.transforms.LoadMammogramd` loads it) goes through
:class:`~monai_smalldet.inferers.MultiScaleInferer` (laterality, spacing, breast crop, scale
pyramid, tiles, network, fusion), and the fused boxes, in original-image pixels, are compared
with the datalist's boxes by :class:`~monai_smalldet.metrics.FROCMetric`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from .trainer import EngineSetup

__all__ = ["DetectionEvaluator", "froc_metrics", "whole_image_collate"]


def whole_image_collate(batch: Sequence[Mapping[str, Any]], image_key: str = "image") -> dict[str, Any]:
    """Collate whole images of different sizes: a list of images and a list of their targets.

    Returns:
        ``{"image": [(1, H, W) image, ...], "targets": [item without the image, ...]}``; each
        target keeps the datalist fields (``box`` ``(x1, y1, x2, y2)`` pixels of the stored image,
        x = column; ``label``; ``lesion_size_mm``; ``lesion_type``; ``pixel_spacing_mm`` ...).
    """
    images, targets = [], []
    for item in batch:
        images.append(item[image_key])
        target = {k: v for k, v in item.items() if k != image_key}
        meta = getattr(item[image_key], "meta", {})
        if "pixel_spacing_mm" not in target and "pixel_spacing_mm" in meta:
            target["pixel_spacing_mm"] = meta["pixel_spacing_mm"]
        if "image_path" not in target and "filename_or_obj" in meta:
            target["image_path"] = str(meta["filename_or_obj"])
        targets.append(target)
    return {"image": images, "targets": targets}


def froc_metrics(
    key: str = "sensitivity@0.3",
    num_scales: int = 3,
    output_transform: Any = None,
    prefix: str = "val_froc",
    small_lesion_key: str | None = "size<10mm/sensitivity@0.3",
) -> dict[str, Any]:
    """Additional FROC metrics: each pyramid level alone and, optionally, lesions < 10 mm.

    Needs ``MultiScaleInferer(per_scale=True)`` (keys ``box_scale<i>``, ``label_scores_scale<i>``).

    Returns:
        ``{"<prefix>_scale<i>": FROCMetric(key, ...) for each level}`` plus
        ``{"<prefix>_small": FROCMetric(small_lesion_key)}`` (the paper's headline figure).
    """
    from ..metrics import FROCMetric

    kwargs: dict[str, Any] = {} if output_transform is None else {"output_transform": output_transform}
    metrics: dict[str, Any] = {
        f"{prefix}_scale{i}": FROCMetric(
            key,
            pred_box_key=f"box_scale{i}",
            pred_score_key=f"label_scores_scale{i}",
            stratify=False,
            **kwargs,
        )
        for i in range(int(num_scales))
    }
    if small_lesion_key:
        metrics[f"{prefix}_small"] = FROCMetric(small_lesion_key, **kwargs)
    return metrics


class DetectionEvaluator(EngineSetup, SupervisedEvaluator):
    """``SupervisedEvaluator`` that detects on whole images with a :class:`MultiScaleInferer`.

    ``engine.state.output`` is ``{"image": [images], "pred": [per-image dicts with "box",
    "label", "label_scores" (+ "box_scale<i>", "label_scores_scale<i>" with
    ``per_scale=True``)], "label": [per-image targets]}``; attach FROC metrics with
    ``output_transform=monai.handlers.from_engine(["pred", "label"])``.

    Args:
        device: evaluation device.
        val_data_loader: ``DataLoader(..., collate_fn=whole_image_collate)``.
        network: the detector network (evaluated in eval mode).
        inferer: a :class:`~monai_smalldet.inferers.MultiScaleInferer`.
        flush_denormal: on CPU, flush denormal floats to zero while :meth:`run` runs (see
            :class:`~monai_smalldet.engines.DetectionTrainer`).
        kwargs: further ``SupervisedEvaluator`` arguments (``key_val_metric``,
            ``additional_metrics``, ``val_handlers``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        inferer: Any,
        amp: bool = False,
        flush_denormal: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            val_data_loader=val_data_loader,
            network=network,
            inferer=inferer,
            **self._engine_kwargs(device, amp, flush_denormal, kwargs),
        )

    def _iteration(self, engine: DetectionEvaluator, batchdata: Any) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if not isinstance(batchdata, Mapping):  # a loader without whole_image_collate
            batchdata = whole_image_collate(batchdata)
        images = list(batchdata["image"])
        targets = list(batchdata["targets"])
        engine.network.eval()
        preds = engine.inferer(images, engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output = {Keys.IMAGE: images, Keys.PRED: preds, Keys.LABEL: targets}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
