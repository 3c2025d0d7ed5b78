"""A real PACS for the tests: Orthanc with its DICOMweb plugin, on loopback ports.

Started by the test with a temporary storage folder and stopped afterwards; the Debian
packages ``orthanc`` and ``orthanc-dicomweb`` provide it (``.ci/system-tools`` installs them;
without them the tests skip, or fail under ``CI=true``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.tools import require_tool

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process; ``modalities`` maps a name to (AE title, port) on 127.0.0.1."""

    def __init__(self, root: Path, modalities: dict[str, tuple[str, int]] | None = None) -> None:
        self.binary = require_tool("Orthanc", "orthanc")
        if not DICOMWEB_PLUGIN.is_file():
            require_tool("orthanc-dicomweb-plugin-missing", "orthanc-dicomweb")
        self.root = root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.modalities = modalities or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> Orthanc:
        config = {
            "Name": "monai-smalldet-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {k: [aet, "127.0.0.1", port] for k, (aet, port) in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "orthanc.json").write_text(json.dumps(config))
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen(
            [self.binary, str(self.root / "orthanc.json")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        pytest.fail("Orthanc did not start in 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def upload(self, path: Path) -> dict:
        """The REST upload (POST /instances) of one DICOM file."""
        r = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
        r.raise_for_status()
        return r.json()

    def push(self, modality: str, resource: str) -> None:
        """C-STORE of an Orthanc resource (study, series or instance ID) to a configured modality."""
        r = requests.post(
            f"{self.url}/modalities/{modality}/store",
            json={"Resources": [resource], "Synchronous": True},
            timeout=120,
        )
        r.raise_for_status()

    def instances_of(self, study_uid: str, modality: str | None = None) -> list[dict]:
        """QIDO-RS: the instances of a study (optionally of one modality), as DICOM JSON."""
        params = {"Modality": modality} if modality else {}
        r = requests.get(f"{self.dicomweb}/studies/{study_uid}/instances", params=params, timeout=30)
        if r.status_code == 204 or not r.content:
            return []
        r.raise_for_status()
        return r.json()
