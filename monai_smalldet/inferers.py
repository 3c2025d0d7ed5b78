"""A MONAI ``Inferer`` around :class:`~monai_smalldet.inference.MultiScaleDetector`.

MONAI evaluators and bundle configs call ``inferer(inputs, network)``; this one runs the
multi-scale, tiled detection of each image of the batch with the given network and returns
one dict per image with the keys MONAI's detectors use (``box``, ``label``,
``label_scores``) plus ``scales`` (which pyramid levels found each box). Boxes are
``(x1, y1, x2, y2)`` pixels of each input image, x = column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.inferers import Inferer

from .inference import MultiScaleDetector

__all__ = ["MultiScaleInferer"]


class MultiScaleInferer(Inferer):
    """Inferer for ``SupervisedEvaluator(inferer=MultiScaleInferer(...))`` and bundle configs.

    Args:
        detector_kwargs: arguments of :class:`MultiScaleDetector` (``preprocessing``: the
            :class:`~monai_smalldet.transforms.Preprocessing` the model trains with; ``mode``,
            ``fusion``, ...), except the network, which comes with each call
            and runs as it is (``optimize=False`` unless given: it may still be training).
        per_scale: also return each level's own detections under ``box_scale<i>`` /
            ``label_scores_scale<i>`` (for per-scale FROC, the paper's Table 3).

    Example:
        .. code-block:: python

            inferer = MultiScaleInferer(preprocessing=Preprocessing(pixel_spacing_mm=0.28, tile_size=256))
            preds = inferer(batch["image"], network)    # list of dicts, one per image
    """

    def __init__(self, per_scale: bool = False, **detector_kwargs: Any) -> None:
        super().__init__()
        self.detector_kwargs = detector_kwargs
        self.per_scale = per_scale
        self._detector: MultiScaleDetector | None = None

    def detector(self, network: torch.nn.Module) -> MultiScaleDetector:
        """The detector for ``network`` (rebuilt only when the network object changes)."""
        if self._detector is None or self._detector.network is not network:
            params = list(network.parameters())
            device = params[0].device if params else torch.device("cpu")
            # the network may still be training: run it as it is, not a fused snapshot
            kwargs = {"device": device, "optimize": False, **self.detector_kwargs}
            self._detector = MultiScaleDetector(network, **kwargs)
        return self._detector

    def __call__(
        self, inputs: Any, network: torch.nn.Module, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Detect on every image of ``inputs``: a (B, 1, H, W) tensor / MetaTensor or a list of (1, H, W)."""
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            images: Sequence[Any] = (
                decollate_batch(inputs) if isinstance(inputs, MetaTensor) else list(inputs)
            )
        elif isinstance(inputs, Sequence):
            images = inputs
        else:
            raise ValueError(
                f"expected a (B, 1, H, W) batch or a list of (1, H, W) images, got {type(inputs)}."
            )
        was_training = network.training
        detector = self.detector(network)
        network.eval()
        try:
            outputs = []
            for image in images:
                result = detector.predict(image, **kwargs)
                fused = result.fused
                item: dict[str, Any] = {
                    "box": torch.as_tensor(fused.boxes),
                    "label": torch.as_tensor(fused.labels),
                    "label_scores": torch.as_tensor(fused.scores),
                    "scales": torch.as_tensor(fused.scales),
                }
                if self.per_scale:
                    for i, found in enumerate(result.per_scale):
                        item[f"box_scale{i}"] = torch.as_tensor(found.boxes)
                        item[f"label_scores_scale{i}"] = torch.as_tensor(found.scores)
                outputs.append(item)
            return outputs
        finally:
            network.train(was_training)

    def __repr__(self) -> str:
        args: Mapping[str, Any] = self.detector_kwargs
        return f"MultiScaleInferer({', '.join(f'{k}={v!r}' for k, v in args.items())})"
