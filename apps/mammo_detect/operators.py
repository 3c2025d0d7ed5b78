"""Operators of the mammography detection app: loading and detection (the writer: :mod:`.writer`).

Data flow (see :mod:`.app`)::

    GuardedDICOMDataLoaderOperator --dicom_study_list--> DICOMSeriesSelectorOperator
        |                                                      | study_selected_series_list
        +---------dicom_study_list--> MammoDetectionOperator <-+
                                    | study_result (one StudyResult per compute, as each study is done)
                                    v
                           StudyWriterOperator (CAD SR, overlays, summary.json; all or nothing)

The loader (the SDK's, reading headers only) parses every file up to its pixel data and groups
instances into studies and series; the selector keeps the series of Modality MG. Whether an
instance is *For Presentation* is decided **per instance** (SOP Class, Presentation Intent
Type), never from a series' first file, so the result does not depend on file order. The
detection operator then reads each selected instance **from its file**
with :func:`monai_smalldet.data.dicom.read_mammogram` (the SDK's next step,
``DICOMSeriesToVolumeOperator``, stacks a series into one 3-D volume, which does not fit a
series of 2-D mammograms of different views), so a mammogram is read exactly like in training
(Modality and VOI LUT, MONOCHROME1 inversion, spacing, laterality). Images are processed one
at a time; only a preview (longer side <= 1024 px) of each is kept for the overlay.

Boxes are ``(x1, y1, x2, y2)`` pixels of the stored image, x = column, everywhere here.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from .results import (
    ALGORITHM_NAME,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    PREVIEW_MAX_SIDE,
    ImageResult,
    ReportPolicy,
    StudyResult,
    _sha256,
    find_checkpoint,
    output_paths,
    safe_name,
)

__all__ = [
    "ALGORITHM_NAME",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "GuardedDICOMDataLoaderOperator",
    "ImageResult",
    "MammoDetectionOperator",
    "ReportPolicy",
    "StudyResult",
    "find_checkpoint",
    "output_paths",
    "safe_name",
]

logger = logging.getLogger(__name__)


def _rss_mb() -> float:
    """Resident set size of this process in MiB (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _study_key(study: Any) -> str:
    return str(getattr(study, "StudyInstanceUID", "") or "")


def _series_uid(series: Any) -> str:
    return str(getattr(series, "SeriesInstanceUID", "") or "")


def _native(sop: Any) -> Any:
    return sop.get_native_sop_instance() if hasattr(sop, "get_native_sop_instance") else sop


def _instance_sort_key(ds: Any) -> tuple[int, str]:
    try:
        number = int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        number = 0
    return number, str(ds.get("SOPInstanceUID", ""))


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


class GuardedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """The SDK's DICOM loader, reading **headers only**, and robust to any bad file.

    Overrides the SDK's public ``load_data_to_studies``: each file is parsed once, up to its
    pixel data (``stop_before_pixels``), and grouped into the SDK's ``DICOMStudy`` /
    ``DICOMSeries`` with the loader's own ``populate_study_attributes`` /
    ``populate_series_attributes``, so the SDK's series selector works unchanged. The pixels
    are read once, by the detection operator, from the instance's file
    (``read_mammogram``): every file is parsed once for its header and once for its image,
    and no image is held in memory beyond the one being detected (the SDK's loader reads and
    keeps every file whole). A file that pydicom cannot parse, or that lacks the Study,
    Series or SOP Instance UID, is logged and left out (``run_summary.json`` lists it under
    ``unloaded_files``); a second file with an already loaded SOP Instance UID is left out
    too. Unlike the SDK's loader, instances are not deduplicated by Image Position (Patient),
    which 2-D mammograms do not carry meaningfully.
    """

    def load_data_to_studies(self, input_path: Path) -> list[Any]:
        from monai.deploy.core.domain.dicom_series import DICOMSeries
        from monai.deploy.core.domain.dicom_study import DICOMStudy
        from pydicom import dcmread

        if not input_path.exists() or not input_path.is_dir():
            raise ValueError("Required input folder does not exist.")
        studies: dict[str, Any] = {}
        series_of: dict[tuple[str, str], Any] = {}
        seen: set[str] = set()
        for folder, _, names in sorted(os.walk(input_path)):
            for name in sorted(names):
                path = os.path.join(folder, name)
                try:
                    ds = dcmread(path, stop_before_pixels=True)
                    study_uid, series_uid, sop_uid, sop_class = (
                        str(ds[k].value)
                        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
                    )
                except Exception as err:  # a damaged header must not stop the run
                    logger.warning(
                        "not a readable DICOM instance, left out: %s (%s: %s)", path, type(err).__name__, err
                    )
                    continue
                if sop_uid in seen:
                    logger.warning(
                        "left out %s: SOP Instance UID %s already loaded from another file", path, sop_uid
                    )
                    continue
                if sop_class in DICOMDataLoaderOperator.SOP_CLASSES_TO_IGNORE:  # DICOMDIR
                    continue
                seen.add(sop_uid)
                if study_uid not in studies:
                    studies[study_uid] = DICOMStudy(study_uid)
                    self.populate_study_attributes(studies[study_uid], ds)
                if (study_uid, series_uid) not in series_of:
                    series = DICOMSeries(series_uid)
                    self.populate_series_attributes(series, ds)
                    studies[study_uid].add_series(series)
                    series_of[(study_uid, series_uid)] = series
                series_of[(study_uid, series_uid)].add_sop_instance(ds)
        return list(studies.values())  # an input without a study is reported by the app (exit 3)


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------


class MammoDetectionOperator(Operator):
    """Runs :class:`monai_smalldet.inference.MultiScaleDetector` on every selected mammogram.

    Named inputs:
        study_selected_series_list: from ``DICOMSeriesSelectorOperator``.
        dicom_study_list: from ``DICOMDataLoaderOperator`` (to report the series not selected).

    Named output:
        study_result: one :class:`StudyResult` per compute call, per study with at least one
            selected series (in StudyInstanceUID order), emitted as soon as it is detected.

    Args:
        fragment: the application.
        model_path: the app's model path (see :func:`find_checkpoint`); the checkpoint is loaded
            once, when the operator starts.
        device: torch device (``None``: CUDA when present).
        detector: an already built detector (tests); ``model_path`` is then only recorded.
        detector_overrides: keyword arguments of ``MultiScaleDetector.from_checkpoint``
            (default: WBF fusion, tiled mode).
        input_path: the input folder, to report the files the DICOM loader did not load.
        report_policy: which findings go into the SR and the overlay (:class:`ReportPolicy`).
        assume_spacing_mm: spacing at which an image that records no pixel spacing is read
            (``None``: such an image fails with its reason, as a wrong spacing would resize
            every finding).
        max_pixels: most pixels an image may be processed at, after resampling (default
            :data:`~.checks.DEFAULT_MAX_PIXELS`); a larger one fails with its reason.
        plausible_spacing_mm: ``(low, high)``: a recorded spacing outside it fails the image
            (default :data:`~.checks.PLAUSIBLE_SPACING_MM`).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        model_path: str | os.PathLike[str] = "models",
        device: str | None = None,
        detector: Any = None,
        detector_overrides: dict[str, Any] | None = None,
        input_path: str | os.PathLike[str] | None = None,
        report_policy: ReportPolicy | None = None,
        assume_spacing_mm: float | None = None,
        max_pixels: int | None = None,
        plausible_spacing_mm: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        from .checks import DEFAULT_MAX_PIXELS, PLAUSIBLE_SPACING_MM

        self.max_pixels = int(max_pixels or DEFAULT_MAX_PIXELS)
        self.plausible_spacing_mm = tuple(plausible_spacing_mm or PLAUSIBLE_SPACING_MM)
        self.model_path = Path(model_path)
        self.assume_spacing_mm = assume_spacing_mm
        self.report_policy = report_policy if report_policy is not None else ReportPolicy()
        self.input_path = Path(input_path) if input_path is not None else None
        self.unloaded_files: list[dict[str, str]] = []
        self.skipped_series: list[dict[str, Any]] = []  # series of studies with no selected image
        self.device = device
        self.detector = detector
        self.detector_overrides = dict(detector_overrides or {})  # default: the model's calibrated fusion
        self.model_info: dict[str, Any] = {}
        self.results: list[StudyResult] = []
        self._received: dict[str, Any] = {}
        self._pending: list[tuple[str, list[Any], list[dict[str, Any]]]] | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        # no input condition: after the lists arrive, compute runs once per study (the app
        # gives this operator a BooleanCondition named "more_studies", disabled when done)
        spec.input("study_selected_series_list").condition(ConditionType.NONE)
        spec.input("dicom_study_list").condition(ConditionType.NONE)
        spec.output("study_result")

    def start(self) -> None:
        """Load the model once, before the first image."""
        from monai_smalldet import __version__
        from monai_smalldet.runtime import limit_threads_to_available_cpus

        info: dict[str, Any] = {"name": ALGORITHM_NAME, "version": __version__}
        # a container's CPU quota / cpuset, not the host's CPU count, sizes torch's threads
        info["torch_threads"] = limit_threads_to_available_cpus()
        if self.detector is None:
            from monai_smalldet.inference import MultiScaleDetector

            checkpoint = find_checkpoint(self.model_path)
            t0 = time.perf_counter()
            self.detector = MultiScaleDetector.from_checkpoint(
                checkpoint, device=self.device, **self.detector_overrides
            )
            info.update(
                checkpoint=checkpoint.name,
                checkpoint_sha256=_sha256(checkpoint),
                load_seconds=round(time.perf_counter() - t0, 4),
            )
            logger.info("loaded %s in %.2f s", checkpoint, info["load_seconds"])
        else:
            info["checkpoint"] = None
        spec = getattr(self.detector, "spec", None)
        info["spec"] = spec.to_dict() if spec is not None else None
        info["detector"] = {
            "mode": getattr(self.detector, "mode", None),
            "fusion": getattr(self.detector, "fusion_name", None),
            "scales": [float(s) for s in getattr(self.detector, "scales", ())],
            "device": str(getattr(self.detector, "device", "")),
        }
        self.report_policy = self.report_policy.for_detector(self.detector)
        info["report_policy"] = self.report_policy.to_dict()
        info["operating_point"] = spec.operating_point if spec is not None else None
        self.model_info = info

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """First calls: receive the loader's and the selector's lists. Then one study per call,
        emitted as soon as it is detected (its writer runs before the next study starts)."""
        if self._pending is None:
            for port in ("study_selected_series_list", "dicom_study_list"):
                if port not in self._received:
                    value = op_input.receive(port)
                    if value is not None:
                        self._received[port] = value
            if len(self._received) < 2:
                return  # the other list is not there yet
            self._pending = self._plan(
                self._received["study_selected_series_list"], self._received["dicom_study_list"]
            )
        if not self._pending:
            self._finish()
            return
        study_uid, series_list, skipped = self._pending.pop(0)
        result = self._detect_study(study_uid, series_list, skipped)
        self.results.append(result)
        op_output.emit(result, "study_result")
        if not self._pending:
            self._finish()

    def _finish(self) -> None:
        try:
            self.conditions["more_studies"].disable_tick()
        except KeyError:  # run without the app's condition (compute called directly)
            pass

    def _plan(
        self, selected: list[Any], studies: list[Any]
    ) -> list[tuple[str, list[Any], list[dict[str, Any]]]]:
        """``(study uid, selected series, skipped series)`` per study with a selected series, in
        UID order; studies without one go to :attr:`skipped_series`."""
        selected_by_study: dict[str, list[Any]] = {}
        for item in selected or []:
            uid = _study_key(item.study)
            seen = {_series_uid(s) for s in selected_by_study.setdefault(uid, [])}
            for sel in item.selected_series:
                if _series_uid(sel.series) not in seen:
                    selected_by_study[uid].append(sel.series)
                    seen.add(_series_uid(sel.series))
        plan = []
        for study in sorted(studies or [], key=_study_key):
            study_uid = _study_key(study)
            chosen = {_series_uid(s) for s in selected_by_study.get(study_uid, [])}
            skipped = []
            for series in sorted(study.get_all_series(), key=_series_uid):
                if _series_uid(series) not in chosen:
                    modality = str(getattr(series, "Modality", "") or "unknown")
                    logger.info(
                        "skipped series %s (Modality %s): not an MG series", _series_uid(series), modality
                    )
                    skipped.append(
                        {
                            "series_instance_uid": _series_uid(series),
                            "modality": modality,
                            "reason": "not a Modality MG series",
                        }
                    )
            if not chosen:  # nothing to detect on: the study appears only in run_summary.json
                self.skipped_series.extend({"study_instance_uid": study_uid, **entry} for entry in skipped)
                continue
            series_list = sorted(selected_by_study[study_uid], key=_series_uid)
            plan.append((study_uid, series_list, skipped))
        self.unloaded_files = self._unloaded(studies or [])
        return plan

    def _detect_study(
        self, study_uid: str, series_list: list[Any], skipped: list[dict[str, Any]]
    ) -> StudyResult:
        t0 = time.perf_counter()
        result = StudyResult(study_uid, None, skipped=skipped, model=dict(self.model_info))
        for series in series_list:
            datasets = sorted((_native(s) for s in series.get_sop_instances()), key=_instance_sort_key)
            for ds in datasets:
                if result.patient_id is None:
                    result.patient_id = str(ds.get("PatientID", "") or "") or None
                image = self._one_image(ds, _series_uid(series))
                if image is None:
                    result.skipped.append(
                        {
                            "series_instance_uid": _series_uid(series),
                            "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
                            "modality": str(ds.get("Modality", "") or "unknown"),
                            "reason": "not a Digital Mammography For Presentation image",
                        }
                    )
                    continue
                result.images.append(image)
        result.seconds = time.perf_counter() - t0
        result.rss_mb = _rss_mb()
        return result

    def _unloaded(self, studies: list[Any]) -> list[dict[str, str]]:
        """Files of the input folder that the DICOM loader did not load (not DICOM, no UIDs, ...)."""
        if self.input_path is None or not self.input_path.is_dir():
            return []
        loaded = set()
        for study in studies:
            for series in study.get_all_series():
                for sop in series.get_sop_instances():
                    name = getattr(_native(sop), "filename", None)
                    if isinstance(name, (str, os.PathLike)):
                        loaded.add(os.path.abspath(name))
        out = []
        for folder, _, files in os.walk(self.input_path):
            for name in sorted(files):
                path = os.path.abspath(os.path.join(folder, name))
                if path not in loaded:
                    rel = os.path.relpath(path, self.input_path)
                    logger.warning("not loaded as a DICOM instance: %s", rel)
                    out.append({"file": rel, "reason": "not loaded as a DICOM instance (see the log)"})
        return sorted(out, key=lambda d: d["file"])

    def _one_image(self, ds: Any, series_uid: str) -> ImageResult | None:
        """Detect on one instance; ``None`` for an instance that is not For Presentation MG."""
        from monai_smalldet.data.dicom import MammogramReadError, read_mammogram
        from monai_smalldet.spacing import SpacingError, read_spacing_mm
        from monai_smalldet.visualize import thumbnail

        from .checks import InputRejected, check_geometry, check_uids

        sop_uid = str(ds.get("SOPInstanceUID", ""))
        sop_class = str(ds.get("SOPClassUID", ""))
        intent = str(ds.get("PresentationIntentType", "") or "").upper()
        if sop_class == MG_FOR_PROCESSING or (intent and intent != "FOR PRESENTATION"):
            logger.info("skipped instance %s: For Processing", sop_uid)
            return None
        filename = getattr(ds, "filename", None)
        shown = os.path.basename(str(filename)) if filename else ""
        t0 = time.perf_counter()
        base = {"sop_instance_uid": sop_uid, "series_instance_uid": series_uid, "file": shown}
        if not filename or not isinstance(filename, (str, os.PathLike)):
            return ImageResult(**base, status="failed", reason="instance has no file to read", source=ds)
        try:
            check_uids(ds)
            image, meta = read_mammogram(filename, require_mg=True)
            recorded = meta.spacing_source != "default"  # "default": the reader's guess, not the file's
            spacing = read_spacing_mm(meta.pixel_spacing_mm) if recorded else None
            if spacing is None and self.assume_spacing_mm is not None:
                spacing = read_spacing_mm(self.assume_spacing_mm)
            resample = getattr(self.detector, "resample", None)
            target = tuple(resample.target_spacing_mm) if resample is not None else None
            check_geometry(
                tuple(np.shape(image)[-2:]), spacing, target, self.max_pixels, self.plausible_spacing_mm
            )
            out = self.detector.predict(
                image,
                image_meta=meta.to_dict(),  # laterality, view and their sources, checked against the pixels
                pixel_spacing_mm=meta.pixel_spacing_mm if recorded else None,
                assume_spacing_mm=self.assume_spacing_mm,
            )
            preview, factor = thumbnail(image, PREVIEW_MAX_SIDE)
        except (MammogramReadError, SpacingError, InputRejected) as err:
            reason = getattr(err, "reason", None) or str(err)
            logger.warning("failed %s (%s): %s", shown, sop_uid, reason)
            return ImageResult(
                **base, status="failed", reason=reason, source=ds, seconds=time.perf_counter() - t0
            )
        except Exception as err:  # one bad image must not stop the others
            logger.exception("failed %s (%s)", shown, sop_uid)
            return ImageResult(
                **base,
                status="failed",
                reason=f"{type(err).__name__}: {err}",
                source=ds,
                seconds=time.perf_counter() - t0,
            )
        detection = out.to_dict()
        if recorded:  # the attribute the spacing was read from, e.g. "ImagerPixelSpacing"
            detection["spacing_source"] = meta.spacing_source
        if detection.get("spacing_source") == "assumed":  # mm values follow from a site setting
            for finding in detection["findings"]:
                finding["spacing_assumed"] = True
        detection["findings"] = self.report_policy.mark(detection["findings"])
        logger.info(
            "%s %s %s: %d finding(s), %d reported",
            shown,
            meta.laterality,
            meta.view,
            len(detection["findings"]),
            sum(f["reported"] for f in detection["findings"]),
        )
        return ImageResult(
            **base,
            status="ok",
            laterality=meta.laterality,
            view=meta.view,
            detection=detection,
            source=ds,
            preview=np.ascontiguousarray(preview, dtype=np.float32),
            preview_factor=float(factor),
            seconds=time.perf_counter() - t0,
        )
