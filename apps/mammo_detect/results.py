"""What the app produces and where: the reporting policy, per-image and per-study results, output
paths and the per-study JSON summary. Boxes are ``(x1, y1, x2, y2)`` pixels of the stored image, x = column."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def study_summary(
    study: StudyResult, out_dir: str | os.PathLike[str], tid1500: bool = False
) -> dict[str, Any]:
    """The JSON summary of one study (findings in pixels and mm, failures, skipped series);
    ``tid1500``: each image names its TID 1500 SR file."""
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
                # the detector's: the header's values, else the pixels' (source "pixels"); a
                # header value the pixels contradict is kept and reported in header_checks
                "laterality": det.get("laterality", image.laterality),
                "laterality_source": det.get("laterality_source"),
                "view": det.get("view", image.view),
                "view_source": det.get("view_source"),
                "header_checks": det.get("header_checks", {}),
                "image_size_hw": det.get("image_size_hw"),
                "pixel_spacing_mm": det.get("pixel_spacing_mm"),
                "spacing_source": det.get("spacing_source"),
                "crop": det.get("crop"),
                "tiles_per_scale": det.get("tiles_per_scale"),
                "findings": image.findings,
                "num_reported": len(image.reported),
                "sr_file": paths["sr"].name if tid1500 else None,
                "overlay_file": paths["overlay"].name if image.preview is not None else None,
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
