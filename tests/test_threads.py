"""Importing ultralytics through the package keeps the process's thread settings.

ultralytics' ``__init__`` sets ``OMP_NUM_THREADS=1`` when the variable is unset. Left in place,
that made every child process of a run single-threaded (the speed benchmark's workers ran at
half speed on two cores) and pins torch to one thread when its pool starts after the import.
Each check runs in a fresh interpreter, because the import happens once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os, subprocess, sys
{imports}
child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                       capture_output=True, text=True, check=True)
print("PROBE:" + json.dumps({{"env": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads(),
                            "child_torch": int(child.stdout.strip()),
                            "ultralytics": "ultralytics" in sys.modules}}))
"""

THROUGH_PACKAGE = """
from monai_smalldet.networks import build_network
build_network("n")
import torch
"""


def _probe(imports: str, omp: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    code = PROBE.format(imports=imports)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE:")][-1]
    return json.loads(line[len("PROBE:") :])


def test_network_import_leaves_threads_as_without_ultralytics():
    plain = _probe("import torch", None)
    assert plain["env"] is None and not plain["ultralytics"]
    through = _probe(THROUGH_PACKAGE, None)
    assert through["ultralytics"]  # the network really came from ultralytics
    assert through["env"] is None, "OMP_NUM_THREADS left set by the ultralytics import"
    assert through["torch"] == plain["torch"]
    assert through["child_torch"] == plain["child_torch"] == plain["torch"]


def test_a_thread_count_the_user_set_is_kept():
    got = _probe(THROUGH_PACKAGE, "1")
    assert got["env"] == "1" and got["torch"] == 1 and got["child_torch"] == 1
