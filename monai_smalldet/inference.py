"""MultiScaleDetector: one mammogram in, fused boxes in original-image pixels out.

The method of Rangarajan et al. (Sci Rep 2022) at inference time:

1. mirror right breasts (chest wall on the left), resample to the detector's pixel spacing,
   crop the breast (:mod:`monai_smalldet.transforms`);
2. build the scale pyramid (default X, 0.5X, 0.25X);
3. ``tiled`` mode: cut every level into systematic tiles and run the network on all tiles of
   all levels in batches, except those without breast (a tile across the skin line runs on
   its breast part on CPU); ``whole`` mode: run each level as one image (padded to the network
   stride), as the paper's own code did;
4. map every box back to original pixels with the one mapping function
   (:func:`~monai_smalldet.transforms.frames.tile_boxes_to_original`), merge per level the
   duplicates of overlapping tiles, and fuse the levels (:mod:`monai_smalldet.fusion`, WBF by
   default).

Boxes are ``(x1, y1, x2, y2)`` pixels of the image as given (before any flip or crop), x = column.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor

from .fusion import Detections, get_fusion, merge_tile_duplicates
from .networks import NetworkRunner, NetworkSpec, decode, load_checkpoint
from .spacing import SpacingError, read_spacing_mm
from .transforms.crop import CropBreast
from .transforms.frames import FrameRecord, map_boxes, tile_boxes_to_original
from .transforms.preprocessing import Preprocessing
from .transforms.tiling import SystematicTile
from .transforms.view import Orientation, resolve_orientation

__all__ = ["MODES", "MultiScaleDetector", "MultiScaleOutput", "cut_by_tile_border"]

log = logging.getLogger("monai_smalldet")

MODES = ("tiled", "whole")
_STRIDE = 32  # the network's largest stride: whole-image inputs are padded to a multiple of it


class _NetInput(NamedTuple):
    """One network input: a tile (possibly cropped to its breast part) or a whole level."""

    level: int  # pyramid level index
    array: np.ndarray  # (1, h, w)
    frame: FrameRecord  # input pixels -> original pixels
    origin: tuple[int, int]  # tile origin (x, y) in the level's pixels
    level_hw: tuple[int, int]  # the level's (rows, columns)
    extent: tuple[int, int]  # the tile's (rows, columns) of level pixels, without its padding
    window: FrameRecord | None  # the input inside its tile (a breast crop); None: the whole tile


class _TileFound(NamedTuple):
    """What the network found on one input, boxes already in original pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    tile_ids: np.ndarray  # the input's index within its level, per box
    cut: np.ndarray  # per box: cut by a tile border shared with another tile


def cut_by_tile_border(
    boxes: np.ndarray,
    origin_px: Sequence[int],
    tile_size: int | Sequence[int],
    level_hw: Sequence[int],
    tol: float = 0.02,
) -> np.ndarray:
    """Which boxes of one tile touch a border the tile shares with a neighbouring tile.

    Such a box may hold only part of a lesion, whose rest the neighbour sees
    (:func:`~monai_smalldet.fusion.merge_tile_duplicates` then joins the two). A border on
    the level's edge (or in the tile's padding) borders no tile and never cuts.

    Args:
        boxes: (N, 4) ``(x1, y1, x2, y2)`` in tile pixels, x = column.
        origin_px: the tile's ``(x, y)`` origin in the level's pixels.
        tile_size: tile side in pixels, or the tile's (rows, columns) of level pixels (a
            trimmed last row/column or a level smaller than a tile: without the padding).
        level_hw: (rows, columns) of the level.
        tol: how near a border counts as touching it, as a fraction of the tile's longer side.

    Returns:
        (N,) bool.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = int(origin_px[0]), int(origin_px[1])
    th, tw = (int(tile_size), int(tile_size)) if np.ndim(tile_size) == 0 else (int(v) for v in tile_size)
    h, w = int(level_hw[0]), int(level_hw[1])
    near = tol * max(th, tw)
    left = (x0 > 0) & (boxes[:, 0] <= near)
    top = (y0 > 0) & (boxes[:, 1] <= near)
    right = (x0 + tw < w) & (boxes[:, 2] >= tw - near)
    bottom = (y0 + th < h) & (boxes[:, 3] >= th - near)
    return left | top | right | bottom


@dataclass
class MultiScaleOutput:
    """What :meth:`MultiScaleDetector.predict` returns.

    Attributes:
        fused: the fused detections (original-image pixels, ``scales`` says which levels found each box).
        per_scale: the detections of each level alone, after merging overlapping tiles (the
            paper's Table 3), in original-image pixels.
        scales: the pyramid factors, in level order.
        image_size_hw: (rows, columns) of the input image.
        pixel_spacing_mm: (row, column) spacing of the input when known.
        spacing_source: where ``pixel_spacing_mm`` came from: ``"argument"``, ``"meta"`` (the
            image's metadata), ``"assumed"`` (the caller's ``assume_spacing_mm``, the image had
            none) or ``None`` (unknown; only for a detector that does not resample).
        tiles_per_scale: number of network inputs run per level.
        air_tiles_skipped: tiles of each level not run because they hold no breast.
        timings_s: wall-clock seconds per stage (``preprocess``, ``network``, ``postprocess``).
        crop_box_px: ``(x1, y1, x2, y2)`` of the input the detector kept (the breast crop), in
            input pixels (the whole image when the detector does not crop).
        orientation: the laterality and view the detector used, their sources and the header
            checks (:class:`~monai_smalldet.transforms.Orientation`).
    """

    fused: Detections
    per_scale: list[Detections]
    scales: tuple[float, ...]
    image_size_hw: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None
    tiles_per_scale: list[int] = field(default_factory=list)
    air_tiles_skipped: list[int] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    crop_box_px: tuple[float, float, float, float] | None = None
    orientation: Orientation | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary; boxes also in mm when the spacing is known; ``crop`` says what the
        breast crop kept (``box_px``) and which fraction of the image that is. With an
        :attr:`orientation`: ``laterality``, ``laterality_source``, ``view``, ``view_source``,
        ``orientation_from_pixels`` (the pixel estimates) and ``header_checks`` (a header value
        the pixels contradict, e.g. ``{"laterality": {"header": "L", "header_source":
        "ImageLaterality", "pixels": "R"}}``; ``{}`` when none does), as
        :class:`~monai_smalldet.transforms.Orientation` defines them."""
        h, w = self.image_size_hw
        crop = None
        if self.crop_box_px is not None:
            x1, y1, x2, y2 = (float(v) for v in self.crop_box_px)
            crop = {
                "box_px": [x1, y1, x2, y2],
                "fraction_kept": round((x2 - x1) * (y2 - y1) / max(1, h * w), 4),
            }
        out: dict[str, Any] = {}
        if self.orientation is not None:
            found = self.orientation.to_dict()
            found["orientation_from_pixels"] = found.pop("pixels")
            out.update(found)
        out |= {
            "crop": crop,
            "image_size_hw": list(self.image_size_hw),
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "spacing_source": self.spacing_source,
            "scales": list(self.scales),
            "tiles_per_scale": self.tiles_per_scale,
            "air_tiles_skipped": self.air_tiles_skipped,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "findings": self.fused.to_dict(scale_factors=self.scales)["detections"],
        }
        if self.pixel_spacing_mm:
            row_mm, col_mm = self.pixel_spacing_mm
            for finding in out["findings"]:
                x1, y1, x2, y2 = finding["box"]
                finding["box_mm"] = [x1 * col_mm, y1 * row_mm, x2 * col_mm, y2 * row_mm]
                finding["size_mm"] = max((x2 - x1) * col_mm, (y2 - y1) * row_mm)
        return out


def _check_options(mode: str, batch_size: int | None, tile_iou_thr: float, air_margin_px: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not 0.0 <= tile_iou_thr <= 1.0:
        raise ValueError(f"tile_iou_thr must lie in [0, 1], got {tile_iou_thr}.")
    if air_margin_px < 0:
        raise ValueError(f"air_margin_px must be >= 0, got {air_margin_px}.")


def _resolved_preprocessing(preprocessing: Preprocessing | None, **given: Any) -> Preprocessing:
    """``preprocessing`` (default: no resampling) with the ``given`` settings that are not
    ``None``; its tile size checked against the network stride."""
    base = preprocessing if preprocessing is not None else Preprocessing(pixel_spacing_mm=None)
    out = base.replace(**{k: v for k, v in given.items() if v is not None})
    if out.tile_size % _STRIDE:
        raise ValueError(
            f"tile_size must be a multiple of the network stride {_STRIDE}, got {out.tile_size}."
        )
    return out


class MultiScaleDetector:
    """Multi-scale, tiled YOLOv5 detection with cross-scale fusion (see the module docstring).

    Args:
        network: a YOLOv5 from :func:`~monai_smalldet.networks.build_network` (1-channel input).
        preprocessing: the one definition of the input's preprocessing (spacing, laterality,
            crop, scales, tile size, overlap) that the model was trained with;
            :meth:`from_checkpoint` reads it from the checkpoint's spec. ``None``: the defaults
            of :class:`~monai_smalldet.transforms.Preprocessing` without resampling. The six
            keywords below (``scales``, ``tile_size``, ``overlap``, ``target_spacing_mm``,
            ``crop_breast``, ``normalize_laterality``) override single settings of it when given
            (``None``: keep).
        scales: pyramid factors (paper: ``(1.0, 0.5, 0.25)``).
        mode: ``"tiled"`` (systematic tiles, bounded memory) or ``"whole"`` (one pass per level).
        tile_size: tile side in pixels (paper: 1024).
        overlap: tile overlap as a fraction of the tile.
        tile_edge: ``"trim"``: the last row/column of tiles of a level ends on its border and
            runs at its own size (padded to the network stride), as does a level smaller than
            a tile; ``"shift"``: every input is a whole tile, the last row/column shifted back
            inside the level (SAHI's layout). Trimming computes fewer pixels
            (:class:`~monai_smalldet.transforms.TileGrid`).
        batch_size: tiles per network call, across levels; ``None``: 1 on CPU (batching is
            slower on a few-core CPU, ``benchmarks/speed.py``), 16 on CUDA.
        fusion: name of the cross-scale fusion (``wbf``, ``nms``, ``soft_nms``, ``concat``).
        fusion_kwargs: arguments of the fusion (e.g. ``iou_thr``, ``weights``, ``conf_type``).
        tile_iou_thr: overlap above which one level's boxes from overlapping tiles merge into
            their union: IoU, or intersection over the smaller box when that box touches a
            border shared with another tile (:func:`~monai_smalldet.fusion.merge_tile_duplicates`).
        conf_thres: lowest score decoded (low: FROC sweeps every score).
        iou_thres: IoU of the network's own NMS per tile.
        max_det: most boxes per tile.
        class_labels: dataset label of each network class.
        target_spacing_mm: resample inputs to this spacing first (the spacing the network was
            trained at). To turn resampling off on a given ``preprocessing``, pass
            ``preprocessing.replace(pixel_spacing_mm=None)``.
        crop_breast: crop away the air before the pyramid.
        normalize_laterality: mirror right breasts first (as in training).
        device: ``"cpu"``, ``"cuda"``, a :class:`torch.device`; ``None`` picks CUDA when present.
        amp: allow reduced precision when ``precision="auto"`` (``False``: fp32).
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32),
            ``"fp32"``, ``"bf16"``, ``"fp16"``.
        backend: ``"torch"`` or ``"onnxruntime"`` (:class:`~monai_smalldet.networks.NetworkRunner`).
        optimize: run a fused (Conv+BN), ``channels_last`` copy of the network. ``False`` runs
            ``network`` itself (as the validation of a network still in training must).
        skip_air_tiles: skip tiles in which the breast mask has no pixel (never computed on air).
        crop_tiles_to_breast: run each tile on the part of it that holds breast (its bounding
            box in the breast mask, widened by ``air_margin_px`` of air, on the tile's stride
            grid): a tile across the skin line computes little air. ``None``: on CPU only
            (on CUDA, inputs of one size batch better). Needs ``skip_air_tiles``.
        air_margin_px: air kept around the breast in a cropped tile, in the level's pixels.
        copy_network: with ``optimize``, fold Conv+BN into a copy of ``network`` (default) or
            into ``network`` itself when nothing else uses it (:meth:`from_checkpoint` does:
            it saves a copy of the model at start-up).

    Example:
        .. code-block:: python

            detector = MultiScaleDetector.from_checkpoint("bundle/models/model.pt")
            image = LoadMammogram()("study/L_CC.dcm")       # (1, H, W) MetaTensor
            found = detector(image)                          # Detections in original pixels
            found.boxes, found.scores, found.scales
    """

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        preprocessing: Preprocessing | None = None,
        scales: Sequence[float] | None = None,
        mode: str = "tiled",
        tile_size: int | None = None,
        overlap: float | None = None,
        tile_edge: str = "trim",
        batch_size: int | None = None,
        fusion: str = "wbf",
        fusion_kwargs: Mapping[str, Any] | None = None,
        tile_iou_thr: float = 0.5,
        conf_thres: float = 0.001,
        iou_thres: float = 0.6,
        max_det: int = 300,
        class_labels: Sequence[int] = (1,),
        target_spacing_mm: float | None = None,
        crop_breast: bool | None = None,
        normalize_laterality: bool | None = None,
        device: str | torch.device | None = None,
        amp: bool = True,
        precision: str = "auto",
        backend: str = "torch",
        optimize: bool = True,
        skip_air_tiles: bool = True,
        copy_network: bool = True,
        crop_tiles_to_breast: bool | None = None,
        air_margin_px: int = 32,
    ) -> None:
        _check_options(mode, batch_size, tile_iou_thr, air_margin_px)
        self.preprocessing = _resolved_preprocessing(
            preprocessing,
            scales=scales,
            tile_size=tile_size,
            tile_overlap=overlap,
            pixel_spacing_mm=target_spacing_mm,
            crop_breast=crop_breast,
            normalize_laterality=normalize_laterality,
        )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        self.mode = mode
        on_cuda = self.device.type == "cuda"
        self.batch_size = int(batch_size if batch_size is not None else (16 if on_cuda else 1))
        self.laterality, self.resample, self.crop, self.pyramid = self.preprocessing.array_transforms()
        self.scales = self.pyramid.scales
        self.tiler = SystematicTile(
            tile_size=self.preprocessing.tile_size,
            overlap=self.preprocessing.tile_overlap,
            edge=tile_edge,
            pad_multiple=_STRIDE if tile_edge == "trim" else None,
        )
        self.fusion_name = fusion
        self.fusion_kwargs = dict(fusion_kwargs or {})
        self.fusion = get_fusion(fusion, **self.fusion_kwargs)
        self.tile_iou_thr = float(tile_iou_thr)
        labels = tuple(class_labels)
        self.decode_kwargs = dict(
            conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, class_labels=labels
        )
        self.amp = bool(amp) and self.device.type == "cuda"
        self.runner = NetworkRunner(
            self.network,
            self.device,
            backend=backend,
            precision=precision if amp or precision != "auto" else "fp32",
            optimize=optimize,
            copy_network=copy_network,
        )
        self.skip_air_tiles = bool(skip_air_tiles)
        crop_tiles = self.device.type == "cpu" if crop_tiles_to_breast is None else crop_tiles_to_breast
        self.crop_tiles_to_breast = bool(crop_tiles) and self.skip_air_tiles
        self.air_margin_px = int(air_margin_px)
        self._mask = self.crop if self.crop is not None else CropBreast()
        self.spec: NetworkSpec | None = None  # set by from_checkpoint

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device | None = None, **overrides: Any
    ) -> MultiScaleDetector:
        """Load a checkpoint and take its preprocessing (:meth:`Preprocessing.from_spec
        <monai_smalldet.transforms.Preprocessing.from_spec>`: spacing, laterality, crop, scales,
        tile size, overlap), class labels and fusion from its spec.

        Every setting can be overridden by keyword. The spec's fusion (chosen on validation by
        :func:`~monai_smalldet.engines.calibrate_checkpoint`) applies unless ``fusion`` is given;
        a ``fusion`` given without ``fusion_kwargs`` takes that fusion's own defaults. The
        spec's reporting threshold is :attr:`score_threshold`.
        """
        device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        network, spec = load_checkpoint(path, map_location=device)
        kwargs: dict[str, Any] = {
            "preprocessing": Preprocessing.from_spec(spec),
            "class_labels": spec.class_labels,
        }
        if spec.fusion and "fusion" not in overrides:
            kwargs["fusion"] = spec.fusion["name"]
            kwargs["fusion_kwargs"] = dict(spec.fusion.get("kwargs") or {})
        kwargs.update(overrides)
        kwargs.setdefault("copy_network", False)  # the network loaded here serves this detector only
        detector = cls(network, device=device, **kwargs)
        detector.spec = spec
        return detector

    @property
    def score_threshold(self) -> float | None:
        """Reporting threshold of the checkpoint's calibrated operating point (``None``: none).

        It was chosen for the spec's fusion; with another fusion it does not apply (``None``).
        """
        if self.spec is None or self.spec.score_threshold is None:
            return None
        chosen = self.spec.fusion or {"name": "wbf", "kwargs": {}}
        same = chosen["name"] == self.fusion_name and dict(chosen.get("kwargs") or {}) == self.fusion_kwargs
        return self.spec.score_threshold if same else None

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _as_image(image: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """(1, H, W) float32 numpy view of ``image`` and its metadata (if a MetaTensor)."""
        meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
        if isinstance(image, torch.Tensor):
            array = image.detach().cpu().numpy()
        else:
            array = np.asarray(image)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != 1:
            raise ValueError(f"expected a (H, W) or (1, H, W) image, got shape {tuple(array.shape)}.")
        if array.shape[1] < 1 or array.shape[2] < 1:
            raise ValueError(f"empty image of shape {tuple(array.shape)}.")
        return np.ascontiguousarray(array, dtype=np.float32), meta

    def _spacing(
        self, meta: Mapping[str, Any], given: Any, assume: Any, shape: tuple[int, ...]
    ) -> tuple[tuple[float, float] | None, str | None]:
        """``(spacing, source)`` of an input (see :attr:`MultiScaleOutput.spacing_source`).

        A spacing passed as an argument must be valid. A resampling detector given an image
        whose spacing is missing or invalid in its metadata (or only the reader's default:
        ``meta["spacing_source"] == "default"``) runs at ``assume`` when the caller
        gave one and raises :class:`SpacingError` otherwise: it never skips the resampling.
        """
        if given is not None:
            return read_spacing_mm(given), "argument"
        # a spacing the reader only assumed (the file records none) does not count as known
        found = meta.get("pixel_spacing_mm") if meta.get("spacing_source") != "default" else None
        try:
            return read_spacing_mm(found), "meta"
        except SpacingError as err:
            problem = err
        if self.resample is None:
            return None, None
        if assume is not None:
            return read_spacing_mm(assume), "assumed"
        what = "no pixel spacing" if found is None else f"an invalid pixel spacing ({problem})"
        raise SpacingError(
            f"the image of shape {shape} has {what}; the detector resamples to "
            f"{self.resample.target_spacing_mm[0]} mm: pass pixel_spacing_mm, or assume_spacing_mm "
            "to run at an assumed spacing (recorded in the output)."
        )

    def _run_network(self, batch: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Run the network on same-size (1, h, w) inputs; decoded boxes in input pixels."""
        x = torch.from_numpy(np.stack(batch))
        raw = self.runner(x, min_score=self.decode_kwargs["conf_thres"])
        return decode(raw, **self.decode_kwargs)

    @staticmethod
    def _tile_mask(
        mask: np.ndarray, step: int, tile: Any, extent: tuple[int, int], work_frame: FrameRecord
    ) -> tuple[np.ndarray, int, int]:
        """The cells of ``mask`` (breast mask of the cropped level-1.0 image, frame
        ``work_frame``, subsampled by ``step``) under the ``extent = (rows, columns)`` of
        ``tile``, widened by one cell (conservative), and the (row, column) of its first cell."""
        footprint = np.array([[0.0, 0.0, float(extent[1]), float(extent[0])]], np.float32)
        in_work = np.asarray(map_boxes(map_boxes(footprint, tile.frame, "xy"), work_frame.inverse(), "xy"))[0]
        x0, x1 = sorted((float(in_work[0]), float(in_work[2])))
        y0, y1 = sorted((float(in_work[1]), float(in_work[3])))
        r0, c0 = max(0, math.floor(y0 / step) - 1), max(0, math.floor(x0 / step) - 1)
        r1, c1 = math.ceil(y1 / step) + 1, math.ceil(x1 / step) + 1
        return mask[r0:r1, c0:c1], r0, c0

    def _breast_window(
        self,
        cells: np.ndarray,
        r0: int,
        c0: int,
        step: int,
        tile: Any,
        shape: tuple[int, int],
        work_frame: FrameRecord,
    ) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the part of a tile (an input of ``shape`` rows, columns) that
        holds its breast cells (from :meth:`_tile_mask`, each widened by one cell) plus
        ``air_margin_px``, starting and ending on the network stride."""
        rows, cols = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
        box = np.array(
            [
                [
                    (c0 + cols[0] - 1) * step,
                    (r0 + rows[0] - 1) * step,
                    (c0 + cols[-1] + 2) * step,
                    (r0 + rows[-1] + 2) * step,
                ]
            ],
            np.float32,
        )
        in_tile = np.asarray(map_boxes(map_boxes(box, work_frame, "xy"), tile.frame.inverse(), "xy"))[0]
        x0, x1 = sorted((float(in_tile[0]), float(in_tile[2])))
        y0, y1 = sorted((float(in_tile[1]), float(in_tile[3])))
        m = self.air_margin_px
        top = min(shape[0], max(0, math.floor((y0 - m) / _STRIDE) * _STRIDE))
        left = min(shape[1], max(0, math.floor((x0 - m) / _STRIDE) * _STRIDE))
        bottom = max(top, min(shape[0], math.ceil((y1 + m) / _STRIDE) * _STRIDE))
        right = max(left, min(shape[1], math.ceil((x1 + m) / _STRIDE) * _STRIDE))
        return top, bottom, left, right

    # -- the call ---------------------------------------------------------------------------
    def predict(
        self,
        image: Any,
        *,
        laterality: str | None = None,
        view: str | None = None,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        assume_spacing_mm: float | Sequence[float] | None = None,
        image_meta: Mapping[str, Any] | None = None,
    ) -> MultiScaleOutput:
        """Detect on one image: a (H, W)/(1, H, W) array or tensor, or a MetaTensor from
        :class:`~monai_smalldet.transforms.LoadMammogram` (laterality, view and spacing from its
        meta). ``image_meta`` is the reader's metadata of a plain array
        (:meth:`MammogramMeta.to_dict() <monai_smalldet.data.dicom.MammogramMeta.to_dict>`),
        used like a MetaTensor's meta (and over it).

        The spacing is ``pixel_spacing_mm``, else the metadata's ``pixel_spacing_mm``, else
        (missing or invalid there) ``assume_spacing_mm``; the output says which
        (``spacing_source``). The laterality and view are the arguments, else the metadata's,
        else estimated from the pixels; a pixel estimate that contradicts them is reported in
        the output (``header_checks``) and logged as a warning naming the file, never used in
        their place (:func:`~monai_smalldet.transforms.resolve_orientation`).

        Raises:
            SpacingError: a detector that resamples got an image of unknown spacing and no
                ``assume_spacing_mm``, or an invalid ``pixel_spacing_mm``.
        """
        t0 = time.perf_counter()
        img, meta = self._as_image(image)
        meta.update(image_meta or {})
        height, width = img.shape[1:]
        spacing, spacing_source = self._spacing(meta, pixel_spacing_mm, assume_spacing_mm, tuple(img.shape))
        orientation = self._orientation(img, meta, laterality, view)
        work, frame = self._preprocess(img, orientation.laterality, spacing)
        levels = self.pyramid(work, frame=frame)
        inputs, skipped = self._network_inputs(work, frame, levels)
        t1 = time.perf_counter()
        found = self._run_inputs(inputs, len(levels))
        t2 = time.perf_counter()
        per_scale = [self._level_detections(parts, i, len(levels)) for i, parts in enumerate(found)]
        fused = self.fusion(per_scale, (height, width))
        t3 = time.perf_counter()
        return MultiScaleOutput(
            fused=fused,
            per_scale=per_scale,
            scales=self.scales,
            image_size_hw=(int(height), int(width)),
            pixel_spacing_mm=spacing,
            spacing_source=spacing_source,
            tiles_per_scale=[sum(1 for item in inputs if item.level == i) for i in range(len(levels))],
            air_tiles_skipped=skipped,
            timings_s={"preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0},
            crop_box_px=self._kept_box(work, frame),
            orientation=orientation,
        )

    @staticmethod
    def _orientation(img: np.ndarray, meta: Mapping[str, Any], laterality: Any, view: Any) -> Orientation:
        """The laterality and view of ``img``: the arguments (source ``"argument"``), else the
        metadata's, else the pixels'; disagreements logged as a warning that names the file."""
        found = resolve_orientation(
            img,
            laterality if laterality is not None else meta.get("laterality"),
            view if view is not None else meta.get("view"),
            laterality_source="argument" if laterality is not None else meta.get("laterality_source"),
            view_source="argument" if view is not None else meta.get("view_source"),
        )
        if found.header_checks:
            name = meta.get("filename_or_obj") or meta.get("path") or f"image of shape {tuple(img.shape)}"
            log.warning("%s: %s; the header's values are kept", name, found.describe_checks())
        return found

    @staticmethod
    def _kept_box(work: Any, frame: FrameRecord) -> tuple[float, float, float, float]:
        """The extent of the preprocessed image in input pixels (the breast crop's box)."""
        rows, cols = int(work.shape[-2]), int(work.shape[-1])
        box = np.asarray(map_boxes(np.array([[0.0, 0.0, cols, rows]], np.float32), frame, "xy"))[0]
        return (
            float(min(box[0], box[2])),
            float(min(box[1], box[3])),
            float(max(box[0], box[2])),
            float(max(box[1], box[3])),
        )

    def _preprocess(
        self, img: np.ndarray, side: Any, spacing: tuple[float, float] | None
    ) -> tuple[Any, FrameRecord]:
        """Laterality, resampling and breast crop: the image the pyramid is built from and its
        frame (its pixels -> original pixels)."""
        frame = FrameRecord.identity(*img.shape[1:])
        work: Any = img
        if self.laterality is not None:
            work, _, frame = self.laterality(work, frame=frame, laterality=side)
        if self.resample is not None and spacing is not None:
            work, _, frame = self.resample(work, frame=frame, pixel_spacing_mm=spacing)
        if self.crop is not None:
            work, _, frame = self.crop(work, frame=frame)
        return work, frame

    def _network_inputs(
        self, work: Any, frame: FrameRecord, levels: Sequence[Any]
    ) -> tuple[list[_NetInput], list[int]]:
        """Every network input of every level, and per level the tiles not run (no breast)."""
        inputs: list[_NetInput] = []
        mask, step = None, 1
        if self.mode == "tiled" and self.skip_air_tiles:
            mask, step = self._mask.breast_mask_lowres(work)
        skipped = [0] * len(levels)
        for level in levels:
            if self.mode != "tiled":
                lvl = np.asarray(level.image)
                h, w = lvl.shape[1:]
                ph, pw = math.ceil(h / _STRIDE) * _STRIDE, math.ceil(w / _STRIDE) * _STRIDE
                if (ph, pw) != (h, w):
                    padded = np.zeros((1, ph, pw), np.float32)
                    padded[:, :h, :w] = lvl
                    lvl = padded
                inputs.append(_NetInput(level.level, lvl, level.frame, (0, 0), (h, w), (h, w), None))
                continue
            level_hw = tuple(np.asarray(level.image).shape[1:])
            for tile in self.tiler(level.image, frame=level.frame, scale=level.scale, level=level.level):
                arr = np.asarray(tile.image)
                extent = (arr.shape[1] - tile.pad_px[1], arr.shape[2] - tile.pad_px[0])
                input_frame, window = tile.frame, None  # window: input pixels -> tile pixels
                if mask is not None:
                    cells, r0, c0 = self._tile_mask(mask, step, tile, extent, frame)
                    if not cells.any():  # no breast pixel: never computed on air
                        skipped[level.level] += 1
                        continue
                    if self.crop_tiles_to_breast:
                        top, bottom, left, right = self._breast_window(
                            cells, r0, c0, step, tile, arr.shape[1:], frame
                        )
                        if bottom <= top or right <= left:  # its breast cells lie beyond it
                            skipped[level.level] += 1
                            continue
                        arr = arr[:, top:bottom, left:right]
                        window = FrameRecord.translation(left, top)
                        input_frame = tile.frame.compose(window)
                inputs.append(
                    _NetInput(level.level, arr, input_frame, tile.origin_px, level_hw, extent, window)
                )
        return inputs, skipped

    def _run_inputs(self, inputs: Sequence[_NetInput], num_levels: int) -> list[list[_TileFound]]:
        """Run the network on ``inputs`` (same-size batches); per level, per input, its boxes in
        original pixels with scores, labels, the input's index and the tile-border cut flags."""
        found: list[list[_TileFound]] = [[] for _ in range(num_levels)]
        if self.mode == "tiled":
            # batches of same-size inputs (trimmed edge tiles and small levels are smaller)
            by_size: dict[tuple[int, ...], list[_NetInput]] = {}
            for item in inputs:
                by_size.setdefault(item.array.shape, []).append(item)
            chunks = [
                group[i : i + self.batch_size]
                for group in by_size.values()
                for i in range(0, len(group), self.batch_size)
            ]
        else:
            chunks = [[item] for item in inputs]  # levels differ in size: one at a time
        for chunk in chunks:
            decoded = self._run_network([item.array for item in chunk])
            for item, pred in zip(chunk, decoded, strict=True):
                input_boxes = pred["box"].cpu().numpy()
                boxes = tile_boxes_to_original(input_boxes, item.frame)
                # the tile-border test works in the pixels of the whole tile
                tile_boxes = (
                    input_boxes
                    if item.window is None
                    else np.asarray(map_boxes(input_boxes, item.window, "xy"))
                )
                cut = (
                    cut_by_tile_border(tile_boxes, item.origin, item.extent, item.level_hw)
                    if self.mode == "tiled"
                    else np.zeros(len(tile_boxes), dtype=bool)
                )
                tile_id = np.full(len(tile_boxes), len(found[item.level]), dtype=np.int64)
                found[item.level].append(
                    _TileFound(
                        boxes, pred["label_scores"].cpu().numpy(), pred["label"].cpu().numpy(), tile_id, cut
                    )
                )
        return found

    def _level_detections(self, parts: Sequence[_TileFound], level_idx: int, num_levels: int) -> Detections:
        """One level's detections: its inputs' boxes, empty ones dropped, tile duplicates merged."""
        boxes = np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4)
        scores = np.concatenate([p.scores for p in parts]).astype(np.float32).reshape(-1)
        labels = np.concatenate([p.labels for p in parts]).astype(np.int64).reshape(-1)
        tile_ids = np.concatenate([p.tile_ids for p in parts]).reshape(-1)
        cut = np.concatenate([p.cut for p in parts]).reshape(-1)
        # boxes clipped to nothing lay in a tile's padding or outside the image
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        if self.mode == "tiled" and len(parts) > 1 and len(boxes):
            boxes, scores, labels = merge_tile_duplicates(
                boxes, scores, labels, tile_ids=tile_ids[valid], cut=cut[valid], thr=self.tile_iou_thr
            )
        in_level = np.zeros((len(boxes), num_levels), dtype=bool)
        in_level[:, level_idx] = True
        return Detections(boxes, scores, labels, in_level).sorted()

    def __call__(self, image: Any, **kwargs: Any) -> Detections:
        """The fused detections of :meth:`predict`."""
        return self.predict(image, **kwargs).fused
