"""The DICOM SR of one image's findings (TID 1500 Measurement Report, highdicom)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .results import ALGORITHM_NAME, SR_SERIES_NUMBER, ImageResult


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
    algorithm identification (name; version = package version and checkpoint hash) and the measurement *Certainty of Finding* (the
    uncalibrated detector score x 100, %; not a probability of cancer). An image without a
    reported finding gets one image-level group (TID 1501) whose qualitative evaluation is the
    CAD summary "All algorithms succeeded; without findings" (TID 1500 requires one group): no
    finding reached the operating point, which is not a statement that no lesion is there.
    Tracking UIDs are derived from the image and the finding (the same in a rerun). Patient,
    study and evidence come from the source dataset (highdicom copies them).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    source = image.source
    sha = model.get("checkpoint_sha256")
    version = str(model.get("version", "")) + (f" model {sha[:12]}" if sha else "")
    variant = ((model.get("spec") or {}).get("variant")) or ""
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=version)
    laterality = {"L": codes.SCT.Left, "R": codes.SCT.Right}.get(str(image.laterality or "").upper())
    site = hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=laterality)
    groups = [_finding_group(f, i, source, algorithm, site) for i, f in enumerate(image.reported, start=1)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[ALGORITHM_NAME, version]),
            name=ALGORITHM_NAME,
            model_name=f"multi-scale YOLOv5{variant}",
        ),
    )
    if not groups:
        # TID 1500 needs one measurement group: an image-level group (TID 1501) for this image
        groups.append(_no_finding_group(source, algorithm, site))
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


def _finding_group(finding: dict[str, Any], index: int, source: Any, algorithm: Any, site: Any) -> Any:
    """One reported finding as a planar ROI group (TID 1410): rectangle and score."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=finding_polyline(finding["box"]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    measurements = [
        hd.sr.Measurement(
            name=codes.DCM.CertaintyOfFinding,
            value=round(100.0 * float(finding["score"]), 4),
            unit=codes.UCUM.Percent,
            algorithm_id=algorithm,
        )
    ]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), str(index), repr(finding["box"])]),
            identifier=f"finding {index}",
        ),
        referenced_region=region,
        finding_type=codes.SCT.Lesion,
        algorithm_id=algorithm,
        finding_sites=[site],
        measurements=measurements,
    )


def _no_finding_group(source: Any, algorithm: Any, site: Any) -> Any:
    """The image-level group (TID 1501) of an image without a reported finding."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), "no finding"]), identifier="no finding"
        ),
        algorithm_id=algorithm,
        finding_sites=[site],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes.DCM.CADProcessingAndFindingsSummary,
                value=codes.DCM.AllAlgorithmsSucceededWithoutFindings,
            )
        ],
    )
