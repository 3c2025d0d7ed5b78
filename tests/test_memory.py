"""Peak memory of tiled detection on the largest FFDM size is bounded (a generous bound).

Runs in a fresh interpreter so that ru_maxrss measures this job alone. The figure itself
belongs to the benchmarks; this test only guards against unbounded growth (e.g. every tile
of every level materialised and batched at once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

BOUND_GIB = 4.0

SCRIPT = textwrap.dedent(
    """
    import json, resource
    import numpy as np, torch
    torch.set_num_threads(2)
    from monai_smalldet.inference import MultiScaleDetector
    from monai_smalldet.networks import build_network
    torch.manual_seed(0)
    image = np.zeros((1, 5625, 4096), np.float32)   # GE Senographe-size FFDM
    yy, xx = np.mgrid[0:5625:8, 0:4096:8]
    image[:, ::8, ::8] = (((xx / 3000.0) ** 2 + ((yy - 2800) / 2400.0) ** 2) < 1) * 0.5
    image = np.ascontiguousarray(np.repeat(np.repeat(image[:, ::8, ::8], 8, 1), 8, 2)[:, :5625, :4096])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    detector = MultiScaleDetector(build_network("n"), tile_size=1024, batch_size=2, device="cpu")
    out = detector.predict(image, laterality="L")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps({"peak_gib": peak / 2**20, "before_gib": base / 2**20,
                                  "tiles": out.tiles_per_scale}))
    """
)


@pytest.mark.slow
def test_peak_memory_of_tiled_detection_on_the_largest_ffdm():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert sum(result["tiles"]) > 10  # really tiled, at full resolution
    assert result["peak_gib"] < BOUND_GIB, result
