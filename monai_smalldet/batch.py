"""Detection over a batch of image files: one JSON result per image, failures listed, nothing lost.

:func:`detect_files` is the library's batch entry point; ``monai-smalldet detect`` and the
bundle's inference workflow (:func:`monai_smalldet.engines.run_detect`) are thin layers over it.
For each input file it reads the image (:class:`~monai_smalldet.transforms.LoadMammogram`), runs
the detector, and writes ``<name>.json`` (findings in original-image pixels and mm, each marked
``reported`` at the operating point) and optionally ``<name>.png`` (overlay) to the output
folder. An image that cannot be read, has no usable spacing, or runs past the time limit is
recorded in ``failed.json`` (file, error type, reason naming the file) and the batch goes on.
Every file is written atomically (:mod:`monai_smalldet.files`); ``resume`` skips the images whose
JSON is already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import remove_temporaries, write_json_atomic

__all__ = [
    "IMAGE_SUFFIXES",
    "BatchResult",
    "ImageTimeoutError",
    "detect_files",
    "expand_inputs",
    "operating_point",
]

log = logging.getLogger("monai_smalldet")

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".nii", ".nii.gz")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for image files (sorted, de-duplicated)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p for p in item.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
            )
        else:
            files.append(item)
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def _output_name(path: Path, roots: Sequence[Path]) -> str:
    """A file name unique per input: its path relative to the input folder, '/' -> '__'."""
    resolved = path.resolve()
    for root in roots:
        root = root.resolve()
        if root.is_dir() and resolved.is_relative_to(root):
            rel = resolved.relative_to(root)
            break
    else:
        rel = Path(path.name)
    name = "__".join(rel.parts)
    for suffix in (".nii.gz", ".dcm", ".dicom", ".png", ".tiff", ".tif", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unique_output_names(files: Sequence[Path], roots: Sequence[Path]) -> dict[Path, str]:
    """Output names per input file; two inputs with the same name (e.g. ``L_CC.dcm`` of two
    patients given one by one) get a short hash of their full path so neither overwrites the other."""

    names = {path: _output_name(path, roots) for path in files}
    counts = Counter(names.values())
    for path, name in names.items():
        if counts[name] > 1:
            digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
            names[path] = f"{name}-{digest}"
    return names


class ImageTimeoutError(RuntimeError):
    """An image took longer than the per-image time limit."""


class _Deadline(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None, path: Path) -> Iterator[None]:
    """Raise :class:`ImageTimeoutError` if the block runs longer than ``seconds`` (main thread, POSIX)."""
    if (
        not seconds
        or threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "setitimer")
    ):
        yield
        return

    def _expired(signum: int, frame: object) -> None:
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Deadline:
        raise ImageTimeoutError(f"{path}: time limit of {seconds:g} s per image exceeded") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _patient_identity(path: Path) -> dict[str, str | None]:
    """Patient ID, name and birth date from a DICOM header (only written with --keep-phi)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM (PNG, NIfTI): no identity to keep
        return {"id": None, "name": None, "birth_date": None}
    return {
        "id": str(ds.get("PatientID", "") or "") or None,
        "name": str(ds.get("PatientName", "") or "") or None,
        "birth_date": str(ds.get("PatientBirthDate", "") or "") or None,
    }


def operating_point(detector: Any, given: float | None = None) -> dict[str, Any]:
    """The reporting threshold of a batch and where it comes from: ``given`` (the caller's: the
    command line's ``--report-threshold``; ``source: "given"``), the
    checkpoint's calibrated operating point (for the fusion in use), or none."""
    if given is not None:
        return {"score_threshold": float(given), "source": "given"}
    if getattr(detector, "score_threshold", None) is not None:
        return {
            "score_threshold": detector.score_threshold,
            "source": "checkpoint",
            **(detector.spec.operating_point or {}),
        }
    return {"score_threshold": None, "source": None}


@dataclass
class BatchResult:
    """What :func:`detect_files` did.

    Attributes:
        out_dir: the output folder.
        written: the JSON result of each image done (skipped-as-done ones included with ``resume``).
        failed: ``{"image", "error", "reason"}`` per image that failed (also in ``failed.json``).
    """

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def detect_files(
    detector: Any,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    report_threshold: float | None = None,
    overlay: bool = False,
    overlay_threshold: float | None = None,
    resume: bool = False,
    keep_phi: bool = False,
    time_limit_s: float | None = None,
    assume_spacing_mm: float | None = None,
    progress: bool = False,
) -> BatchResult:
    """Run ``detector`` on every image file of ``inputs`` and write one JSON per image.

    Args:
        detector: a :class:`~monai_smalldet.inference.MultiScaleDetector`.
        inputs: image files, or folders searched recursively for :data:`IMAGE_SUFFIXES`. Output
            names are paths relative to the given folder (``/`` -> ``__``); two inputs with the
            same name get a short hash of their path.
        out_dir: the output folder (created).
        checkpoint: recorded in each JSON's ``model``.
        report_threshold: score at which a finding is ``reported`` (default: the checkpoint's
            calibrated operating point, see :func:`operating_point`; none: nothing is marked).
        overlay: also write a PNG per image with the findings at ``overlay_threshold``
            (default: the reporting threshold, else 0.25).
        resume: skip images whose JSON exists.
        keep_phi: add the DICOM patient ID, name and birth date to each JSON (off by default).
        time_limit_s: per-image limit (main thread on POSIX), else :class:`ImageTimeoutError`.
        assume_spacing_mm: spacing of images that record none (default: they fail, see
            :meth:`~monai_smalldet.inference.MultiScaleDetector.predict`).
        progress: show a progress bar.

    Returns: :class:`BatchResult`; ``failed.json`` is written in ``out_dir`` either way.
    """
    from tqdm.auto import tqdm

    from . import __version__
    from .data.dicom import MammogramReadError
    from .transforms.loading import LoadMammogram

    point = operating_point(detector, report_threshold)
    if overlay_threshold is None:
        overlay_threshold = point["score_threshold"] if point["score_threshold"] is not None else 0.25
    roots = [Path(i) for i in inputs]
    files, out = expand_inputs(roots), Path(out_dir)
    remove_temporaries(out)  # half-written files a killed run left
    result = BatchResult(out_dir=out)
    model = {
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "monai_smalldet": __version__,
    }
    loader = LoadMammogram()
    names = _unique_output_names(files, roots)
    for path in tqdm(files, desc="detecting", unit="img", disable=not progress):
        name = names[path]
        target = out / f"{name}.json"
        if resume and target.is_file():
            result.written.append(target)
            continue
        try:
            with _time_limit(time_limit_s, path):
                image = loader(str(path))
                found = detector.predict(image, assume_spacing_mm=assume_spacing_mm)
        except (MammogramReadError, ValueError, RuntimeError) as err:
            reason = str(err) if path.name in str(err) else f"{path}: {err}"  # the reason names the file
            log.warning("skipped %s: %s", path, err)
            result.failed.append({"image": str(path), "error": type(err).__name__, "reason": reason})
            continue
        payload = _payload(detector, path, image.meta, found, model, point)
        if keep_phi:
            payload["patient"] = _patient_identity(path)
        result.written.append(write_json_atomic(target, payload))
        if overlay:
            _write_overlay(image, found.fused, out / f"{name}.png", path.name, overlay_threshold)
    write_json_atomic(out / "failed.json", result.failed)
    return result


def _payload(
    detector: Any, path: Path, meta: Any, found: Any, model: dict[str, Any], point: dict[str, Any]
) -> dict[str, Any]:
    """One image's JSON result; each finding marked ``reported`` at ``point``'s threshold.

    ``laterality``, ``view``, their ``*_source`` and ``header_checks`` are the detector's
    (:meth:`~monai_smalldet.inference.MultiScaleOutput.to_dict`): the header's values, else the
    pixels' (source ``"pixels"``), with any header value the pixels contradict reported.
    """
    threshold = point["score_threshold"]
    found_dict = found.to_dict()
    payload = {
        "image": str(path.resolve()),
        **{k: found_dict.pop(k, None) for k in ("laterality", "laterality_source", "view", "view_source")},
        "header_checks": found_dict.pop("header_checks", {}),
        "model": model,
        "mode": detector.mode,
        "fusion": detector.fusion_name,
        "fusion_kwargs": detector.fusion_kwargs,
        "operating_point": point,
        **found_dict,
    }
    if payload.get("spacing_source") == "meta":  # the attribute: ImagerPixelSpacing, PixelSpacing
        payload["spacing_source"] = str(meta.get("spacing_source") or "meta")
    elif payload.get("spacing_source") == "assumed":
        log.warning(
            "%s records no pixel spacing: detected at the assumed %s mm (sizes in mm follow from it)",
            path,
            payload.get("pixel_spacing_mm"),
        )
    for finding in payload["findings"]:
        finding["reported"] = threshold is not None and finding["score"] >= threshold
        if payload.get("spacing_source") == "assumed":
            finding["spacing_assumed"] = True
    return payload


def _write_overlay(image: Any, fused: Any, target: Path, title: str, threshold: float) -> None:
    """The overlay PNG of the findings at or above ``threshold``."""
    from .visualize import overlay_png

    keep = fused.scores >= threshold
    overlay_png(
        image[0].numpy(),
        target,
        fused.boxes[keep],
        fused.scores[keep],
        title=f"{title}: {int(keep.sum())} findings >= {threshold:.3g}",
    )
