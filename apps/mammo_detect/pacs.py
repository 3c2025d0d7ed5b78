"""A PACS round trip: studies in over DICOMweb (WADO-RS), CAD results back (STOW-RS or C-STORE).

Run::

    python -m apps.mammo_detect --dicomweb http://pacs:8042/dicom-web --study 1.2.3... [--study ...] \
        -o OUT_DIR -m MODEL_DIR

or, in a MAP, with ``MAMMO_DETECT_DICOMWEB_URL`` and ``MAMMO_DETECT_STUDIES`` (UIDs separated by
commas or spaces) and the ``HOLOSCAN_*`` paths.

Per run: each study is retrieved into ``OUT_DIR/.pacs_incoming/<StudyInstanceUID>/`` (a
staging folder renamed into place once every instance is on disk), the app runs once on
everything there, and each study's result SRs (``cad_sr.dcm``, and the TID 1500 SRs when
``MAMMO_DETECT_WRITE_TID1500=1``) are stored back. An instance the server already holds
(QIDO-RS by SOP Instance UID; the app's report UIDs are deterministic, so a rerun makes the
same ones) is not stored again. A study's received files are deleted only once its results
are stored, so a failed store leaves it pending: the next run analyses and stores every
pending study again, named or not (``--study`` may then be left out). An unreachable server, an
unknown study, an HTTP 4xx/5xx answer or a time-out is a :class:`PacsError` of that study,
logged and recorded in ``OUT_DIR/pacs_summary.json`` (written last, atomically); the other
studies go on. Exit status: 0 when every study's results were stored, 4 when some study
failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from monai_smalldet.files import write_json_atomic

from .results import output_paths, safe_name
from .writer import CAD_SR_NAME

__all__ = [
    "INCOMING",
    "DicomWebPacs",
    "PacsError",
    "PacsRejected",
    "PacsTimeout",
    "PacsUnreachable",
    "StudyNotFound",
    "dicomweb_main",
    "pending_studies",
    "result_datasets",
    "run_dicomweb",
]

logger = logging.getLogger(__name__)

INCOMING = ".pacs_incoming"
"""Folder (inside the output folder) where retrieved studies wait for their results to be stored."""


class PacsError(RuntimeError):
    """A PACS exchange of one study failed; ``kind`` names how (``str(err)`` says what)."""

    kind = "error"

    def __init__(self, message: str, study_uid: str | None = None) -> None:
        super().__init__(message)
        self.study_uid = study_uid


class PacsUnreachable(PacsError):
    """No connection to the server (refused, unknown host, dropped)."""

    kind = "unreachable"


class PacsTimeout(PacsError):
    """The server did not answer within the time-out."""

    kind = "timeout"


class StudyNotFound(PacsError):
    """The server holds no instance of the study."""

    kind = "not_found"


class PacsRejected(PacsError):
    """The server answered with an HTTP error status (or a DIMSE failure status)."""

    kind = "rejected"

    def __init__(self, message: str, study_uid: str | None = None, status: int | None = None) -> None:
        super().__init__(message, study_uid)
        self.status = status


def _translate(err: Exception, url: str, study_uid: str, action: str) -> PacsError:
    """The typed error of a ``requests`` failure while doing ``action`` for ``study_uid``."""
    import requests

    where = f"{action} of study {study_uid} at {url}"
    if isinstance(err, requests.Timeout):
        return PacsTimeout(f"{where}: no answer in time ({err})", study_uid)
    if isinstance(err, requests.ConnectionError):
        return PacsUnreachable(f"{where}: server unreachable ({err})", study_uid)
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else None
        if status == 404:
            return StudyNotFound(f"{where}: not found (HTTP 404)", study_uid)
        return PacsRejected(f"{where}: HTTP {status}", study_uid, status)
    return PacsError(f"{where}: {type(err).__name__}: {err}", study_uid)


class DicomWebPacs:
    """WADO-RS, QIDO-RS and STOW-RS against one DICOMweb root (``dicomweb-client``).

    Args:
        url: the DICOMweb root, for example ``http://127.0.0.1:8042/dicom-web``.
        timeout_s: connect and read time-out of each request.
    """

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        from dicomweb_client import DICOMwebClient

        self.url = url
        self.client = DICOMwebClient(url, timeout=(timeout_s, timeout_s))

    def _call(self, action: str, study_uid: str, fn: Callable[[], Any]) -> Any:
        import requests

        try:
            return fn()
        except requests.RequestException as err:
            raise _translate(err, self.url, study_uid, action) from err

    def retrieve_study(self, study_uid: str, folder: Path) -> list[Path]:
        """Every instance of the study written into ``folder`` (replaced as a whole: a staging
        folder renamed into place, so ``folder`` is never half-written).

        Raises:
            PacsError: the retrieval failed (typed by cause); ``StudyNotFound`` also when the
                server answers with no instance.
        """
        datasets = self._call("retrieval", study_uid, lambda: self.client.retrieve_study(study_uid))
        if not datasets:
            raise StudyNotFound(f"retrieval of study {study_uid} at {self.url}: no instance", study_uid)
        staging = folder.with_name(f".staging-{folder.name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        names = []
        for ds in datasets:
            name = f"{safe_name(ds.get('SOPInstanceUID'))}.dcm"
            ds.save_as(staging / name, enforce_file_format=True)
            names.append(name)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return [folder / n for n in names]

    def has_instance(self, study_uid: str, sop_uid: str) -> bool:
        """Whether the server holds the instance (QIDO-RS on the study, by SOP Instance UID)."""
        found = self._call(
            "search",
            study_uid,
            lambda: self.client.search_for_instances(
                study_instance_uid=study_uid, search_filters={"SOPInstanceUID": sop_uid}
            ),
        )
        return any(sop_uid in str(item.get("00080018", {}).get("Value", [])) for item in found or [])

    def store(self, study_uid: str, ds: pydicom.Dataset) -> None:
        """STOW-RS of one instance; a failed SOP in the answer is a :class:`PacsRejected`."""
        answer = self._call("store", study_uid, lambda: self.client.store_instances([ds], study_uid))
        failed = getattr(answer, "FailedSOPSequence", None)
        if failed:
            reason = failed[0].get("FailureReason", "?")
            raise PacsRejected(
                f"store of {ds.SOPInstanceUID} at {self.url}: failure reason {reason}", study_uid
            )


def result_datasets(out_dir: Path, study_uid: str) -> list[pydicom.Dataset]:
    """The result SRs the app wrote for a study: the CAD SR, then the TID 1500 SRs.

    Raises:
        PacsError: the study has no written results (no ``summary.json``: not analysed, or its
            write failed).
    """
    paths = output_paths(out_dir, study_uid)
    if not paths["summary"].is_file():
        raise PacsError(f"study {study_uid}: the app wrote no results (see run_summary.json)", study_uid)
    files = [paths["study_dir"] / CAD_SR_NAME] if (paths["study_dir"] / CAD_SR_NAME).is_file() else []
    files += sorted(paths["study_dir"].glob("*.sr.dcm"))
    return [pydicom.dcmread(f) for f in files]


def pending_studies(folder: Path) -> dict[str, Path]:
    """StudyInstanceUID -> sub-folder of each study waiting in ``folder`` (read from the first
    readable DICOM header in it; staging and hidden folders are left out, unreadable ones skipped)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sub.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                found[str(ds.StudyInstanceUID)] = sub
                break
            except (OSError, AttributeError, InvalidDicomError) as err:
                logger.warning("%s: not a readable DICOM header (%s); skipped", f, err)
    return found


def _store_results(pacs: DicomWebPacs, out_dir: Path, study_uid: str) -> dict[str, list[str]]:
    stored, present = [], []
    for ds in result_datasets(out_dir, study_uid):
        sop = str(ds.SOPInstanceUID)
        if pacs.has_instance(study_uid, sop):
            present.append(sop)
            continue
        pacs.store(study_uid, ds)
        stored.append(sop)
    return {"stored": stored, "already_present": present}


def _failure(err: PacsError, stage: str) -> dict[str, Any]:
    logger.error("%s", err)
    return {"status": "failed", "stage": stage, "error": err.kind, "message": str(err)}


def run_dicomweb(
    url: str,
    studies: Sequence[str],
    out_dir: Path,
    model_dir: Path,
    *,
    timeout_s: float = 30.0,
    app_main: Callable[..., int] | None = None,
    **app_kwargs: Any,
) -> int:
    """Retrieve, analyse and store back each study (see the module docstring); exit status."""
    from .app import main as default_main

    app_main = app_main or default_main
    out_dir = Path(out_dir).absolute()
    incoming = out_dir / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    pacs = DicomWebPacs(url, timeout_s)
    report: dict[str, Any] = {"server": url, "studies": {}}
    earlier = pending_studies(incoming)
    for uid in dict.fromkeys(studies):
        try:
            files = pacs.retrieve_study(uid, incoming / safe_name(uid))
            report["studies"][uid] = {"status": "retrieved", "instances": len(files)}
        except PacsError as err:
            report["studies"][uid] = _failure(err, "retrieve")
    for uid in earlier:
        report["studies"].setdefault(uid, {"status": "pending from an earlier run"})
    pending = [u for u in report["studies"] if (incoming / safe_name(u)).is_dir()]
    if pending:
        argv = ["mammo_detect", "-i", str(incoming), "-o", str(out_dir), "-m", str(model_dir)]
        report["app_exit_status"] = app_main(argv, **app_kwargs)
    for uid in pending:
        entry = report["studies"][uid]
        try:
            entry.update(_store_results(pacs, out_dir, uid), status="stored")
            shutil.rmtree(incoming / safe_name(uid))
        except PacsError as err:
            entry.update(_failure(err, "store"))
    write_json_atomic(out_dir / "pacs_summary.json", report)
    return 0 if all(s["status"] == "stored" for s in report["studies"].values()) else 4


_SPLIT = re.compile(r"[\s,]+")


def dicomweb_main(argv: Sequence[str], **app_kwargs: Any) -> int:
    """``--dicomweb URL --study UID ... -o OUT -m MODEL`` (environment variables fill what is
    not given: ``MAMMO_DETECT_DICOMWEB_URL``, ``MAMMO_DETECT_STUDIES``,
    ``MAMMO_DETECT_PACS_TIMEOUT_S``, ``HOLOSCAN_OUTPUT_PATH``, ``HOLOSCAN_MODEL_PATH``)."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="mammo_detect", description="DICOMweb round trip")
    parser.add_argument("--dicomweb", default=env.get("MAMMO_DETECT_DICOMWEB_URL"), help="DICOMweb root URL")
    parser.add_argument("--study", action="append", default=None, help="StudyInstanceUID (repeat)")
    parser.add_argument("-o", "--output", default=env.get("HOLOSCAN_OUTPUT_PATH"))
    parser.add_argument("-m", "--model", default=env.get("HOLOSCAN_MODEL_PATH"))
    parser.add_argument("--timeout", type=float, default=float(env.get("MAMMO_DETECT_PACS_TIMEOUT_S", 30)))
    args = parser.parse_args(list(argv[1:]))
    studies = args.study or [s for s in _SPLIT.split(env.get("MAMMO_DETECT_STUDIES", "")) if s]
    missing = [
        name
        for name, value in (("--dicomweb", args.dicomweb), ("-o", args.output), ("-m", args.model))
        if not value
    ]
    pending = args.output and pending_studies(Path(args.output) / INCOMING)
    if missing or not (studies or pending):
        parser.error(f"missing {', '.join(missing + ([] if studies else ['--study']))}")
    return run_dicomweb(
        args.dicomweb, studies, Path(args.output), Path(args.model), timeout_s=args.timeout, **app_kwargs
    )
