"""Checkpoints: a plain ``state_dict`` plus a small JSON spec, loaded with ``weights_only=True``.

``model.pt`` holds only tensors (optionally fp16 to halve the size); ``model.json`` beside it
says how to rebuild the network (variant, classes, input channels) and what input it expects
(tile size, pixel spacing, scales). Anything else — a pickled ``nn.Module``, a pickle with
code in it — is refused by PyTorch's safe unpickler and reported as a
:class:`CheckpointError`; no checkpoint ever runs code on load.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write, write_json_atomic
from .yolo import build_network

__all__ = [
    "CheckpointError",
    "NetworkSpec",
    "load_checkpoint",
    "load_weights",
    "read_spec",
    "save_checkpoint",
    "write_spec",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely or does not match its spec."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class NetworkSpec:
    """How to rebuild a network, what input it was trained on, and how its findings are reported.

    ``fusion``: the cross-scale fusion chosen on validation, ``{"name": ..., "kwargs": {...}}``
    (``None``: the paper's WBF). ``operating_point``: the reporting threshold chosen on
    validation, ``{"score_threshold": t, "target_fpi": f, ...}`` (``None``: not calibrated;
    see :func:`monai_smalldet.engines.calibrate_checkpoint`). ``preprocessing``: the input's
    remaining preprocessing settings (``normalize_laterality``, ``crop_breast``,
    ``crop_margin_px``, ``tile_overlap``); with ``pixel_spacing_mm``, ``scales`` and
    ``tile_size_px`` they name the model's
    :class:`~monai_smalldet.transforms.Preprocessing` (``Preprocessing.from_spec``; ``None``:
    a spec from before it was kept, read with that class's defaults).
    """

    variant: str = "n"
    num_classes: int = 1
    in_channels: int = 1
    class_labels: tuple[int, ...] = (1,)
    tile_size_px: int = 1024
    pixel_spacing_mm: float = 0.07
    scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    extra: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] | None = None
    operating_point: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None

    @property
    def score_threshold(self) -> float | None:
        """The calibrated reporting threshold (``None`` when the model has none)."""
        op = self.operating_point or {}
        value = op.get("score_threshold")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["class_labels"], out["scales"] = list(self.class_labels), list(self.scales)
        return {"format_version": FORMAT_VERSION, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        data = {k: v for k, v in data.items() if k != "format_version"}
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown spec fields: {sorted(unknown)}")
        for key in ("class_labels", "scales"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _spec_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(
    path: str | os.PathLike[str], network: torch.nn.Module, spec: NetworkSpec, *, half: bool = False
) -> Path:
    """Write ``path`` (state_dict) and ``path`` with suffix ``.json`` (spec), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = network.module if hasattr(network, "module") else network  # DDP / DataParallel
    state = {
        k: (v.detach().to("cpu", torch.float16 if half and v.is_floating_point() else v.dtype)).clone()
        for k, v in module.state_dict().items()
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    write_spec(path, spec)
    return path


def write_spec(path: str | os.PathLike[str], spec: NetworkSpec) -> Path:
    """Write the JSON spec of checkpoint ``path`` (``path`` with suffix ``.json``) atomically."""
    return write_json_atomic(_spec_path(Path(path)), spec.to_dict())


def read_spec(path: str | os.PathLike[str]) -> NetworkSpec:
    """The JSON spec of checkpoint ``path`` (the ``.json`` beside it), without the weights.

    Raises:
        CheckpointError: the spec file is missing or not a valid spec.
    """
    path = Path(path)
    spec_file = _spec_path(path)
    if not spec_file.is_file():
        raise CheckpointError(path, f"network spec {spec_file.name} not found beside the checkpoint")
    try:
        return NetworkSpec.from_dict(json.loads(spec_file.read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointError(spec_file, f"invalid network spec: {err}") from err


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", spec: NetworkSpec | None = None
) -> tuple[torch.nn.Module, NetworkSpec]:
    """Rebuild the network described by the JSON spec and load its weights safely.

    Args:
        path: the ``.pt`` file; its spec is read from the ``.json`` beside it unless ``spec`` is given.
        map_location: device for the tensors.
        spec: overrides the JSON spec.

    Returns:
        ``(network in eval mode, spec)``; fp16 checkpoints come back as float32.

    Raises:
        CheckpointError: missing files, a pickled object instead of a state_dict, or weights that
            do not fit the spec's network.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    if spec is None:
        spec = read_spec(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            path, "refused: not a plain state_dict of tensors (a pickled object would run code on load)"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(path, f"unreadable checkpoint: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, "refused: expected a state_dict mapping names to tensors")
    network = build_network(spec.variant, spec.num_classes, spec.in_channels)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            path, f"weights do not fit yolov5{spec.variant} ({spec.num_classes} classes): {err}"
        ) from err
    return network.to(map_location).eval(), spec


def load_weights(network: torch.nn.Module, path: str | os.PathLike[str] | None) -> torch.nn.Module:
    """Start ``network`` from the weights of checkpoint ``path`` (fine-tuning, continuing a run).

    ``None`` returns ``network`` unchanged (random initialisation), so a config can write
    ``network: "$load_weights(@network_def, @init_checkpoint)"`` with ``init_checkpoint: null``.

    Raises:
        CheckpointError: the checkpoint is unreadable or its network differs from ``network``.
    """
    if path is None:
        return network
    source, spec = load_checkpoint(path)
    try:
        network.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            Path(path),
            f"its yolov5{spec.variant} ({spec.num_classes} classes) does not fit the network: {err}",
        ) from err
    return network
