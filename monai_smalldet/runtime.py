"""Process-wide settings that keep third-party libraries offline and out of ``$HOME``.

This is the single place in the package that prepares the environment of ultralytics,
matplotlib and friends. It runs when :mod:`monai_smalldet` is imported, i.e. before any
module of the package imports ultralytics, so that:

* ``YOLO_OFFLINE=1``: ultralytics' ``is_online()`` answers ``False`` without a DNS lookup;
* ``YOLO_CONFIG_DIR`` and ``MPLCONFIGDIR`` point under the project cache, not ``~/.config``;
* a TrueType font (matplotlib's DejaVuSans) is placed where ultralytics looks for
  ``Arial.ttf``, so ``check_font`` never tries a download;
* ultralytics' settings are switched to ``sync=False`` (no telemetry) on first import of
  :mod:`monai_smalldet.networks`, see :func:`configure_ultralytics_settings`;
* importing ultralytics does not make the process single-threaded: its ``__init__`` sets
  ``OMP_NUM_THREADS=1`` when the variable is unset ("reduced CPU utilization during
  training"), which pins PyTorch to one thread if torch's thread pool starts afterwards and
  every child process (benchmark workers, a CLI run from a script) to one thread. The
  variable is restored to what the user had (unset) right after the import.

Values already present in the environment are respected (``setdefault``), so a deployment
can point the caches elsewhere. The cache directory is ``$MONAI_SMALLDET_CACHE_DIR`` if set,
else ``<source checkout>/.cache`` when running from a checkout, else
``<tmp>/monai-smalldet-<uid>``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from .files import atomic_write

__all__ = [
    "available_cpus",
    "cache_dir",
    "configure_offline",
    "configure_ultralytics_settings",
    "limit_threads_to_available_cpus",
]

_CONFIGURED = False


def cache_dir() -> Path:
    """Return (and create) the project's cache directory; never inside ``$HOME`` by default."""
    env = os.environ.get("MONAI_SMALLDET_CACHE_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        checkout = Path(__file__).resolve().parent.parent
        if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
            path = checkout / ".cache"
        else:
            path = Path(tempfile.gettempdir()) / f"monai-smalldet-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _place_font(yolo_config_dir: Path) -> None:
    """Copy matplotlib's DejaVuSans to ``<YOLO_CONFIG_DIR>/Ultralytics/Arial.ttf`` if absent."""
    target = yolo_config_dir / "Ultralytics" / "Arial.ttf"
    if target.exists():
        return
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a hard dependency
        return
    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not source.is_file():  # pragma: no cover - part of every matplotlib wheel
        return
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def configure_offline() -> Path:
    """Set the offline/cache environment once per process; return the cache directory."""
    global _CONFIGURED
    root = cache_dir()
    if _CONFIGURED:
        return root
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    os.environ.setdefault("MPLCONFIGDIR", str(root / "matplotlib"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(root / "numba"))
    os.environ.setdefault("TORCH_HOME", str(root / "torch"))
    os.environ.setdefault("CUPY_CACHE_DIR", str(root / "cupy"))  # imported by monai.deploy via holoscan
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    _place_font(Path(os.environ["YOLO_CONFIG_DIR"]))
    # `import monai` loads holoscan (through monai.deploy), which warns about the thread stack
    # size on every import; the warning concerns holoscan's own GPU operators, not this package
    warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)
    _CONFIGURED = True
    return root


def _import_ultralytics_keeping_threads() -> None:
    """Import ultralytics without its ``OMP_NUM_THREADS=1`` outliving the import.

    torch's intra-op pool is started first (from the user's environment, as it would be
    without ultralytics); while ultralytics imports, ``OMP_NUM_THREADS`` holds that same count
    so ultralytics leaves it alone, and it is unset again afterwards. A value the user set is
    never touched.
    """
    import sys

    if "ultralytics" in sys.modules or os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    try:
        import ultralytics  # noqa: F401
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def configure_ultralytics_settings() -> None:
    """Import ultralytics offline, keeping the thread settings, and turn its telemetry off."""
    configure_offline()
    _import_ultralytics_keeping_threads()
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)


def _cgroup_dirs(root: Path, proc_cgroup: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """The cgroup folders whose CPU quota applies to this process: ``(v2, v1)``, each from the
    process's own cgroup (``/proc/self/cgroup``) up to the mount root, which is the whole list
    inside a container (its cgroup namespace makes its own cgroup the root)."""
    v2, v1 = [root], [root / "cpu", root / "cpu,cpuacct"]
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        rel = Path(parts[2].lstrip("/"))
        chain = [rel, *rel.parents][:-1]  # the own folder and its ancestors, not the root itself
        if parts[0] == "0" and parts[1] == "":
            v2 = [root / c for c in chain] + v2
        elif "cpu" in parts[1].split(","):
            mount = parts[1]
            v1 = [root / d / c for d in dict.fromkeys(("cpu", mount)) for c in chain] + v1
    return v2, v1


def _quota_cpus(v2: list[Path], v1: list[Path]) -> int | None:
    """The smallest CPU quota (rounded up) among those folders; ``None``: no quota."""
    found: list[int] = []
    for folder in v2:  # cgroup v2: "max 100000" (no limit) or "<quota> <period>"
        try:
            text = (folder / "cpu.max").read_text().split()
            if len(text) == 2 and text[0] != "max" and float(text[0]) > 0 and float(text[1]) > 0:
                found.append(math.ceil(float(text[0]) / float(text[1])))
        except (OSError, ValueError):
            continue
    for folder in v1:  # cgroup v1: quota -1 means no limit
        try:
            quota = float((folder / "cpu.cfs_quota_us").read_text())
            period = float((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            found.append(math.ceil(quota / period))
    return min(found) if found else None


def available_cpus(
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
    proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
) -> int:
    """CPUs this process may actually use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` (what torch sizes its thread pool by) counts the host's CPUs; in a
    container limited by a quota (``docker run --cpus 2``: cgroup v2 ``cpu.max`` "200000
    100000", or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) or pinned to some CPUs
    (``--cpuset-cpus``, ``taskset``), more threads than that only oversubscribe. The quota is
    read from the process's own cgroup and its ancestors (``proc_cgroup``), the smallest
    applies, rounded up (1.5 CPUs -> 2 threads); at least 1.

    Args:
        cgroup_root: where the cgroup file system is mounted (tests point it elsewhere).
        proc_cgroup: the process's cgroup membership file.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _quota_cpus(*_cgroup_dirs(Path(cgroup_root), proc_cgroup))
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, int(cpus))


def limit_threads_to_available_cpus() -> int:
    """Size torch's intra-op thread pool by :func:`available_cpus` (unless ``OMP_NUM_THREADS``
    says otherwise); return the number of threads torch uses."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        wanted = available_cpus()
        if torch.get_num_threads() > wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()
