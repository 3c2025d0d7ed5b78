"""The hospital round trip against a real PACS (Orthanc + its DICOMweb plugin, on 127.0.0.1).

A four-view synthetic study is uploaded to Orthanc; the app retrieves it over DICOMweb
(WADO-RS), analyses it (with the fake network of ``tests/test_app.py``, whose findings land on
the drawn square) and stores its Mammography CAD SR back (STOW-RS). The test then asks Orthanc
for the SR (QIDO-RS), reads it back and compares it with the app's JSON; a rerun must store
nothing twice; an unknown study, an unreachable server and a server stopped between retrieval
and store are typed failures of their study that leave the others going.

The same over DIMSE: Orthanc sends the study (C-STORE) to the app's listener, which analyses
it once complete and sends the SR back (C-STORE); a listener whose destination is down keeps
the study, and a new listener on the same spool (a restart) sends it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("monai.deploy.core")
pytest.importorskip("dicomweb_client")
from dicomweb_client import DICOMwebClient  # noqa: E402

from apps.mammo_detect import main  # noqa: E402
from apps.mammo_detect.dimse import StudyListener, parse_destination  # noqa: E402
from apps.mammo_detect.pacs import INCOMING  # noqa: E402
from apps.mammo_detect.results import output_paths  # noqa: E402
from monai_smalldet.reports import read_mammography_cad_sr  # noqa: E402
from tests.orthanc import AE_TITLE as ORTHANC_AET  # noqa: E402
from tests.orthanc import Orthanc, free_port  # noqa: E402
from tests.test_app import LESION, VIEWS, _fake_detector, _write_view  # noqa: E402
from tests.tools import cad_and_json_findings  # noqa: E402


@pytest.fixture(scope="module")
def study_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pacs_study")
    files = [_write_view(folder, i, lat, view, square) for i, (lat, view, square) in enumerate(VIEWS)]
    ref = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {"files": files, "study_uid": str(ref.StudyInstanceUID), "lcc_sop": str(ref.SOPInstanceUID)}


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()


def _loaded(server: Orthanc, study: dict) -> Orthanc:
    for f in study["files"]:
        server.upload(f)
    return server


def _model_dir(out: Path) -> Path:
    """An existing model folder for the SDK's argument check (the fake detector ignores it)."""
    model = out.parent / "model"
    model.mkdir(parents=True, exist_ok=True)
    return model


def _run(url: str, studies: list[str], out: Path, **kwargs) -> int:
    argv = ["mammo_detect", "--dicomweb", url, "-o", str(out), "-m", str(_model_dir(out))]
    for uid in studies:
        argv += ["--study", uid]
    return main(argv, detector=_fake_detector(), **kwargs)


def _sr_instances(server: Orthanc, study_uid: str) -> list[dict]:
    return server.instances_of(study_uid, modality="SR")


def test_dicomweb_round_trip_stores_the_cad_sr_and_its_findings_match_the_json(
    orthanc, study_files, tmp_path
):
    _loaded(orthanc, study_files)
    uid = study_files["study_uid"]
    out = tmp_path / "out"
    assert _run(orthanc.dicomweb, [uid], out) == 0
    report = json.loads((out / "pacs_summary.json").read_text())
    assert report["studies"][uid]["status"] == "stored" and len(report["studies"][uid]["stored"]) == 1
    assert not (out / INCOMING / uid).exists()  # received files go once the results are stored

    srs = _sr_instances(orthanc, uid)
    assert len(srs) == 1
    series, sop = srs[0]["0020000E"]["Value"][0], srs[0]["00080018"]["Value"][0]
    local = pydicom.dcmread(output_paths(out, uid)["study_dir"] / "cad_sr.dcm")
    assert sop == local.SOPInstanceUID
    stored = DICOMwebClient(orthanc.dicomweb).retrieve_instance(uid, series, sop)  # WADO-RS
    _assert_findings_match_the_json(stored, out, study_files)


def _assert_findings_match_the_json(stored: pydicom.Dataset, out: Path, study_files: dict) -> None:
    """The CAD SR read back from the PACS reports exactly the app's reported findings."""
    uid = study_files["study_uid"]
    cad = read_mammography_cad_sr(stored)
    summary = json.loads(output_paths(out, uid)["summary"].read_text())
    got, expected = cad_and_json_findings(cad, summary)
    assert got == expected and len(got) >= 1
    x1, y1, x2, y2 = LESION
    for sop_uid, (bx1, by1, bx2, by2), _ in got:  # on the drawn square of the left CC
        assert sop_uid == study_files["lcc_sop"]
        assert x1 <= (bx1 + bx2) / 2 <= x2 and y1 <= (by1 + by2) / 2 <= y2


def test_a_rerun_stores_nothing_twice(orthanc, study_files, tmp_path):
    _loaded(orthanc, study_files)
    uid = study_files["study_uid"]
    out = tmp_path / "out"
    assert _run(orthanc.dicomweb, [uid], out) == 0
    assert _run(orthanc.dicomweb, [uid], out) == 0
    report = json.loads((out / "pacs_summary.json").read_text())
    assert report["studies"][uid]["stored"] == [] and len(report["studies"][uid]["already_present"]) == 1
    assert len(_sr_instances(orthanc, uid)) == 1


def test_an_unknown_study_fails_alone(orthanc, study_files, tmp_path):
    _loaded(orthanc, study_files)
    uid, unknown = study_files["study_uid"], "1.2.826.0.1.3680043.8.498.999999"
    out = tmp_path / "out"
    assert _run(orthanc.dicomweb, [unknown, uid], out) == 4
    report = json.loads((out / "pacs_summary.json").read_text())
    assert (
        report["studies"][unknown]["error"] == "not_found"
        and report["studies"][unknown]["stage"] == "retrieve"
    )
    assert report["studies"][uid]["status"] == "stored"
    assert len(_sr_instances(orthanc, uid)) == 1


def test_an_unreachable_server_is_a_typed_failure_of_each_study(tmp_path, study_files):
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    assert _run(url, [study_files["study_uid"]], out) == 4
    entry = json.loads((out / "pacs_summary.json").read_text())["studies"][study_files["study_uid"]]
    assert entry["error"] == "unreachable" and url in entry["message"]
    assert not (out / INCOMING / study_files["study_uid"]).exists()


def test_a_server_stopped_before_the_store_keeps_the_study_for_the_next_run(orthanc, study_files, tmp_path):
    from apps.mammo_detect.app import main as app_main

    _loaded(orthanc, study_files)
    uid = study_files["study_uid"]
    out = tmp_path / "out"

    def analyse_then_stop(argv, **kwargs):
        code = app_main(argv, **kwargs)
        orthanc.stop()  # the PACS goes away while the results are being written
        return code

    argv = ["mammo_detect", "--dicomweb", orthanc.dicomweb, "--study", uid, "-o", str(out)]
    argv += ["-m", str(_model_dir(out))]
    from apps.mammo_detect.pacs import dicomweb_main

    assert dicomweb_main(argv, app_main=analyse_then_stop, detector=_fake_detector()) == 4
    entry = json.loads((out / "pacs_summary.json").read_text())["studies"][uid]
    assert entry["stage"] == "store" and entry["error"] == "unreachable"
    assert len(list((out / INCOMING / uid).glob("*.dcm"))) == len(study_files["files"])  # kept
    orthanc.start()  # same storage folder: the study is still there, the SR is not
    assert _run(orthanc.dicomweb, [], out) == 0  # no study named: the pending one is stored
    assert json.loads((out / "pacs_summary.json").read_text())["studies"][uid]["status"] == "stored"
    assert len(_sr_instances(orthanc, uid)) == 1
    assert not (out / INCOMING / uid).exists()


# --- DIMSE: Orthanc -> listener (C-STORE SCP) -> app -> C-STORE back to Orthanc ----------------


def _listening(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _serve_while(listener: StudyListener, work, timeout_s: float = 180) -> None:
    """Run the listener here (the app runs in this thread, as in ``listen``) while ``work()``
    runs beside it; stop when ``work`` returns. ``work``'s exception is raised here."""
    stop, errors = threading.Event(), []

    def side():
        try:
            assert _listening(listener.port, time.monotonic() + 30), "listener did not start"
            work()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)
        finally:
            stop.set()

    thread = threading.Thread(target=side, daemon=True)
    thread.start()
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        listener.serve(stop, poll_s=0.2)
    finally:
        timer.cancel()
        thread.join(30)
    if errors:
        raise errors[0]


def _wait_for(condition, what: str, timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _listener_summary(out: Path) -> dict:
    path = out / "listener_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {"studies": {}}


@pytest.fixture
def dimse_setup(tmp_path, study_files):
    port = free_port()
    server = Orthanc(tmp_path / "orthanc", modalities={"mammo": ("MAMMO_DETECT", port)}).start()
    study_id = [server.upload(f) for f in study_files["files"]][0]["ParentStudy"]
    yield {"orthanc": server, "port": port, "study_id": study_id, "out": tmp_path / "out"}
    server.stop()


def _listener(setup: dict, destination: str, **kwargs) -> StudyListener:
    out = setup["out"]
    out.mkdir(exist_ok=True)
    spool = out / ".dimse_spool"
    return StudyListener(
        "MAMMO_DETECT", setup["port"], spool, out, _model_dir(out), destination,
        host="127.0.0.1", detector=_fake_detector(), **kwargs,
    )  # fmt: skip


def test_dimse_listener_round_trip_and_a_resend_stores_nothing_twice(dimse_setup, study_files):
    orthanc, out, uid = dimse_setup["orthanc"], dimse_setup["out"], study_files["study_uid"]
    destination = f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}"
    listener = _listener(dimse_setup, destination, idle_s=1.0)

    def push_twice():
        orthanc.push("mammo", dimse_setup["study_id"])
        _wait_for(lambda: _sr_instances(orthanc, uid), "the SR in Orthanc")
        first = _listener_summary(out)["studies"][uid]["processed_at"]
        time.sleep(1.1)  # processed_at has a resolution of one second
        orthanc.push("mammo", dimse_setup["study_id"])  # the modality sends the study again
        _wait_for(lambda: _listener_summary(out)["studies"][uid]["processed_at"] != first, "the second run")

    _serve_while(listener, push_twice)
    entry = _listener_summary(out)["studies"][uid]
    assert entry["status"] == "stored" and len(entry["stored"]) == 1
    srs = _sr_instances(orthanc, uid)
    assert len(srs) == 1  # the same deterministic SOP Instance UID: stored again, not twice
    assert not (out / ".dimse_spool" / uid).exists()  # received files go once results are stored
    series, sop = srs[0]["0020000E"]["Value"][0], srs[0]["00080018"]["Value"][0]
    stored = DICOMwebClient(orthanc.dicomweb).retrieve_instance(uid, series, sop)
    _assert_findings_match_the_json(stored, out, study_files)


def test_dimse_destination_down_keeps_the_study_and_a_restarted_listener_sends_it(dimse_setup, study_files):
    orthanc, out, uid = dimse_setup["orthanc"], dimse_setup["out"], study_files["study_uid"]
    dead = f"{ORTHANC_AET}@127.0.0.1:{free_port()}"  # nothing listens there
    first = _listener(dimse_setup, dead, idle_s=0.5, retry_s=3600, timeout_s=5)

    def push_then_wait_for_the_failed_send():
        orthanc.push("mammo", dimse_setup["study_id"])
        _wait_for(lambda: uid in _listener_summary(out)["studies"], "the failed send")

    _serve_while(first, push_then_wait_for_the_failed_send)
    entry = _listener_summary(out)["studies"][uid]
    assert entry["stage"] == "store" and entry["error"] == "unreachable" and dead in entry["message"]
    kept = out / ".dimse_spool" / uid
    assert len(list(kept.glob("*.dcm"))) == len(study_files["files"])  # nothing lost
    assert _sr_instances(orthanc, uid) == []

    restarted = _listener(dimse_setup, f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}", idle_s=3600)
    _serve_while(restarted, lambda: _wait_for(lambda: _sr_instances(orthanc, uid), "the SR after restart"))
    assert _listener_summary(out)["studies"][uid]["status"] == "stored"
    assert not kept.exists() and len(_sr_instances(orthanc, uid)) == 1


@pytest.mark.parametrize("text", ["PACS@host", "host:104", "@host:104", "PACS@host:0", "A" * 17 + "@h:104"])
def test_a_malformed_destination_is_named_in_the_error(text):
    with pytest.raises(ValueError, match="AET@host:port") as err:
        parse_destination(text)
    assert repr(text) in str(err.value)
