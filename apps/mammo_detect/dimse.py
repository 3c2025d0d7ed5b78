"""DIMSE for sites without DICOMweb: a C-STORE sender of the results and a study listener.

Run::

    python -m apps.mammo_detect listen --ae-title MAMMO_DETECT --port 11112 \
        --destination PACS@pacs.example.org:104 -o OUT_DIR -m MODEL_DIR [--idle-seconds 10]

(or with ``MAMMO_DETECT_LISTEN_PORT``, ``MAMMO_DETECT_LISTEN_AE_TITLE``,
``MAMMO_DETECT_DIMSE_DESTINATION`` and the ``HOLOSCAN_*`` paths in a MAP).

The listener is a C-STORE SCP (``pynetdicom``). Each received instance is written to
``SPOOL/.partial/`` and renamed into ``SPOOL/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (on
one filesystem, so no reader ever sees half a file), and only then acknowledged. A study is
complete when no instance of it arrived for ``--idle-seconds``; the app then runs once on
that study's folder, and its result SRs (:func:`.pacs.result_datasets`) go to the destination
by C-STORE (:class:`DimseSender`). The study's received files are deleted only once every
result is stored and no instance arrived during the analysis; a failed send keeps them and
retries after ``--retry-seconds``. A study the app analysed but wrote no result for is moved
to ``SPOOL/.failed/`` (kept for a person to look at, never retried in a loop). On start, every
study already in the spool (a crash, a stop) is processed first. Each study's latest outcome
is in ``OUT_DIR/listener_summary.json`` (rewritten atomically).

The listener lives in the app (``python -m apps.mammo_detect listen``), not in the library's
``monai-smalldet`` command: it runs the app, and the library never imports the app.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom

from monai_smalldet.files import write_json_atomic

from .pacs import PacsError, PacsRejected, PacsTimeout, PacsUnreachable, pending_studies, result_datasets
from .results import safe_name

__all__ = ["DimseSender", "StudyListener", "listen_main", "parse_destination"]

logger = logging.getLogger(__name__)

CALLING_AE = "MAMMO_DETECT"
_SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}  # PS3.4 Annex B.2.3 C-STORE statuses
_CANNOT_UNDERSTAND = 0xC000


def parse_destination(text: str) -> tuple[str, str, int]:
    """``AET@host:port`` -> (AE title, host, port).

    Raises:
        ValueError: naming the text and what is wrong with it.
    """
    aet, sep, address = text.partition("@")
    host, colon, port = address.rpartition(":")
    if not (sep and colon and aet and host and port.isdigit() and 0 < int(port) < 65536 and len(aet) <= 16):
        raise ValueError(f"destination {text!r}: expected AET@host:port (AE title of at most 16 characters)")
    return aet, host, int(port)


class DimseSender:
    """C-STORE SCU of result instances to one destination (``AET@host:port``).

    Args:
        destination: the peer, ``AET@host:port``.
        calling_ae: this application's AE title.
        timeout_s: association, network and DIMSE time-out.
    """

    def __init__(self, destination: str, calling_ae: str = CALLING_AE, timeout_s: float = 30.0) -> None:
        self.destination = destination
        self.aet, self.host, self.port = parse_destination(destination)
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s

    def store(self, study_uid: str, datasets: Sequence[pydicom.Dataset]) -> list[str]:
        """Send the instances over one association; their SOP Instance UIDs in order.

        Raises:
            PacsUnreachable: no association (refused, nothing listening, dropped).
            PacsRejected: the peer rejected the association or answered a failure status.
            PacsTimeout: no answer to a C-STORE within the time-out.
        """
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for value in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, value, self.timeout_s)
        for sop_class, syntax in dict.fromkeys(
            (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
        ):
            ae.add_requested_context(sop_class, syntax)
        where = f"C-STORE of study {study_uid} to {self.destination}"
        assoc = ae.associate(self.host, self.port, ae_title=self.aet)
        if assoc.is_rejected:
            raise PacsRejected(f"{where}: association rejected", study_uid)
        if not assoc.is_established:
            raise PacsUnreachable(f"{where}: no association (refused or no answer)", study_uid)
        sent = []
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsTimeout(f"{where}: no answer for {ds.SOPInstanceUID}", study_uid)
                if code not in _SUCCESS_OR_WARNING:
                    raise PacsRejected(
                        f"{where}: status 0x{code:04X} for {ds.SOPInstanceUID}", study_uid, code
                    )
                sent.append(str(ds.SOPInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()
        return sent


class StudyListener:
    """C-STORE SCP that runs the app on each complete study and sends its results on.

    Args:
        ae_title, port, host: where it listens (``host`` ``""`` = every interface).
        spool: where received studies wait until their results are stored.
        out_dir, model_dir: the app's output and model folders.
        destination: where results go (``AET@host:port``).
        idle_s: a study is complete after this many seconds without a new instance of it.
        retry_s: wait before retrying a study whose results could not be sent.
        timeout_s: the sender's time-out.
        app_main: the app's entry point (default :func:`.app.main`); ``app_kwargs`` go to it.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        spool: Path,
        out_dir: Path,
        model_dir: Path,
        destination: str,
        *,
        host: str = "",
        idle_s: float = 10.0,
        retry_s: float = 60.0,
        timeout_s: float = 30.0,
        app_main: Callable[..., int] | None = None,
        **app_kwargs: Any,
    ) -> None:
        from .app import main as default_main

        self.ae_title, self.port, self.host = ae_title, port, host
        self.spool, self.out_dir, self.model_dir = Path(spool), Path(out_dir), Path(model_dir)
        self.sender = DimseSender(destination, ae_title, timeout_s)
        self.idle_s, self.retry_s = idle_s, retry_s
        self.app_main, self.app_kwargs = app_main or default_main, app_kwargs
        self._lock = threading.Lock()
        self._last_arrival: dict[str, float] = {}  # study UID -> monotonic time of its last instance
        self._retry_at: dict[str, float] = {}
        self._summary: dict[str, Any] = {"ae_title": ae_title, "destination": destination, "studies": {}}
        shutil.rmtree(self.spool / ".partial", ignore_errors=True)  # never acknowledged: resent
        (self.spool / ".partial").mkdir(parents=True)
        for uid in pending_studies(self.spool):  # left by an earlier run: complete, process now
            self._last_arrival[uid] = float("-inf")

    def on_c_store(self, event: Any) -> int:
        """The EVT_C_STORE handler: write the instance atomically, then acknowledge it."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception as err:  # a dataset pydicom cannot decode, or no study / instance UID
            logger.error("C-STORE from %s refused: %s", event.assoc.requestor.ae_title, err)
            return _CANNOT_UNDERSTAND
        partial = self.spool / ".partial" / f"{safe_name(sop)}.{threading.get_ident()}.dcm"
        folder = self.spool / safe_name(study)
        try:
            ds.save_as(partial, enforce_file_format=True)
            folder.mkdir(exist_ok=True)
            os.replace(partial, folder / f"{safe_name(sop)}.dcm")
        except OSError as err:
            logger.error("instance %s of study %s not written: %s", sop, study, err)
            partial.unlink(missing_ok=True)
            return 0xA700  # out of resources
        with self._lock:
            self._last_arrival[study] = time.monotonic()
        return 0x0000

    def ready(self) -> list[str]:
        """The studies complete now (idle long enough, not waiting for a retry)."""
        now = time.monotonic()
        with self._lock:
            return [
                uid
                for uid, last in self._last_arrival.items()
                if now - last >= self.idle_s and now >= self._retry_at.get(uid, float("-inf"))
            ]

    def process(self, study_uid: str) -> dict[str, Any]:
        """Analyse one complete study and send its results (see the module docstring)."""
        folder = self.spool / safe_name(study_uid)
        with self._lock:
            started = self._last_arrival.get(study_uid, float("-inf"))
        argv = ["mammo_detect", "-i", str(folder), "-o", str(self.out_dir), "-m", str(self.model_dir)]
        entry: dict[str, Any] = {"app_exit_status": self.app_main(argv, **self.app_kwargs)}
        entry["processed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            datasets = result_datasets(self.out_dir, study_uid)
        except PacsError as err:
            if entry["app_exit_status"] == 2:  # the app's set-up (model, output), not the study
                self._retry_at[study_uid] = time.monotonic() + self.retry_s
                entry.update(status="failed", stage="analysis", error="app_setup", message=str(err))
                return self._record(study_uid, entry, done=False)
            self._set_aside(study_uid, folder)  # analysed, nothing written: not retried in a loop
            entry.update(status="failed", stage="analysis", error=err.kind, message=str(err))
            return self._record(study_uid, entry, done=True)
        try:
            entry["stored"] = self.sender.store(study_uid, datasets)
        except PacsError as err:
            logger.error("%s; study kept in %s, retried in %.0f s", err, folder, self.retry_s)
            self._retry_at[study_uid] = time.monotonic() + self.retry_s
            entry.update(status="failed", stage="store", error=err.kind, message=str(err))
            return self._record(study_uid, entry, done=False)
        with self._lock:
            arrived_meanwhile = self._last_arrival.get(study_uid, started) > started
        if arrived_meanwhile:  # analysed again once the study is idle, with the new instances
            entry["status"] = "stored; new instances arrived, analysed again when idle"
            return self._record(study_uid, entry, done=False)
        shutil.rmtree(folder, ignore_errors=True)
        entry["status"] = "stored"
        return self._record(study_uid, entry, done=True)

    def _set_aside(self, study_uid: str, folder: Path) -> None:
        failed = self.spool / ".failed" / safe_name(study_uid)
        failed.parent.mkdir(exist_ok=True)
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(folder, failed)
        logger.error("study %s: no result written; its files are in %s", study_uid, failed)

    def _record(self, study_uid: str, entry: dict[str, Any], *, done: bool) -> dict[str, Any]:
        with self._lock:
            if done:
                self._last_arrival.pop(study_uid, None)
                self._retry_at.pop(study_uid, None)
            self._summary["studies"][study_uid] = entry
            write_json_atomic(self.out_dir / "listener_summary.json", self._summary)
        return entry

    def serve(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Listen and process complete studies until ``stop`` is set."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_c_store)]
        )
        logger.info("listening as %s on port %d; spool %s", self.ae_title, self.port, self.spool)
        try:
            while not stop.is_set():
                for uid in self.ready():
                    self.process(uid)
                stop.wait(poll_s)
        finally:
            server.shutdown()


def listen_main(argv: Sequence[str], **app_kwargs: Any) -> int:
    """``listen --port N --destination AET@host:port -o OUT -m MODEL [...]``; runs until SIGTERM
    or SIGINT, then returns 0 (2 for bad arguments)."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="mammo_detect listen", description="DIMSE study listener")
    parser.add_argument("--ae-title", default=env.get("MAMMO_DETECT_LISTEN_AE_TITLE", CALLING_AE))
    parser.add_argument("--port", type=int, default=env.get("MAMMO_DETECT_LISTEN_PORT"))
    parser.add_argument("--host", default="", help="address to listen on (default: every interface)")
    parser.add_argument(
        "--destination", default=env.get("MAMMO_DETECT_DIMSE_DESTINATION"), help="AET@host:port"
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--retry-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--spool", type=Path, default=None, help="default OUT/.dimse_spool")
    parser.add_argument("-o", "--output", type=Path, default=env.get("HOLOSCAN_OUTPUT_PATH"))
    parser.add_argument("-m", "--model", type=Path, default=env.get("HOLOSCAN_MODEL_PATH"))
    args = parser.parse_args(list(argv[2:]))
    given = {"--port": args.port, "--destination": args.destination, "-o": args.output, "-m": args.model}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}")
    try:
        parse_destination(args.destination)
    except ValueError as err:
        parser.error(str(err))
    listener = StudyListener(
        args.ae_title,
        int(args.port),
        args.spool or args.output / ".dimse_spool",
        args.output,
        args.model,
        args.destination,
        host=args.host,
        idle_s=args.idle_seconds,
        retry_s=args.retry_seconds,
        timeout_s=args.timeout,
        **app_kwargs,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listener.serve(stop)
    return 0
