"""Writing files so that a reader never sees half of one: the package's one atomic-write helper.

Every file the package writes (checkpoints and specs, DICOM, JSON results, PNG overlays and
plots, datasets) goes through :func:`atomic_write`: it is written under a temporary name in the
target's own folder, ``.<name>.<pid>.<random>.tmp<suffix>``, then moved onto the target with
:func:`os.replace` (atomic on POSIX and Windows within one file system). A writer that fails
leaves the previous file, if any, untouched and removes its temporary; a process killed mid-write
leaves only a dot-file that matches :data:`TEMPORARY_GLOB`, which the batch commands remove when
they start again.

This module imports nothing else of the package, so every layer may use it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TEMPORARY_GLOB", "atomic_write", "remove_temporaries", "write_json_atomic"]

TEMPORARY_GLOB = ".*.tmp*"
"""Names of the temporaries :func:`atomic_write` uses (glob pattern, in the target's folder)."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it onto ``path``.

    Args:
        path: the file to write; its folder is created.
        write: writes the whole content to the path it is given.
        suffix: ending of the temporary name, for writers that choose the format by it (``".png"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        Whatever ``write`` raises; ``path`` is then as it was and the temporary is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # only left after a failed write
    return target


def write_json_atomic(path: str | os.PathLike[str], payload: Any, **dumps_kwargs: Any) -> Path:
    """Write ``payload`` as JSON (``indent=1`` unless given, a final newline, UTF-8) atomically."""
    dumps_kwargs.setdefault("indent", 1)
    text = json.dumps(payload, **dumps_kwargs) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Remove the temporaries a killed writer left directly in ``folder``; return how many."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    stale = [p for p in root.glob(TEMPORARY_GLOB) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
