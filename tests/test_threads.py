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


def _cgroup(tmp_path, name, files):
    root = tmp_path / name
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_available_cpus_follows_the_cgroup_quota(tmp_path):
    """cgroup v2 cpu.max and v1 cfs quota cap the CPUs (rounded up); no limit or garbage: the affinity."""
    from monai_smalldet.runtime import available_cpus

    mine = len(os.sched_getaffinity(0))
    cases = {
        "v2_one": ({"cpu.max": "100000 100000\n"}, 1),
        "v2_half": ({"cpu.max": "50000 100000\n"}, 1),
        "v2_max": ({"cpu.max": "max 100000\n"}, mine),
        "v2_garbage": ({"cpu.max": "lots\n"}, mine),
        "v1_one_and_a_half": (
            {"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            min(mine, 2),
        ),
        "v1_unlimited": ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, mine),
        "none": ({}, mine),
    }
    nowhere = tmp_path / "no_proc_cgroup"
    for name, (files, expected) in cases.items():
        assert available_cpus(_cgroup(tmp_path, name, files), nowhere) == expected, name
    big = _cgroup(tmp_path, "v2_big", {"cpu.max": f"{(mine + 8) * 100000} 100000\n"})
    assert available_cpus(big, nowhere) == mine  # a quota above the affinity does not add CPUs


def test_available_cpus_reads_the_processs_own_cgroup(tmp_path):
    """Outside a cgroup namespace the quota sits on the process's own cgroup (or an ancestor),
    named in /proc/self/cgroup, not at the mount root: v1 (cpu,cpuacct controller) and v2."""
    from monai_smalldet.runtime import available_cpus

    mine = len(os.sched_getaffinity(0))
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/user\n3:cpu,cpuacct:/apps/mammo/run1\n0::/system.slice/app.service\n")
    v1 = _cgroup(
        tmp_path,
        "v1",
        {
            "cpu,cpuacct/apps/mammo/cpu.cfs_quota_us": "100000\n",  # an ancestor of the process's cgroup
            "cpu,cpuacct/apps/mammo/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert available_cpus(v1, proc) == 1
    v2 = _cgroup(
        tmp_path, "v2", {"system.slice/app.service/cpu.max": "100000 100000\n", "cpu.max": "max 100000\n"}
    )
    assert available_cpus(v2, proc) == 1
    unrelated = _cgroup(tmp_path, "other", {"other.slice/cpu.max": "100000 100000\n"})
    assert available_cpus(unrelated, proc) == mine


def test_torch_threads_follow_the_affinity_mask():
    """A process pinned to one CPU (as --cpuset-cpus / taskset do) runs torch on one thread."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "import torch; torch.set_num_threads(8); "
        "from monai_smalldet.runtime import limit_threads_to_available_cpus; "
        "print(limit_threads_to_available_cpus())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "1"
    env["OMP_NUM_THREADS"] = "3"  # an explicit setting wins
    code3 = code.replace("torch.set_num_threads(8); ", "torch.set_num_threads(3); ")
    out = subprocess.run([sys.executable, "-c", code3], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "3"
