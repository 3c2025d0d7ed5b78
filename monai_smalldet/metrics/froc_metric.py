"""Ignite metric for the box-based FROC, usable as a MONAI evaluator's ``key_val_metric``."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from .froc import (
    DEFAULT_FPIS,
    FROCOptions,
    FROCResult,
    ImageMatch,
    MatchKeys,
    UndefinedSensitivityWarning,
    froc_from_matches,
    match_images,
    split_froc_fields,
)

__all__ = ["FROCMetric"]

_KEY = re.compile(
    r"^(?:(?P<stratum>[^/]+)/)?(?:(?P<stat>sensitivity|sensitivity_step)@(?P<fpi>[0-9.eE+-]+)|cpm)$"
)


def _identity(x: Any) -> Any:
    return x


def _per_image(x: Any) -> list[Any]:
    """A single image's entry (a mapping) or a batch (a sequence of entries) -> list."""
    if isinstance(x, Mapping):
        return [x]
    return list(x)


class FROCMetric(Metric):
    """Box-based FROC over an epoch (rules of :mod:`monai_smalldet.metrics.froc`).

    ``update`` receives, after ``output_transform``, a pair ``(y_pred, y)``, each a list of
    per-image entries (a single mapping counts as one image):

    * ``y_pred[i]``: a mapping with ``pred_box_key`` -> (N, 4) boxes ``(x1, y1, x2, y2)`` in
      pixels (x = column) and ``pred_score_key`` -> (N,) scores, as MONAI's
      ``RetinaNetDetector`` outputs them (``box`` / ``label_scores`` after
      ``set_target_keys(box_key="box", label_key="label")``), or a ``(boxes, scores)`` pair;
    * ``y[i]``: a mapping with ``gt_box_key`` -> (M, 4) lesion boxes and optionally
      ``lesion_size_mm``, ``lesion_type``, ``pixel_spacing_mm`` and ``image_id_key``.

    With MONAI's decollated engine output (a list of per-image dicts) use, e.g.,
    ``output_transform=monai.handlers.from_engine(["pred", "label"])`` when predictions and
    labels are nested dicts, or ``output_transform=lambda out: (out, out)`` with distinct
    flat keys (``pred_box_key="pred_box"``, ``pred_score_key="pred_score"``, ``gt_box_key="box"``).

    ``compute`` returns the value selected by ``key``:

    * ``"sensitivity@F"``: sensitivity at ``F`` FPI, **interpolated** along the curve (the
      default ``"sensitivity@0.3"``; smooth in the scores, so better to select checkpoints
      than the step value, and the definition the CPM uses);
    * ``"sensitivity_step@F"``: the conservative step value at ``F`` FPI;
    * ``"cpm"``: mean interpolated sensitivity at 1/8 ... 8 FPI;
    * any of these prefixed by a stratum, e.g. ``"size<10mm/sensitivity@0.3"`` (the paper's
      headline figure) or ``"type=mass/cpm"``; an absent stratum gives NaN with a warning.

    The whole result is kept as :attr:`last_result` (a :class:`FROCResult`) and, on the
    engine, as ``engine.state.froc_details[name]``. It is not put in
    ``engine.state.metric_details``, whose per-image arrays MONAI's ``MetricsSaver`` expects.

    Distributed: each rank matches its own images; ``compute`` gathers the per-image matches
    of all ranks with ``ignite.distributed.all_gather`` (object gathering, gloo or NCCL), so
    every rank returns the same value. A ``DistributedSampler`` that pads the dataset repeats
    images; give ``image_id_key`` to count every image id once.

    Args:
        key: the value ``compute`` returns (see above).
        fpis: FPIs reported in :attr:`last_result` (the FPI of ``key`` is added).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        keys: where the per-image mappings keep boxes, scores, sizes, types, spacing
            (:class:`~monai_smalldet.metrics.MatchKeys`).
        options: strata and bootstrap (:class:`~monai_smalldet.metrics.FROCOptions`; here
            ``n_bootstrap`` defaults to 0: no intervals per ``compute``).
        fields: any field of ``MatchKeys`` or ``FROCOptions`` (e.g. ``pred_score_key=...``,
            ``stratify=False``), replacing that of ``keys`` / ``options``.
        image_id_key: key of the ground-truth (or prediction) mapping holding an image id;
            later entries with an id already seen are dropped.
        device: where ignite keeps the metric (the matching itself runs on CPU numpy).

    Example:
        >>> from ignite.engine import Engine
        >>> metric = FROCMetric("sensitivity@0.3")
        >>> engine = Engine(lambda e, batch: batch)  # batch: (list of preds, list of labels)
        >>> metric.attach(engine, "froc")  # then engine.state.metrics["froc"]
    """

    def __init__(
        self,
        key: str = "sensitivity@0.3",
        fpis: Sequence[float] = DEFAULT_FPIS,
        output_transform: Callable[[Any], Any] = _identity,
        *,
        keys: MatchKeys | None = None,
        options: FROCOptions | None = None,
        image_id_key: str | None = None,
        device: str | torch.device = "cpu",
        **fields: Any,
    ) -> None:
        match = _KEY.match(key)
        if match is None:
            raise ValueError(
                f"key must be '[stratum/]sensitivity@<fpi>', '[stratum/]sensitivity_step@<fpi>' or "
                f"'[stratum/]cpm', got {key!r}."
            )
        self.key = key
        self._stratum = match.group("stratum")
        self._stat = match.group("stat") or "cpm"
        self._key_fpi = float(match.group("fpi")) if match.group("fpi") else None
        fpis_t = tuple(float(f) for f in fpis)
        if self._key_fpi is not None and self._key_fpi not in fpis_t:
            fpis_t = tuple(sorted(fpis_t + (self._key_fpi,)))
        self.fpis = fpis_t
        key_fields, option_fields = split_froc_fields(fields)
        self.keys = dataclasses.replace(keys or MatchKeys(), **key_fields)
        self.options = dataclasses.replace(options or FROCOptions(n_bootstrap=0), **option_fields)
        self.image_id_key = image_id_key
        self.last_result: FROCResult | None = None
        self._matches: list[ImageMatch] = []
        self._ids: list[Any] = []
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._matches = []
        self._ids = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        if not isinstance(output, Sequence) or len(output) != 2:
            raise ValueError("FROCMetric expects (y_pred, y) after output_transform.")
        y_pred, y = _per_image(output[0]), _per_image(output[1])
        self._matches.extend(match_images(y_pred, y, self.keys))
        for pred, gt in zip(y_pred, y, strict=True):
            image_id = None
            if self.image_id_key is not None:
                for item in (gt, pred):
                    if isinstance(item, Mapping) and self.image_id_key in item:
                        image_id = item[self.image_id_key]
                        break
                if isinstance(image_id, torch.Tensor):
                    image_id = image_id.item() if image_id.numel() == 1 else tuple(image_id.tolist())
            self._ids.append(image_id)

    def _gathered(self) -> tuple[list[ImageMatch], list[Any]]:
        if idist.get_world_size() <= 1:
            return list(self._matches), list(self._ids)
        # objects (lists of numpy records) are gathered with torch.distributed.all_gather_object
        per_rank = idist.all_gather((self._matches, self._ids))
        matches = [m for rank_matches, _ in per_rank for m in rank_matches]
        ids = [i for _, rank_ids in per_rank for i in rank_ids]
        return matches, ids

    def compute(self) -> float:
        matches, ids = self._gathered()
        if self.image_id_key is not None:
            seen: set[Any] = set()
            kept = []
            for m, i in zip(matches, ids, strict=True):
                if i is not None and i in seen:
                    continue
                seen.add(i)
                kept.append(m)
            matches = kept
        if not matches:
            raise NotComputableError("FROCMetric needs at least one image before compute().")
        result = froc_from_matches(matches, fpis=self.fpis, options=self.options)
        self.last_result = result
        return self._select(result)

    def _select(self, result: FROCResult) -> float:
        if self._stratum is not None:
            if self._stratum not in result.strata:
                warnings.warn(
                    f"stratum {self._stratum!r} absent (strata: {sorted(result.strata)}): {self.key} is NaN.",
                    UndefinedSensitivityWarning,
                    stacklevel=2,
                )
                return math.nan
            result = result.strata[self._stratum]
        if self._stat == "cpm":
            return float(result.cpm)
        values = result.sensitivity_at_fpi if self._stat == "sensitivity" else result.sensitivity_at_fpi_step
        return float(values[self._key_fpi])

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        details = getattr(engine.state, "froc_details", None)
        if not isinstance(details, dict):
            details = {}
            engine.state.froc_details = details
        details[name] = self.last_result
