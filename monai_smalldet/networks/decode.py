"""Raw YOLO head output -> per-image boxes, scores and labels (MONAI detector keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..runtime import configure_ultralytics_settings

__all__ = ["decode"]


def decode(
    raw: Any,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    class_labels: Sequence[int] = (1,),
) -> list[dict[str, torch.Tensor]]:
    """Decode eval-mode network output with ultralytics' NMS.

    Args:
        raw: the eval-mode output ``(y, extra)`` or ``y`` of shape (B, 4 + nc, anchors): boxes as
            centre x, centre y, width, height in input pixels, then per-class sigmoid scores.
        conf_thres: minimum score kept (low by default: FROC sweeps all scores).
        iou_thres: IoU of ultralytics' per-class NMS.
        max_det: most boxes kept per image.
        class_labels: dataset label of each network class.

    Returns:
        one dict per image with ``box`` (n, 4) float32 ``(x1, y1, x2, y2)`` input pixels
        (x = column), ``label_scores`` (n,) and ``label`` (n,) int64 dataset labels — the keys
        MONAI's ``RetinaNetDetector`` returns.

    Example:
        >>> net = build_network("n").eval()
        >>> with torch.inference_mode():
        ...     preds = decode(net(torch.rand(1, 1, 128, 128)), conf_thres=0.0)
        >>> sorted(preds[0])
        ['box', 'label', 'label_scores']
    """
    configure_ultralytics_settings()
    from ultralytics.utils.nms import non_max_suppression

    y = raw[0] if isinstance(raw, (tuple, list)) else raw
    if not isinstance(y, torch.Tensor) or y.ndim != 3:
        raise ValueError(f"expected the eval-mode head output of shape (B, 4 + nc, anchors), got {type(y)}.")
    nc = y.shape[1] - 4
    if nc != len(class_labels):
        raise ValueError(f"the head predicts {nc} classes but class_labels has {len(class_labels)}.")
    if y.shape[-1] == 6:
        # ultralytics reads a last dimension of 6 as an end-to-end model's (B, N, 6) output:
        # one more anchor of score 0 (never above conf_thres, which NMS holds to [0, 1]) keeps
        # six anchors (a few passing a score threshold) read as anchors
        y = torch.cat((y, y.new_zeros(y.shape[0], y.shape[1], 1)), dim=2)
    # max_time_img is ultralytics' wall-clock guard; a slow CPU must not silently drop boxes
    kept = non_max_suppression(
        y.float(), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, nc=nc, max_time_img=1e6
    )
    lookup = torch.as_tensor(list(class_labels), dtype=torch.int64, device=y.device)
    return [
        {"box": k[:, :4].float(), "label_scores": k[:, 4].float(), "label": lookup[k[:, 5].long()]}
        for k in kept
    ]
