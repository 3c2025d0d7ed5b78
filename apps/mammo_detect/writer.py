"""Writing one study's results, all or nothing, as soon as the study is detected.

Layout, per study ``<out>/<StudyInstanceUID>/``:

- ``cad_sr.dcm``: the Mammography CAD SR of the study (TID 4000, every view in its Image
  Library, :mod:`monai_smalldet.reports`);
- ``<SOPInstanceUID>.sr.dcm``: one TID 1500 Measurement Report per analysed image, only with
  ``write_tid1500`` (``MAMMO_DETECT_WRITE_TID1500=1``);
- ``<SOPInstanceUID>.overlay.png``: the reported findings drawn on a preview;
- ``summary.json``: every finding, failure and skipped series. It is written last: **a study
  folder holds either all of a run's results for that study, or the previous run's**, since the
  files are written into a staging folder beside it (``<out>/.staging-...``) that replaces the
  study folder with a rename only once everything is on disk. A failed write (a full disk, a
  read-only folder) removes the staging folder and leaves the previous results as they were.

Rerunning on the same input does not add series to the PACS silently: the report series UID is
derived from the study UID and the model's checkpoint hash (one series per study and model),
and each document's SOP Instance UID from that series and the document's content, so the same
results give the same UIDs (a PACS stores them once) and changed results a new instance in the
same series.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_smalldet.files import write_json_atomic

from .results import (
    ALGORITHM_NAME,
    PREVIEW_MAX_SIDE,
    SR_SERIES_NUMBER,
    StudyResult,
    output_paths,
    study_summary,
)

__all__ = ["CAD_SR_NAME", "StudyWriterOperator", "WriteOptions", "cad_algorithm", "write_study"]

logger = logging.getLogger(__name__)

CAD_SR_NAME = "cad_sr.dcm"
CAD_SR_SERIES_NUMBER = SR_SERIES_NUMBER + 1


@dataclass(frozen=True)
class WriteOptions:
    """What is written per study.

    Attributes:
        write_tid1500: also one TID 1500 Measurement Report per analysed image.
        include_optional: the CAD SR also shows findings below the operating point (down to
            ``optional_min_score``) as Presentation Optional.
        optional_min_score: lowest score of an optional finding.
    """

    write_tid1500: bool = False
    include_optional: bool = False
    optional_min_score: float = 0.05


@dataclass
class StudyWriteOutcome:
    """What was written for a study, or why nothing was."""

    study_instance_uid: str
    files: list[str] = field(default_factory=list)
    error: str | None = None
    cad_sr: str | None = None  # why no CAD SR was written (None: written, or no image)


def cad_algorithm(model: dict[str, Any]) -> Any:
    """The :class:`~monai_smalldet.reports.CadAlgorithm` of the app's model info."""
    from monai_smalldet.reports import CadAlgorithm

    spec = model.get("spec") or {}
    op = model.get("operating_point") or {}
    policy = model.get("report_policy") or {}
    sha = model.get("checkpoint_sha256")
    version = str(model.get("version", ""))
    if sha:
        version = f"{version} model {sha[:12]}"
    calibration = None
    if op.get("split"):
        calibration = f"the {op['split']} split" + (
            f" ({op['num_images']} images)" if op.get("num_images") else ""
        )
    types = (spec.get("extra") or {}).get("finding_types") or ["mass"]
    return CadAlgorithm(
        name=f"{ALGORITHM_NAME} multi-scale YOLOv5{spec.get('variant', '')}",
        version=version,
        score_threshold=float(policy.get("min_score") or 0.0),
        checkpoint_sha256=sha,
        target_fpi=op.get("target_fpi") if policy.get("source") == "model operating point" else None,
        sensitivity=op.get("sensitivity") if policy.get("source") == "model operating point" else None,
        calibration=calibration,
        finding_types=tuple(sorted(set(types))),
        not_for_clinical_use=bool((spec.get("extra") or {}).get("clinical_use") is not True),
        software_version=str(model.get("version", "")),
    )


def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _content_digest(ds: Any) -> str:
    """A digest of a document's content tree (not of its UIDs or creation time)."""
    tree = [item.to_json_dict() for item in ds.ContentSequence]
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def _cad_sr(study: StudyResult, series_uid: str, options: WriteOptions) -> tuple[Any | None, str | None]:
    """The study's CAD SR, or ``(None, why)`` when it cannot be referenced (invalid UIDs)."""
    from monai_smalldet.reports import CadFinding, CadImage, build_mammography_cad_sr, valid_uid

    if not valid_uid(study.study_instance_uid):
        return None, f"invalid StudyInstanceUID {study.study_instance_uid!r}: no report can reference it"
    types = (((study.model.get("spec") or {}).get("extra") or {}).get("finding_types")) or {}
    images = []
    for image in study.images:
        ds = image.source
        if ds is None or not all(
            valid_uid(ds.get(k)) for k in ("SOPInstanceUID", "SeriesInstanceUID", "SOPClassUID")
        ):
            continue  # listed in summary.json with its reason; a report cannot reference it
        findings = ()
        if image.status == "ok":
            label_types = types if isinstance(types, dict) else {}
            findings = tuple(
                CadFinding(
                    tuple(f["box"]),
                    min(max(float(f["score"]), 0.0), 1.0),
                    label_types.get(str(f.get("label", 1)), "mass"),
                )
                for f in image.findings
            )
        images.append(
            CadImage(ds, findings, failure=None if image.status == "ok" else (image.reason or "failed"))
        )
    if not images:
        return None, "no image of the study has valid UIDs"
    algorithm = cad_algorithm(study.model)
    kwargs = dict(
        series_instance_uid=series_uid,
        series_number=CAD_SR_SERIES_NUMBER,
        include_optional=options.include_optional,
        optional_min_score=options.optional_min_score,
        max_findings_per_image=int((study.model.get("report_policy") or {}).get("max_findings") or 10),
    )
    draft = build_mammography_cad_sr(images, algorithm, sop_instance_uid="1.2.3", **kwargs)
    sop_uid = _uid(series_uid, _content_digest(draft))
    return build_mammography_cad_sr(images, algorithm, sop_instance_uid=sop_uid, **kwargs), None


def _write_files(
    study: StudyResult, staging: Path, out_dir: Path, options: WriteOptions
) -> StudyWriteOutcome:
    from monai_smalldet.visualize import overlay_png

    from .sr import build_sr

    outcome = StudyWriteOutcome(study.study_instance_uid)
    sha = study.model.get("checkpoint_sha256") or study.model.get("version")
    series_uid = _uid(study.study_instance_uid, "mammography cad sr", sha)
    cad, why = _cad_sr(study, series_uid, options)
    if cad is not None:
        cad.save_as(staging / CAD_SR_NAME, enforce_file_format=True)
        outcome.files.append(CAD_SR_NAME)
    outcome.cad_sr = why
    tid1500_series = _uid(study.study_instance_uid, "tid1500", sha)
    number = 0
    for image in study.images:
        if image.status != "ok":
            continue
        names = {
            k: p.name
            for k, p in output_paths(out_dir, study.study_instance_uid, image.sop_instance_uid).items()
            if k in ("sr", "overlay")
        }
        if options.write_tid1500:
            number += 1
            sr = build_sr(image, study.model, tid1500_series, number)
            sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = _uid(
                tid1500_series, image.sop_instance_uid, _content_digest(sr)
            )
            sr.save_as(staging / names["sr"], enforce_file_format=True)
            outcome.files.append(names["sr"])
        if image.preview is not None:
            f = image.preview_factor
            boxes = [[v * f for v in d["box"]] for d in image.reported]
            title = f"{image.laterality or '?'} {image.view or '?'}  {len(boxes)} finding(s)"
            overlay_png(
                image.preview,
                staging / names["overlay"],
                boxes,
                [d["score"] for d in image.reported],
                max_side=PREVIEW_MAX_SIDE,
                title=title,
            )
            outcome.files.append(names["overlay"])
    summary = study_summary(study, out_dir, tid1500=options.write_tid1500)
    summary["cad_sr_file"] = CAD_SR_NAME if cad is not None else None
    summary["cad_sr_not_written"] = why
    write_json_atomic(staging / "summary.json", summary)
    outcome.files.append("summary.json")
    return outcome


def _swap_in(staging: Path, final_dir: Path) -> None:
    """Replace ``final_dir`` by ``staging`` (two renames on the same filesystem)."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".replaced-{final_dir.name}-{os.getpid()}")
        os.replace(final_dir, old)
    try:
        os.replace(staging, final_dir)
    except OSError:
        if old is not None:
            os.replace(old, final_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_study(
    study: StudyResult, out_dir: str | os.PathLike[str], options: WriteOptions = WriteOptions()
) -> StudyWriteOutcome:
    """Write every output of ``study`` under ``out_dir``, all or nothing (see the module docstring).

    Returns:
        the files written (names inside the study folder), or the error that stopped the
        write (``OSError`` text: a full disk, a read-only folder); the study's previous
        results are then untouched.
    """
    out_dir = Path(out_dir).resolve()
    final_dir = output_paths(out_dir, study.study_instance_uid)["study_dir"]
    staging = out_dir / f".staging-{final_dir.name}-{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        outcome = _write_files(study, staging, out_dir, options)
        _swap_in(staging, final_dir)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        what = errno.errorcode.get(err.errno or 0, type(err).__name__)
        message = f"results not written ({what}: {err.strerror or err})"
        logger.error("study %s: %s", study.study_instance_uid, message)
        return StudyWriteOutcome(study.study_instance_uid, error=message)
    logger.info(
        "wrote %d file(s) for study %s in %s", len(outcome.files), study.study_instance_uid, final_dir
    )
    return outcome


class StudyWriterOperator(Operator):
    """Writes each :class:`StudyResult` it receives (one per compute) with :func:`write_study`.

    Named input: ``study_result``. ``outcomes`` lists what was written, per study, in order.
    Once a study is written its previews are dropped (the run keeps only its findings).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        out_dir: str | os.PathLike[str],
        options: WriteOptions = WriteOptions(),
        **kwargs: Any,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.options = options
        self.outcomes: list[StudyWriteOutcome] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        study = op_input.receive("study_result")
        if study is not None:
            self.outcomes.append(write_study(study, self.out_dir, self.options))
            for image in study.images:  # the run keeps each study's results, not its previews
                image.preview = None
