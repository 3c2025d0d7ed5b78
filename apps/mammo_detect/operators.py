"""Operators of the mammography detection app: detection, DICOM SR, JSON and PNG writers.

Data flow (see :mod:`.app`)::

    GuardedDICOMDataLoaderOperator --dicom_study_list--> DICOMSeriesSelectorOperator
        |                                                      | study_selected_series_list
        +---------dicom_study_list--> MammoDetectionOperator <-+
                                    | results (list of StudyResult)
              +---------------------+----------------------+
              v                     v                      v
     DICOMSRWriterOperator  JSONSummaryWriterOperator  OverlayWriterOperator

The SDK's DICOM loader (with a header pre-check) parses every file with pydicom and groups instances into studies and
series; the selector keeps the series of Modality MG whose first instance is *For
Presentation*. The detection operator then reads each selected instance **from its file**
with :func:`monai_smalldet.data.dicom.read_mammogram` (the SDK's next step,
``DICOMSeriesToVolumeOperator``, stacks a series into one 3-D volume, which does not fit a
series of 2-D mammograms of different views), so a mammogram is read exactly like in training
(Modality and VOI LUT, MONOCHROME1 inversion, spacing, laterality). Images are processed one
at a time; only a preview (longer side <= 1024 px) of each is kept for the overlay.

Boxes are ``(x1, y1, x2, y2)`` pixels of the stored image, x = column, everywhere here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from monai_smalldet.files import atomic_write, write_json_atomic

__all__ = [
    "ALGORITHM_NAME",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "DICOMSRWriterOperator",
    "GuardedDICOMDataLoaderOperator",
    "ImageResult",
    "JSONSummaryWriterOperator",
    "MammoDetectionOperator",
    "OverlayWriterOperator",
    "ReportPolicy",
    "StudyResult",
    "find_checkpoint",
    "output_paths",
    "safe_name",
]

logger = logging.getLogger(__name__)

ALGORITHM_NAME = "monai-smalldet"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SR_SERIES_NUMBER = 9100
PREVIEW_MAX_SIDE = 1024


@dataclass(frozen=True)
class ReportPolicy:
    """Which findings a reader sees: those of the SR and the overlay (the JSON keeps all).

    The detector decodes every box down to a score of 0.001 (FROC analysis needs them all);
    a CAD report marks only the findings at its operating point. A finding is reported when
    its score is at least ``min_score``, at most ``max_findings`` per image, highest first.

    Attributes:
        min_score: lowest reported score. ``None`` (default): the operating point calibrated
            on validation and stored in the model's spec (:meth:`for_detector`).
        max_findings: most findings reported per image.
        source: where ``min_score`` comes from (written into the outputs).
    """

    min_score: float | None = None
    max_findings: int = 10
    source: str = "configured"

    def __post_init__(self) -> None:
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must lie in [0, 1], got {self.min_score}.")
        if self.max_findings < 0:
            raise ValueError(f"max_findings must be >= 0, got {self.max_findings}.")

    def for_detector(self, detector: Any) -> ReportPolicy:
        """This policy with ``min_score`` resolved: the detector's calibrated threshold when
        none was configured.

        Raises:
            ValueError: no threshold configured and the model carries no calibrated operating
                point (the app refuses to guess one).
        """
        if self.min_score is not None:
            return self
        threshold = getattr(detector, "score_threshold", None)
        if threshold is None:
            raise ValueError(
                "the model has no calibrated operating point (run `monai-smalldet calibrate`) and "
                "no reporting threshold was configured (MAMMO_DETECT_REPORT_MIN_SCORE)."
            )
        return dataclasses.replace(self, min_score=min(float(threshold), 1.0), source="model operating point")

    def mark(self, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The findings (by descending score), each with ``reported`` set."""
        if self.min_score is None:
            raise ValueError("ReportPolicy.min_score is unresolved: call for_detector first.")
        ranked = sorted(findings, key=lambda f: -float(f["score"]))
        out = []
        for rank, finding in enumerate(ranked):
            shown = float(finding["score"]) >= self.min_score and rank < self.max_findings
            out.append({**finding, "reported": bool(shown)})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "max_findings": self.max_findings, "source": self.source}


_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


# ---------------------------------------------------------------------------------------------
# names and files
# ---------------------------------------------------------------------------------------------


def safe_name(uid: Any) -> str:
    """A file-name-safe form of a DICOM UID: the UID itself when it is a valid UID (digits and
    dots, <= 64 characters), else ``x`` + a SHA-1 digest, so that no value can escape the folder
    (``..``, ``/``, empty names).
    """
    text = str(uid or "").strip()
    if _UID_RE.match(text) and len(text) <= 64:
        return text
    return "x" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def output_paths(
    out_dir: str | os.PathLike[str], study_uid: str, sop_uid: str | None = None
) -> dict[str, Path]:
    """Where the outputs of a study (and of one of its images) go, inside ``out_dir``.

    ``<out>/<study>/summary.json``, ``<out>/<study>/<sop>.sr.dcm``, ``<out>/<study>/<sop>.overlay.png``.
    """
    root = Path(out_dir).resolve()
    study_dir = (root / safe_name(study_uid)).resolve()
    if study_dir.parent != root:  # cannot happen with safe_name; kept as a guard
        raise ValueError(f"unsafe output folder for study {study_uid!r}")
    paths = {"study_dir": study_dir, "summary": study_dir / "summary.json"}
    if sop_uid is not None:
        name = safe_name(sop_uid)
        paths["sr"] = study_dir / f"{name}.sr.dcm"
        paths["overlay"] = study_dir / f"{name}.overlay.png"
    return paths


def find_checkpoint(model_path: str | os.PathLike[str]) -> Path:
    """The checkpoint to load from the app's model path.

    Accepts the ``.pt`` file itself, a folder holding ``model.pt`` (+ ``model.json``), or a
    folder with exactly one sub-folder holding ``model.pt`` (the layout of a MAP, whose models
    sit in ``/opt/holoscan/models/<name>/``).

    Raises:
        FileNotFoundError: with a message saying what was looked for.
    """
    path = Path(model_path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.pt").is_file():
            return path / "model.pt"
        found = sorted(p for p in path.glob("*/model.pt") if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise FileNotFoundError(
                f"several checkpoints under {path}: {[str(p) for p in found]}; give the folder of one"
            )
    raise FileNotFoundError(f"no model.pt (with model.json beside it) found at {path}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# results passed from the detection operator to the writers
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    """One selected instance: its findings (``status == "ok"``) or why it failed."""

    sop_instance_uid: str
    series_instance_uid: str
    file: str
    status: str  # "ok" or "failed"
    reason: str | None = None
    laterality: str | None = None
    view: str | None = None
    detection: dict[str, Any] | None = None  # MultiScaleOutput.to_dict()
    source: Any = None  # the pydicom Dataset (SR evidence)
    preview: np.ndarray | None = None  # (h, w) in [0, 1], longer side <= PREVIEW_MAX_SIDE
    preview_factor: float = 1.0  # preview pixels per image pixel
    seconds: float = 0.0

    @property
    def findings(self) -> list[dict[str, Any]]:
        """Every finding of the detector (each with ``reported``), by descending score."""
        return list((self.detection or {}).get("findings", []))

    @property
    def reported(self) -> list[dict[str, Any]]:
        """The findings of the SR and the overlay (see :class:`ReportPolicy`)."""
        return [f for f in self.findings if f.get("reported", True)]


@dataclass
class StudyResult:
    """Everything the writers need about one study."""

    study_instance_uid: str
    patient_id: str | None
    images: list[ImageResult] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    rss_mb: float = 0.0  # resident memory of the process once this study is detected


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
    """The SDK's DICOM loader, minus one failure mode: the SDK skips files pydicom calls invalid
    DICOM but lets any other parsing error (e.g. a damaged header) stop the whole run. Here each
    file's header is parsed first and a file that raises is logged and left out (it is then
    listed in ``run_summary.json`` under ``unloaded_files``)."""

    def _load_data(self, files: list[str]) -> Any:
        from pydicom import dcmread

        readable = []
        for file in files:
            try:
                dcmread(file, stop_before_pixels=True, force=False)
            except Exception as err:
                logger.warning(
                    "not a readable DICOM file, left out: %s (%s: %s)", file, type(err).__name__, err
                )
                continue
            readable.append(file)
        return super()._load_data(readable)


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------


class MammoDetectionOperator(Operator):
    """Runs :class:`monai_smalldet.inference.MultiScaleDetector` on every selected mammogram.

    Named inputs:
        study_selected_series_list: from ``DICOMSeriesSelectorOperator``.
        dicom_study_list: from ``DICOMDataLoaderOperator`` (to report the series not selected).

    Named output:
        results: a list of :class:`StudyResult`, one per study with at least one selected series.

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
        **kwargs: Any,
    ) -> None:
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
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.input("dicom_study_list")
        spec.output("results").condition(ConditionType.NONE)

    def start(self) -> None:
        """Load the model once, before the first image."""
        from monai_smalldet import __version__

        info: dict[str, Any] = {"name": ALGORITHM_NAME, "version": __version__}
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
        selected = op_input.receive("study_selected_series_list") or []
        studies = op_input.receive("dicom_study_list") or []
        selected_by_study: dict[str, list[Any]] = {}
        for item in selected:
            uid = _study_key(item.study)
            seen = {_series_uid(s) for s in selected_by_study.setdefault(uid, [])}
            for sel in item.selected_series:
                if _series_uid(sel.series) not in seen:
                    selected_by_study[uid].append(sel.series)
                    seen.add(_series_uid(sel.series))

        results: list[StudyResult] = []
        skipped_studies: list[dict[str, Any]] = []
        for study in sorted(studies, key=_study_key):
            study_uid = _study_key(study)
            chosen = {_series_uid(s) for s in selected_by_study.get(study_uid, [])}
            skipped = []
            for series in sorted(study.get_all_series(), key=_series_uid):
                if _series_uid(series) not in chosen:
                    modality = str(getattr(series, "Modality", "") or "unknown")
                    logger.info(
                        "skipped series %s (Modality %s): not a For Presentation MG series",
                        _series_uid(series),
                        modality,
                    )
                    skipped.append(
                        {
                            "series_instance_uid": _series_uid(series),
                            "modality": modality,
                            "reason": "not a Modality MG For Presentation series",
                        }
                    )
            if not chosen:  # nothing to detect on: the study appears only in run_summary.json
                skipped_studies.extend({"study_instance_uid": study_uid, **entry} for entry in skipped)
                continue
            t0 = time.perf_counter()
            result = StudyResult(study_uid, None, skipped=skipped, model=dict(self.model_info))
            for series in sorted(selected_by_study[study_uid], key=_series_uid):
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
            results.append(result)
        self.results = results
        self.skipped_series = skipped_studies
        self.unloaded_files = self._unloaded(studies)
        op_output.emit(results, "results")

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
        from monai_smalldet.spacing import SpacingError
        from monai_smalldet.visualize import thumbnail

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
            image, meta = read_mammogram(filename, require_mg=True)
            recorded = meta.spacing_source != "default"  # "default": the reader's guess, not the file's
            out = self.detector.predict(
                image,
                laterality=meta.laterality,
                pixel_spacing_mm=meta.pixel_spacing_mm if recorded else None,
                assume_spacing_mm=self.assume_spacing_mm,
            )
            preview, factor = thumbnail(image, PREVIEW_MAX_SIDE)
        except (MammogramReadError, SpacingError) as err:
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


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


class _WriterOperator(Operator):
    """Base of the writers: one input ``results``; ``out_dir`` is the app's output path."""

    def __init__(
        self, fragment: Fragment, *args: Any, out_dir: str | os.PathLike[str], **kwargs: Any
    ) -> None:
        self.out_dir = Path(out_dir)
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("results")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        for study in op_input.receive("results") or []:
            self.write_study(study)

    def write_study(self, study: StudyResult) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def finding_polyline(box: list[float]) -> np.ndarray:
    """Closed rectangle (5 points, first = last) of an ``(x1, y1, x2, y2)`` box, as (column, row)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def build_sr(image: ImageResult, model: dict[str, Any], series_uid: str, instance_number: int) -> Any:
    """A TID 1500 Measurement Report (Comprehensive 3D SR) of one image's findings.

    Each *reported* finding (:class:`ReportPolicy`: at the operating point) is a planar ROI
    measurement group: an image-region SCOORD ``POLYLINE`` (closed
    rectangle, (column, row) pixel coordinates of the source image) that references the source
    SOP instance, finding type *Lesion*, finding site *Breast* with the image's laterality, the
    algorithm identification (name, version), and measurements *Probability of cancer* (the
    detector score, no units) and *Diameter* (longer box side in mm, when the spacing is known).
    An image without reported findings gets one image-level group (TID 1501) with the
    qualitative evaluation *Lesion: Absent* (TID 1500 requires at least one group).
    Patient, study and evidence come from the source dataset (highdicom copies them).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    source = image.source
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=str(model.get("version", "")))
    laterality = {"L": codes.SCT.Left, "R": codes.SCT.Right}.get(str(image.laterality or "").upper())
    site = hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=laterality)
    groups = []
    for index, finding in enumerate(image.reported, start=1):
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=finding_polyline(finding["box"]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        )
        measurements = [
            hd.sr.Measurement(
                name=codes.DCM.ProbabilityOfCancer,
                value=float(finding["score"]),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm,
            )
        ]
        if finding.get("size_mm") is not None:
            measurements.append(
                hd.sr.Measurement(
                    name=codes.SCT.Diameter,
                    value=float(finding["size_mm"]),
                    unit=codes.UCUM.Millimeter,
                    algorithm_id=algorithm,
                )
            )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier=f"finding {index}"
                ),
                referenced_region=region,
                finding_type=codes.SCT.Lesion,
                algorithm_id=algorithm,
                finding_sites=[site],
                measurements=measurements,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[ALGORITHM_NAME, str(model.get("version", ""))]),
            name=ALGORITHM_NAME,
            model_name=str(model.get("version", "")),
        ),
    )
    if not groups:
        # TID 1500 needs one measurement group: an image-level group (TID 1501) saying
        # "Lesion: Absent" for this image, with the same algorithm and finding site
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="no finding"),
                algorithm_id=algorithm,
                finding_sites=[site],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=codes.SCT.Lesion, value=codes.SCT.Absent)
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("24606-6", "LN", "MG Breast Screening"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=ALGORITHM_NAME,
        series_description=f"{ALGORITHM_NAME} findings",
        is_complete=True,
    )


class DICOMSRWriterOperator(_WriterOperator):
    """Writes one DICOM SR (TID 1500, see :func:`build_sr`) per successfully read image, all of a
    study in one new series."""

    def write_study(self, study: StudyResult) -> None:
        from pydicom.uid import generate_uid

        series_uid = generate_uid()
        number = 0
        for image in study.images:
            if image.status != "ok":
                continue
            number += 1
            sr = build_sr(image, study.model, series_uid, number)
            path = output_paths(self.out_dir, study.study_instance_uid, image.sop_instance_uid)["sr"]
            atomic_write(path, lambda tmp, ds=sr: ds.save_as(tmp, enforce_file_format=True))
            self.written.append(path)
            logger.info("wrote %s", path)


class OverlayWriterOperator(_WriterOperator):
    """Writes a PNG overlay (findings in red with their score) per successfully read image."""

    def write_study(self, study: StudyResult) -> None:
        from monai_smalldet.visualize import overlay_png

        for image in study.images:
            if image.status != "ok" or image.preview is None:
                continue
            f = image.preview_factor
            boxes = [[v * f for v in d["box"]] for d in image.reported]
            scores = [d["score"] for d in image.reported]
            path = output_paths(self.out_dir, study.study_instance_uid, image.sop_instance_uid)["overlay"]
            title = f"{image.laterality or '?'} {image.view or '?'}  {len(boxes)} finding(s)"
            overlay_png(image.preview, path, boxes, scores, max_side=PREVIEW_MAX_SIDE, title=title)
            self.written.append(path)


def study_summary(study: StudyResult, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON summary of one study (findings in pixels and mm, failures, skipped series)."""
    images, failed = [], []
    for image in study.images:
        paths = output_paths(out_dir, study.study_instance_uid, image.sop_instance_uid)
        if image.status != "ok":
            failed.append(
                {
                    "sop_instance_uid": image.sop_instance_uid,
                    "series_instance_uid": image.series_instance_uid,
                    "file": image.file,
                    "reason": image.reason,
                }
            )
            continue
        det = image.detection or {}
        images.append(
            {
                "sop_instance_uid": image.sop_instance_uid,
                "series_instance_uid": image.series_instance_uid,
                "file": image.file,
                "laterality": image.laterality,
                "view": image.view,
                "image_size_hw": det.get("image_size_hw"),
                "pixel_spacing_mm": det.get("pixel_spacing_mm"),
                "spacing_source": det.get("spacing_source"),
                "tiles_per_scale": det.get("tiles_per_scale"),
                "findings": image.findings,
                "num_reported": len(image.reported),
                "sr_file": paths["sr"].name,
                "overlay_file": paths["overlay"].name,
                "timings_s": {**det.get("timings_s", {}), "image_total": round(image.seconds, 4)},
            }
        )
    return {
        "study_instance_uid": study.study_instance_uid,
        "patient_id": study.patient_id,
        "model": study.model,
        "box_convention": "x1, y1, x2, y2 in pixels of the stored image (x = column); box_mm in mm",
        "num_images": len(images),
        "num_failed": len(failed),
        "images": images,
        "failed": failed,
        "skipped": study.skipped,
        "timings_s": {"study_total": round(study.seconds, 4)},
        "rss_mb_after_detection": round(study.rss_mb, 1),
    }


class JSONSummaryWriterOperator(_WriterOperator):
    """Writes ``<out>/<study>/summary.json`` per study (see :func:`study_summary`)."""

    def write_study(self, study: StudyResult) -> None:
        path = output_paths(self.out_dir, study.study_instance_uid)["summary"]
        write_json_atomic(path, study_summary(study, self.out_dir))
        self.written.append(path)
        logger.info("wrote %s", path)
