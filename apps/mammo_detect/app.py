"""MONAI Deploy application: DICOM mammograms in, DICOM SR + JSON + PNG overlay findings out.

Run::

    python -m apps.mammo_detect -i DICOM_DIR -o OUT_DIR -m MODEL_DIR
    HOLOSCAN_INPUT_PATH=... HOLOSCAN_OUTPUT_PATH=... HOLOSCAN_MODEL_PATH=... python -m apps.mammo_detect

``MODEL_DIR`` holds ``model.pt`` + ``model.json`` (``monai_smalldet.networks.save_checkpoint``),
or one sub-folder that does (a MAP's ``/opt/holoscan/models/<name>/``).

Outputs, per study ``<out>/<StudyInstanceUID>/``: ``<SOPInstanceUID>.sr.dcm`` (TID 1500 SR),
``<SOPInstanceUID>.overlay.png`` and ``summary.json``; ``<out>/run_summary.json`` for the run.

Exit status: 0 when every study ran (images that could not be read are listed as failed in
the JSON); 1 when every selected image failed or the run raised; 2 for a missing or empty input
folder or no model; 3 when the input holds no Modality MG For Presentation image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, RuntimeEnv, parse_args
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from .operators import (
    DICOMSRWriterOperator,
    GuardedDICOMDataLoaderOperator,
    JSONSummaryWriterOperator,
    MammoDetectionOperator,
    OverlayWriterOperator,
    ReportPolicy,
    find_checkpoint,
    output_paths,
    write_json_atomic,
)

__all__ = ["SELECTION_RULES", "MammoDetectApp", "env_detector_overrides", "env_report_policy", "main"]

logger = logging.getLogger(__name__)

#: DICOMSeriesSelectorOperator rules: every series of Modality MG whose (first) instance is
#: For Presentation. PresentationIntentType is an instance attribute: the selector reads it
#: from the series' first instance; the detection operator checks every instance again.
SELECTION_RULES = json.dumps(
    {
        "selections": [
            {
                "name": "MG For Presentation",
                "conditions": {"Modality": "(?i)^MG$", "PresentationIntentType": "(?i)^FOR PRESENTATION$"},
            }
        ]
    }
)


ENV_OVERRIDES = {"MAMMO_DETECT_BACKEND": "backend", "MAMMO_DETECT_PRECISION": "precision"}
ENV_ASSUME_SPACING = "MAMMO_DETECT_ASSUME_SPACING_MM"
ENV_REPORT = {
    "MAMMO_DETECT_REPORT_MIN_SCORE": ("min_score", float),
    "MAMMO_DETECT_REPORT_MAX_FINDINGS": ("max_findings", int),
}


def env_detector_overrides(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Detector options given by environment variables (how a MAP container is configured)."""
    environ = dict(os.environ if environ is None else environ)
    return {key: environ[name] for name, key in ENV_OVERRIDES.items() if environ.get(name)}


def env_report_policy(environ: dict[str, str] | None = None) -> ReportPolicy:
    """The :class:`ReportPolicy` with ``MAMMO_DETECT_REPORT_MIN_SCORE`` /
    ``MAMMO_DETECT_REPORT_MAX_FINDINGS`` applied when set.

    Raises:
        ValueError: a variable that does not parse, or lies out of range (named).
    """
    environ = dict(os.environ if environ is None else environ)
    kwargs: dict[str, Any] = {}
    for name, (key, kind) in ENV_REPORT.items():
        if environ.get(name):
            try:
                kwargs[key] = kind(environ[name])
            except ValueError:
                raise ValueError(f"{name}={environ[name]!r} is not a valid {kind.__name__}") from None
    try:
        return ReportPolicy(**kwargs)
    except ValueError as err:
        raise ValueError(f"{', '.join(ENV_REPORT)}: {err}") from None


def env_assume_spacing_mm(environ: dict[str, str] | None = None) -> float | None:
    """``MAMMO_DETECT_ASSUME_SPACING_MM``: the spacing (mm) at which an image that records none is
    read; unset: such an image fails with its reason.

    Raises:
        ValueError: a value that is not a positive number (named).
    """
    environ = dict(os.environ if environ is None else environ)
    text = environ.get(ENV_ASSUME_SPACING)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{ENV_ASSUME_SPACING}={text!r} is not a positive number of mm")
    return value


class MammoDetectApp(Application):
    """DICOM loader -> MG series selector -> multi-scale detection -> SR / JSON / PNG writers.

    Args:
        argv: ``[python, prog, *args]`` as for any MONAI Deploy app (``-i/-o/-m/-l``; the
            ``HOLOSCAN_INPUT_PATH``/``HOLOSCAN_OUTPUT_PATH``/``HOLOSCAN_MODEL_PATH`` variables fill
            what is not given).
        detector: an already built ``MultiScaleDetector`` to use instead of loading the model
            path's checkpoint (tests).
        device: torch device for the model (``None``: CUDA when present).
        detector_overrides: keyword arguments for ``MultiScaleDetector.from_checkpoint``;
            by default the ``MAMMO_DETECT_BACKEND`` (``torch``/``onnxruntime``) and
            ``MAMMO_DETECT_PRECISION`` (``auto``/``fp32``/``bf16``/``fp16``) variables, when set.
        report_policy: the findings the SR and the overlay show (default: ``ReportPolicy()``
            with the ``MAMMO_DETECT_REPORT_MIN_SCORE`` / ``MAMMO_DETECT_REPORT_MAX_FINDINGS``
            variables applied); ``summary.json`` lists every finding either way.
    """

    name = "mammo_detect"
    description = "Multi-scale detection of small breast cancers on mammograms (monai-smalldet)."

    def __init__(
        self,
        argv: list[str] | None = None,
        *args: Any,
        detector: Any = None,
        device: str | None = None,
        detector_overrides: dict[str, Any] | None = None,
        report_policy: ReportPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        self._detector = detector
        self._report_policy = report_policy if report_policy is not None else env_report_policy()
        self._device = device
        if detector_overrides is None:
            detector_overrides = env_detector_overrides()
        self._detector_overrides = detector_overrides
        self._assume_spacing_mm = env_assume_spacing_mm()
        self.detection_op: MammoDetectionOperator | None = None
        self.output_path: Path | None = None
        self.input_path: Path | None = None
        super().__init__(argv, *args, **kwargs)

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        self.input_path = Path(app_context.input_path).absolute()
        self.output_path = Path(app_context.output_path).absolute()
        self.output_path.mkdir(parents=True, exist_ok=True)
        model_path = Path(app_context.model_path).absolute()

        loader = GuardedDICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=self.input_path, must_load=False, name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(
            self, rules=SELECTION_RULES, all_matched=True, name="mg_series_selector"
        )
        detection = MammoDetectionOperator(
            self,
            model_path=model_path,
            device=self._device,
            detector=self._detector,
            detector_overrides=self._detector_overrides,
            input_path=self.input_path,
            report_policy=self._report_policy,
            assume_spacing_mm=self._assume_spacing_mm,
            name="mammo_detection",
        )
        sr_writer = DICOMSRWriterOperator(self, out_dir=self.output_path, name="sr_writer")
        json_writer = JSONSummaryWriterOperator(self, out_dir=self.output_path, name="json_writer")
        overlay_writer = OverlayWriterOperator(self, out_dir=self.output_path, name="overlay_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(loader, detection, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, detection, {("study_selected_series_list", "study_selected_series_list")})
        for writer in (sr_writer, json_writer, overlay_writer):
            self.add_flow(detection, writer, {("results", "results")})
        self.detection_op = detection

    def run_summary(self) -> dict[str, Any]:
        """What the last run did, over all studies (also written to ``run_summary.json``)."""
        op = self.detection_op
        results = op.results if op is not None else []
        studies = []
        for study in results:
            ok = [i for i in study.images if i.status == "ok"]
            failed = [i for i in study.images if i.status != "ok"]
            studies.append(
                {
                    "study_instance_uid": study.study_instance_uid,
                    "summary_file": str(
                        output_paths(self.output_path or ".", study.study_instance_uid)[
                            "summary"
                        ].relative_to((self.output_path or Path(".")).resolve())
                    ),
                    "num_images": len(ok),
                    "num_failed": len(failed),
                    "num_findings": sum(len(i.findings) for i in ok),
                    "rss_mb_after_detection": round(study.rss_mb, 1),
                }
            )
        return {
            "input": str(self.input_path),
            "model": op.model_info if op is not None else None,
            "studies": studies,
            "num_images": sum(s["num_images"] for s in studies),
            "num_failed": sum(s["num_failed"] for s in studies),
            "unloaded_files": op.unloaded_files if op is not None else [],
            "skipped_series": op.skipped_series if op is not None else [],
        }


def _has_files(folder: Path) -> bool:
    for _, _, files in os.walk(folder):
        if files:
            return True
    return False


def _fail(code: int, message: str) -> int:
    print(f"mammo_detect: error: {message}", file=sys.stderr, flush=True)
    logger.error(message)
    return code


def _uncalibrated(checkpoint: Path) -> str | None:
    """Why the app cannot pick a reporting threshold for ``checkpoint`` (``None``: it can)."""
    from monai_smalldet.networks import NetworkSpec

    try:
        spec = NetworkSpec.from_dict(json.loads(checkpoint.with_suffix(".json").read_text()))
    except (OSError, ValueError, TypeError) as err:
        return f"{checkpoint.with_suffix('.json')}: unreadable model spec: {err}"
    if spec.score_threshold is None:
        return (
            f"{checkpoint}: the model has no calibrated operating point (run `monai-smalldet calibrate` on "
            "validation data) and MAMMO_DETECT_REPORT_MIN_SCORE is not set"
        )
    return None


def main(argv: list[str] | None = None, *, detector: Any = None, **app_kwargs: Any) -> int:
    """Check the paths, run the app, write ``run_summary.json``; return the exit status.

    Args:
        argv: ``[prog, *args]`` (default ``sys.argv``).
        detector, app_kwargs: passed to :class:`MammoDetectApp`.
    """
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv)  # argparse exits with status 2 on a bad option or missing path
    env = RuntimeEnv()
    input_path = Path(args.input or env.input).absolute()
    model_path = Path(args.model or env.model).absolute()
    if not input_path.is_dir():
        return _fail(2, f"input folder {input_path} does not exist or is not a folder")
    if not _has_files(input_path):
        return _fail(2, f"input folder {input_path} is empty: no DICOM files to process")
    if detector is None:
        try:
            find_checkpoint(model_path)
        except FileNotFoundError as err:
            return _fail(2, str(err))
    if app_kwargs.get("report_policy") is None:
        try:
            app_kwargs["report_policy"] = env_report_policy()
        except ValueError as err:
            return _fail(2, str(err))
    try:
        env_assume_spacing_mm()
    except ValueError as err:
        return _fail(2, str(err))
    if detector is None and app_kwargs["report_policy"].min_score is None:
        problem = _uncalibrated(find_checkpoint(model_path))
        if problem:
            return _fail(2, problem)

    t0 = time.perf_counter()
    app = MammoDetectApp([sys.executable, *argv], detector=detector, **app_kwargs)
    try:
        app.run()
    except Exception as err:  # the holoscan run re-raises an operator's exception
        logger.exception("run failed")
        return _fail(1, f"run failed: {type(err).__name__}: {err}")
    summary = app.run_summary()
    summary["timings_s"] = {"total": round(time.perf_counter() - t0, 4)}
    if app.output_path is not None:
        write_json_atomic(app.output_path / "run_summary.json", summary)
    if not summary["studies"]:
        return _fail(3, f"no Modality MG For Presentation image found in {input_path}")
    if summary["num_images"] == 0:
        return _fail(1, f"every selected image failed ({summary['num_failed']}); see the summary.json files")
    print(
        f"mammo_detect: {summary['num_images']} image(s) processed, {summary['num_failed']} failed, "
        f"{sum(s['num_findings'] for s in summary['studies'])} finding(s); outputs in {app.output_path}",
        flush=True,
    )
    return 0
