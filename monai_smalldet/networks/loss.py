"""YOLO detection loss behind MONAI-style targets.

:class:`DetectionLoss` adapts ultralytics' ``v8DetectionLoss`` (task-aligned assignment, BCE
classification, CIoU box and distribution-focal losses) to the targets a MONAI detection
pipeline carries: one dict per image with ``box`` (N, 4) ``(x1, y1, x2, y2)`` pixels of the
network input, x = column, and ``label`` (N,) dataset labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from ..runtime import configure_ultralytics_settings

__all__ = ["DetectionLoss"]


class DetectionLoss:
    """Loss of a YOLOv5 network built by :func:`~monai_smalldet.networks.build_network`.

    Args:
        network: the (de-paralleled) network; its head gives strides and class count.
        box: gain of the CIoU box loss (ultralytics default 7.5).
        cls: gain of the BCE classification loss (0.5).
        dfl: gain of the distribution focal loss (1.5).
        class_labels: dataset label of each network class; class ``i`` is label
            ``class_labels[i]``. The project's datalists use label 1 for malignant, hence ``(1,)``.
        reduction: ``"sum"`` returns the per-image-mean losses times the batch size, the scale
            ultralytics' recipe (SGD, lr 0.01) is tuned for; ``"mean"`` divides by the batch size.

    Example:
        >>> net = build_network("n"); net.train()
        >>> loss_fn = DetectionLoss(net)
        >>> out = net(torch.rand(2, 1, 128, 128))
        >>> targets = [{"box": torch.tensor([[10., 20., 40., 50.]]), "label": torch.tensor([1])},
        ...            {"box": torch.zeros(0, 4), "label": torch.zeros(0, dtype=torch.long)}]
        >>> total, parts = loss_fn(out, targets)
        >>> total.backward()
    """

    def __init__(
        self,
        network: torch.nn.Module,
        box: float = 7.5,
        cls: float = 0.5,
        dfl: float = 1.5,
        class_labels: Sequence[int] = (1,),
        reduction: str = "sum",
    ) -> None:
        configure_ultralytics_settings()
        from ultralytics.utils.loss import v8DetectionLoss

        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        head = network.model[-1]
        if len(class_labels) != head.nc:
            raise ValueError(
                f"class_labels has {len(class_labels)} entries but the network has {head.nc} classes."
            )
        network.args = SimpleNamespace(box=box, cls=cls, dfl=dfl)
        self._loss = v8DetectionLoss(network)
        self.stride0 = float(head.stride[0])
        self.class_labels = tuple(int(v) for v in class_labels)
        self._label_to_class = {label: i for i, label in enumerate(self.class_labels)}
        self.reduction = reduction

    def to_yolo_batch(
        self, targets: Sequence[Mapping[str, Any]], image_hw: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Targets -> ultralytics' ``{"batch_idx", "cls", "bboxes" (normalised cx, cy, w, h)}``."""
        height, width = image_hw
        device = self._loss.device
        idx, classes, boxes = [], [], []
        for i, target in enumerate(targets):
            box = torch.as_tensor(target["box"], dtype=torch.float32, device=device).reshape(-1, 4)
            label = torch.as_tensor(target["label"], device=device).reshape(-1)
            if len(box) != len(label):
                raise ValueError(f"image {i}: {len(box)} boxes but {len(label)} labels.")
            if len(box) and not bool(((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])).all()):
                raise ValueError(
                    f"image {i}: boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box.tolist()}."
                )
            unknown = set(label.tolist()) - set(self._label_to_class)
            if unknown:
                raise ValueError(
                    f"image {i}: labels {sorted(unknown)} not in class_labels {self.class_labels}."
                )
            cls = torch.tensor(
                [self._label_to_class[int(v)] for v in label.tolist()], device=device, dtype=torch.float32
            )
            scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
            xywh = torch.stack(
                (
                    (box[:, 0] + box[:, 2]) / 2,
                    (box[:, 1] + box[:, 3]) / 2,
                    box[:, 2] - box[:, 0],
                    box[:, 3] - box[:, 1],
                ),
                dim=1,
            )
            idx.append(torch.full((len(box),), i, dtype=torch.float32, device=device))
            classes.append(cls)
            boxes.append(xywh / scale)
        return {
            "batch_idx": torch.cat(idx) if idx else torch.zeros(0, device=device),
            "cls": torch.cat(classes).view(-1, 1) if classes else torch.zeros(0, 1, device=device),
            "bboxes": torch.cat(boxes) if boxes else torch.zeros(0, 4, device=device),
        }

    def __call__(
        self, preds: Any, targets: Sequence[Mapping[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(total, {"box_loss", "cls_loss", "dfl_loss"})`` for train-mode ``preds``."""
        raw = self._loss.parse_output(preds)
        if not isinstance(raw, Mapping) or "feats" not in raw:
            raise ValueError("DetectionLoss needs the network's train-mode output (call network.train()).")
        feats = raw["feats"]
        if len(targets) != feats[0].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {feats[0].shape[0]} images.")
        image_hw = (int(feats[0].shape[2] * self.stride0), int(feats[0].shape[3] * self.stride0))
        loss, items = self._loss(raw, self.to_yolo_batch(targets, image_hw))
        total = loss.sum()
        if self.reduction == "mean":
            total = total / len(targets)
        return total, {k: v.detach() for k, v in items.items()}
