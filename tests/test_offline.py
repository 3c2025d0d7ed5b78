"""Nothing reaches the network and nothing is written to $HOME.

Each check runs in a fresh interpreter (an audit hook cannot be removed once installed, and
modules must be imported for the first time) with ``HOME`` pointed at an empty folder and the
project cache at another. The hook records every socket operation that Python audits
that reaches beyond the process (``socket.connect``, ``socket.getaddrinfo``, name look-ups,
``sendto``, ``urllib.Request``, ``http.client.connect``); the checks then assert that none
occurred and that ``HOME`` is still empty. A ``bind`` to the loopback address (urllib3 probes
IPv6 support that way on import) sends nothing and is not counted. The hook sees Python-level
socket use; native code that opens sockets on its own (none is known here) would not show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

AUDITOR = textwrap.dedent(
    """
    import json, os, sys
    EVENTS = []
    NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
               "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "urllib.Request", "http.client.connect"}
    def _audit(event, args):
        if event in NETWORK:
            EVENTS.append([event, repr(args)[:200]])
    sys.addaudithook(_audit)
    """
)
REPORT = "\nprint('AUDIT:' + json.dumps(EVENTS))\n"


def run_audited(body: str, tmp_path: Path) -> list[list[str]]:
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "MPL", "XDG_"))}
    env.update(HOME=str(home), MONAI_SMALLDET_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    code = AUDITOR + textwrap.dedent(body) + REPORT
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("AUDIT:")][-1]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"files written under $HOME: {written}"
    return json.loads(line[len("AUDIT:") :])


def test_the_auditor_sees_a_connection_attempt(tmp_path):
    """The probe itself works: a refused loopback connection is recorded."""
    events = run_audited(
        """
        import socket
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", 9))
        except OSError:
            pass
        s.close()
        """,
        tmp_path,
    )
    assert [e[0] for e in events] == ["socket.connect"]


@pytest.mark.slow
def test_import_network_and_generator_make_no_network_attempt(tmp_path):
    events = run_audited(
        """
        import monai_smalldet
        import monai
        import torch
        from monai_smalldet.networks import build_network
        from monai_smalldet.data.synthetic import generate_dataset
        from ultralytics.utils import SETTINGS, checks
        net = build_network("n", num_classes=1)
        net.eval()
        with torch.inference_mode():
            net(torch.rand(1, 1, 64, 64))
        assert SETTINGS["sync"] is False
        assert str(checks.check_font("Arial.ttf")).startswith(os.environ["MONAI_SMALLDET_CACHE_DIR"])
        generate_dataset(os.path.join(os.environ["MONAI_SMALLDET_CACHE_DIR"], "ds"),
                         n_train=1, n_val=0, n_test=0, scale=0.05, progress=False)
        """,
        tmp_path,
    )
    assert events == []
    assert (tmp_path / "cache" / "ultralytics" / "Ultralytics" / "Arial.ttf").is_file()


@pytest.mark.slow
def test_detect_command_and_deploy_app_make_no_network_attempt(tmp_path):
    """The CLI's detect and the MONAI Deploy app, end to end on a synthetic study, offline."""
    events = run_audited(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from pathlib import Path
        import torch
        from monai_smalldet.cli import main
        from monai_smalldet.data.synthetic import generate_dataset
        from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint
        root = Path(os.environ["MONAI_SMALLDET_CACHE_DIR"]) / "run"
        generate_dataset(root / "data", n_train=0, n_val=2, n_test=4, scale=0.08, progress=False)
        torch.manual_seed(0)
        spec = NetworkSpec(tile_size_px=128, pixel_spacing_mm=1.75, scales=(1.0, 0.5))
        save_checkpoint(root / "model" / "model.pt", build_network("n"), spec)
        # the app reports at the model's operating point: calibrated here, offline too
        assert main(["calibrate", "--checkpoint", str(root / "model" / "model.pt"),
                     "--datalist", str(root / "data" / "datalist.json"), "--split", "validation"]) == 0
        assert main(["detect", str(root / "data" / "test"), "--checkpoint", str(root / "model" / "model.pt"),
                     "--out", str(root / "pred"), "--quiet"]) == 0
        from apps.mammo_detect.app import main as app_main
        os.environ["MAMMO_DETECT_SPACING_RANGE_MM"] = "0.02-2"  # the small synthetic images' 1.75 mm
        code = app_main(["mammo_detect", "-i", str(root / "data" / "test"), "-o", str(root / "app"),
                         "-m", str(root / "model")])
        assert code == 0, code
        assert list((root / "app").rglob("cad_sr.dcm"))
        """,
        tmp_path,
    )
    assert events == []
