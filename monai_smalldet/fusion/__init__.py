"""Cross-scale fusion of detections in original-image pixels.

Step 5 of Rangarajan et al., *Ultra-high resolution, multi-scale, context-aware approach
for detection of small cancers on mammography* (Sci Rep 2022): every scale of the pyramid
(X, 0.5X, 0.25X) yields boxes that are already mapped back to original-image pixels; the
boxes found twice in overlapping tiles of one scale are de-duplicated
(:func:`merge_overlapping_tiles`), then the scales are fused, by default with Weighted
Box Fusion (Solovyev et al., *Weighted boxes fusion: ensembling boxes from different
object detection models*, Image and Vision Computing 2021) as the paper did, through the
``ensemble-boxes`` package (``iou_thr=0.55, skip_box_thr=0.0, conf_type='avg'``): here
:func:`weighted_boxes_fusion` gives ensemble-boxes' results to the bit, faster, with the
scales of every cluster.

The fusion strategies sit behind one callable interface and a name -> class registry,
as in SAHI's ``sahi/postprocess/combine.py``, so that a config can choose one by name::

    fusion = get_fusion("wbf", iou_thr=0.55)
    fused = fusion([dets_x, dets_half, dets_quarter], image_size_hw=(4096, 3328))

Conventions of this module (it sees boxes only: no network, inference or transform code):

- a box is ``(x1, y1, x2, y2)`` in **original-image pixels**, ``x`` = column, ``y`` = row,
  ``x2``/``y2`` exclusive edges, so a box lies inside an image of size ``(H, W)`` when
  ``0 <= x1 <= x2 <= W`` and ``0 <= y1 <= y2 <= H``;
- ``image_size_hw`` is ``(H, W)`` = (rows, columns), the order of the image array's shape;
- scores are detector confidences in ``[0, 1]``; labels are dataset labels (e.g.
  ``1`` = malignant), integers;
- numpy or torch goes in, numpy ``float32`` boxes/scores and ``int64`` labels come out.


The package's modules: :mod:`.detections` (the container), :mod:`.tile_merge` (one level's
tile duplicates), :mod:`.wbf` (Weighted Box Fusion), :mod:`.registry` (interface, registry),
:mod:`.strategies` (the registered fusions).
"""

from __future__ import annotations

from .detections import Detections
from .registry import FUSIONS, Fusion, get_fusion, register_fusion
from .strategies import ConcatFusion, NMSFusion, SoftNMSFusion, WBFFusion
from .tile_merge import MATCH_METRICS, box_ios, merge_overlapping_tiles, merge_tile_duplicates
from .wbf import weighted_boxes_fusion

__all__ = [
    "FUSIONS",
    "MATCH_METRICS",
    "ConcatFusion",
    "Detections",
    "Fusion",
    "NMSFusion",
    "SoftNMSFusion",
    "WBFFusion",
    "box_ios",
    "get_fusion",
    "merge_overlapping_tiles",
    "merge_tile_duplicates",
    "register_fusion",
    "weighted_boxes_fusion",
]
