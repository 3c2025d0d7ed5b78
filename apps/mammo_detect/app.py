"""MONAI Deploy application: DICOM mammograms in, Mammography CAD SR + JSON + PNG overlays out.

Run::

    python -m apps.mammo_detect -i DICOM_DIR -o OUT_DIR -m MODEL_DIR
    HOLOSCAN_INPUT_PATH=... HOLOSCAN_OUTPUT_PATH=... HOLOSCAN_MODEL_PATH=... python -m apps.mammo_detect
    python -m apps.mammo_detect --dicomweb URL --study UID -o OUT_DIR -m MODEL_DIR   (see .pacs)
    python -m apps.mammo_detect listen --port N --destination AET@host:port -o OUT_DIR -m MODEL_DIR
        (a DIMSE listener, see .dimse)

``MODEL_DIR`` holds ``model.pt`` + ``model.json`` (``monai_smalldet.networks.save_checkpoint``),
or one sub-folder that does (a MAP's ``/opt/holoscan/models/<name>/``).

Outputs, per study ``<out>/<StudyInstanceUID>/``, written as soon as the study is detected,
all or nothing (:mod:`.writer`): ``cad_sr.dcm`` (Mammography CAD SR, TID 4000),
``<SOPInstanceUID>.overlay.png``, ``summary.json`` (last: the study's completion marker) and,
with ``MAMMO_DETECT_WRITE_TID1500=1``, ``<SOPInstanceUID>.sr.dcm`` (TID 1500 per image);
``<out>/run_summary.json`` for the run (written at its end: the run's completion marker).

Exit status: 0 when every selected image was analysed and every study's results written;
4 when some images failed or some study's results could not be written (both listed in
``run_summary.json``); 1 when every selected image failed or the run raised; 2 for a missing
or empty input folder, an output folder that cannot be written, a bad setting or no model;
3 when the input holds no Modality MG For Presentation image.
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

from monai.deploy.conditions import BooleanCondition, CountCondition
from monai.deploy.core import Application, RuntimeEnv, parse_args
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from monai_smalldet.files import write_json_atomic

from .operators import (
    GuardedDICOMDataLoaderOperator,
    MammoDetectionOperator,
    ReportPolicy,
    find_checkpoint,
    output_paths,
)
from .writer import StudyWriterOperator, WriteOptions

__all__ = [
    "SELECTION_RULES",
    "MammoDetectApp",
    "env_detector_overrides",
    "env_report_policy",
    "env_write_options",
    "main",
]

logger = logging.getLogger(__name__)

#: DICOMSeriesSelectorOperator rules: every series of Modality MG. Presentation Intent Type is
#: an instance attribute, which the selector would read from a series' first instance only (a
#: series mixing For Processing and For Presentation instances was then kept or dropped by file
#: order): the detection operator decides it per instance.
SELECTION_RULES = json.dumps({"selections": [{"name": "MG", "conditions": {"Modality": "(?i)^MG$"}}]})


ENV_OVERRIDES = {"MAMMO_DETECT_BACKEND": "backend", "MAMMO_DETECT_PRECISION": "precision"}
ENV_ASSUME_SPACING = "MAMMO_DETECT_ASSUME_SPACING_MM"
ENV_FLAGS = {
    "MAMMO_DETECT_WRITE_TID1500": "write_tid1500",
    "MAMMO_DETECT_REPORT_OPTIONAL": "include_optional",
}
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


def env_write_options(environ: dict[str, str] | None = None) -> WriteOptions:
    """:class:`WriteOptions` from ``MAMMO_DETECT_WRITE_TID1500`` / ``MAMMO_DETECT_REPORT_OPTIONAL``
    (``1``/``true``/``yes`` or ``0``/``false``/``no``).

    Raises:
        ValueError: a value that is none of these (named).
    """
    environ = dict(os.environ if environ is None else environ)
    kwargs = {}
    for name, key in ENV_FLAGS.items():
        text = environ.get(name, "").strip().lower()
        if not text:
            continue
        if text not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"{name}={environ[name]!r} is not one of 1/true/yes/0/false/no")
        kwargs[key] = text in ("1", "true", "yes")
    return WriteOptions(**kwargs)


def env_input_limits(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``max_pixels`` / ``plausible_spacing_mm`` from ``MAMMO_DETECT_MAX_PIXELS`` /
    ``MAMMO_DETECT_SPACING_RANGE_MM`` (``low-high``), when set.

    Raises:
        ValueError: a value that does not parse (named).
    """
    from .checks import parse_spacing_range

    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    if environ.get("MAMMO_DETECT_MAX_PIXELS"):
        text = environ["MAMMO_DETECT_MAX_PIXELS"]
        if not text.isdigit() or int(text) <= 0:
            raise ValueError(f"MAMMO_DETECT_MAX_PIXELS={text!r} is not a positive integer")
        out["max_pixels"] = int(text)
    if environ.get("MAMMO_DETECT_SPACING_RANGE_MM"):
        try:
            out["plausible_spacing_mm"] = parse_spacing_range(environ["MAMMO_DETECT_SPACING_RANGE_MM"])
        except ValueError as err:
            raise ValueError(f"MAMMO_DETECT_SPACING_RANGE_MM: {err}") from None
    return out


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
        write_options: what is written per study (default: :func:`env_write_options`).
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
        write_options: WriteOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self._detector = detector
        self._write_options = write_options if write_options is not None else env_write_options()
        self._report_policy = report_policy if report_policy is not None else env_report_policy()
        self._device = device
        if detector_overrides is None:
            detector_overrides = env_detector_overrides()
        self._detector_overrides = detector_overrides
        self._assume_spacing_mm = env_assume_spacing_mm()
        self._input_limits = env_input_limits()
        self.detection_op: MammoDetectionOperator | None = None
        self.writer_op: StudyWriterOperator | None = None
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
            BooleanCondition(self, name="more_studies"),
            model_path=model_path,
            device=self._device,
            detector=self._detector,
            detector_overrides=self._detector_overrides,
            input_path=self.input_path,
            report_policy=self._report_policy,
            assume_spacing_mm=self._assume_spacing_mm,
            **self._input_limits,
            name="mammo_detection",
        )
        writer = StudyWriterOperator(
            self, out_dir=self.output_path, options=self._write_options, name="study_writer"
        )

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(loader, detection, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, detection, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(detection, writer, {("study_result", "study_result")})
        self.detection_op = detection
        self.writer_op = writer

    def run_summary(self) -> dict[str, Any]:
        """What the last run did, over all studies (also written to ``run_summary.json``)."""
        op = self.detection_op
        results = op.results if op is not None else []
        outcomes = {o.study_instance_uid: o for o in (self.writer_op.outcomes if self.writer_op else [])}
        root = (self.output_path or Path(".")).resolve()
        studies = []
        for study in results:
            ok = [i for i in study.images if i.status == "ok"]
            failed = [i for i in study.images if i.status != "ok"]
            outcome = outcomes.get(study.study_instance_uid)
            written = outcome is not None and outcome.error is None
            summary_path = output_paths(root, study.study_instance_uid)["summary"]
            studies.append(
                {
                    "study_instance_uid": study.study_instance_uid,
                    "written": written,
                    "write_error": outcome.error if outcome is not None else "not written (the run stopped)",
                    "summary_file": str(summary_path.relative_to(root)) if written else None,
                    "files": outcome.files if written else [],
                    "cad_sr_not_written": outcome.cad_sr if written else None,
                    "num_images": len(ok),
                    "num_failed": len(failed),
                    "num_findings": sum(len(i.findings) for i in ok),
                    "num_reported": sum(len(i.reported) for i in ok),
                    "rss_mb_after_detection": round(study.rss_mb, 1),
                }
            )
        return {
            "input": str(self.input_path),
            "model": op.model_info if op is not None else None,
            "studies": studies,
            "num_images": sum(s["num_images"] for s in studies),
            "num_failed": sum(s["num_failed"] for s in studies),
            "num_studies_not_written": sum(not s["written"] for s in studies),
            "unloaded_files": op.unloaded_files if op is not None else [],
            "skipped_series": op.skipped_series if op is not None else [],
        }


def _writable(folder: Path) -> str | None:
    """Why ``folder`` cannot take the app's outputs (``None``: it can)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return f"output folder {folder} is not writable: {err.strerror or err}"
    return None


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
    if argv[1:2] == ["listen"]:
        from .dimse import listen_main

        return listen_main(argv, detector=detector, **app_kwargs)
    if "--dicomweb" in argv or (
        os.environ.get("MAMMO_DETECT_DICOMWEB_URL") and not {"-i", "--input"} & set(argv)
    ):
        from .pacs import dicomweb_main

        return dicomweb_main(argv, detector=detector, **app_kwargs)
    return _folder_main(argv, detector=detector, **app_kwargs)


def _folder_main(argv: list[str], *, detector: Any, **app_kwargs: Any) -> int:
    """The folder-in, folder-out run of :func:`main` (``-i``/``-o`` or the ``HOLOSCAN_*`` paths)."""
    try:
        args = parse_args(argv)  # argparse exits with status 2 on a bad option or missing path
    except OSError as err:  # the SDK's -o type creates the folder: read-only or full filesystem
        return _fail(2, f"output folder {err.filename} cannot be created: {err.strerror or err}")
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
        env_input_limits()
        if app_kwargs.get("write_options") is None:
            app_kwargs["write_options"] = env_write_options()
    except ValueError as err:
        return _fail(2, str(err))
    problem = _writable(Path(args.output or env.output).absolute())
    if problem:
        return _fail(2, problem)
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
    summary["complete"] = True
    if app.output_path is not None:
        try:
            write_json_atomic(app.output_path / "run_summary.json", summary)
        except OSError as err:
            return _fail(4, f"run_summary.json not written: {err.strerror or err}")
    if summary["num_images"] + summary["num_failed"] == 0:
        return _fail(3, f"no Modality MG For Presentation image found in {input_path}")
    if summary["num_images"] == 0:
        return _fail(1, f"every selected image failed ({summary['num_failed']}); see the summary.json files")
    print(
        f"mammo_detect: {summary['num_images']} image(s) processed, {summary['num_failed']} failed, "
        f"{sum(s['num_reported'] for s in summary['studies'])} finding(s) reported; outputs in {app.output_path}",
        flush=True,
    )
    if summary["num_failed"] or summary["num_studies_not_written"]:
        return _fail(
            4,
            f"{summary['num_failed']} image(s) failed, {summary['num_studies_not_written']} study result(s) "
            "not written; see run_summary.json",
        )
    return 0
