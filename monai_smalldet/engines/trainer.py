"""Tile-based training of the YOLOv5 detector as a MONAI ``SupervisedTrainer``.

A training batch is a list of tiles drawn from all pyramid levels by
:class:`~monai_smalldet.transforms.RandTileSamplerd` (positive:negative ratio), each tile a
dict with ``image`` (1, T, T) and its own number of boxes ``box`` (N, 4) ``(x1, y1, x2, y2)``
tile pixels (x = column) and ``label`` (N,). :func:`detection_collate` stacks the images and
keeps the targets per tile; :class:`DetectionTrainer` runs the network in train mode and
:class:`~monai_smalldet.networks.DetectionLoss` on them.

The optimisation follows ultralytics' recipe for YOLOv5: SGD (lr 0.01, momentum 0.937,
Nesterov), weight decay 5e-4 on convolution weights only (:func:`yolo_param_groups`), a
linear warm-up then cosine decay to ``lr * final_factor`` (:func:`warmup_cosine_lambda`, for
``torch.optim.lr_scheduler.LambdaLR`` stepped every iteration by MONAI's
``LrScheduleHandler(epoch_level=False)``), gradient norm clipped at 10.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

__all__ = [
    "DetectionTrainer",
    "denormals_are_flushed",
    "detection_collate",
    "flush_denormals",
    "warmup_cosine_lambda",
    "yolo_param_groups",
]


def denormals_are_flushed() -> bool:
    """Whether this thread's CPU now flushes denormal floats to zero (torch has no getter: a
    subnormal float32 times 2 is probed)."""
    return float(torch.tensor([1e-40], dtype=torch.float32) * 2.0) == 0.0


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero (``torch.set_flush_denormal``) inside the block only.

    The setting is process state; what was set before the block is set again after it, also
    when the block raises, so that code run later (another pipeline, a test drawing
    subnormal floats) sees the arithmetic it had. ``enabled=False``: the block runs as it is.
    """
    if not enabled:
        yield
        return
    before = denormals_are_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _flatten(batch: Iterable[Any]) -> list[Mapping[str, Any]]:
    """Tiles of a batch: samplers return a list of tiles per image, which is flattened."""
    out: list[Mapping[str, Any]] = []
    for item in batch:
        if isinstance(item, Mapping):
            out.append(item)
        else:
            out.extend(_flatten(item))
    return out


def detection_collate(
    batch: Sequence[Any], image_key: str = "image", box_key: str = "box", label_key: str = "label"
) -> dict[str, Any]:
    """Collate tiles that hold different numbers of boxes.

    Args:
        batch: what the ``DataLoader`` draws: tile dicts, or lists of tile dicts (one list per
            image from :class:`~monai_smalldet.transforms.RandTileSamplerd`); nested lists are
            flattened.
        image_key, box_key, label_key: keys of each tile.

    Returns:
        ``{"image": (B, C, T, T) float32 tensor, "targets": [{"box": (N_i, 4) float32,
        "label": (N_i,) int64}, ...]}``; boxes ``(x1, y1, x2, y2)`` tile pixels, x = column.

    Example:
        >>> DataLoader(dataset, batch_size=4, collate_fn=detection_collate)  # doctest: +SKIP
    """
    tiles = _flatten(batch)
    if not tiles:
        raise ValueError("empty batch: no tiles to collate.")
    images = []
    targets = []
    for tile in tiles:
        image = tile[image_key]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        images.append(image.float())
        box = torch.as_tensor(tile.get(box_key, torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
        label = torch.as_tensor(tile.get(label_key, torch.zeros(0)), dtype=torch.int64).reshape(-1)
        if len(box) != len(label):
            raise ValueError(f"a tile has {len(box)} boxes but {len(label)} labels.")
        targets.append({"box": box, "label": label})
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise ValueError(f"tiles of one batch must have the same shape, got {sorted(shapes)}.")
    return {"image": torch.stack(images), "targets": targets}


def yolo_param_groups(network: torch.nn.Module, weight_decay: float = 5e-4) -> list[dict[str, Any]]:
    """Parameter groups as ultralytics builds them: weight decay on weights of non-norm layers only.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]``
        (biases and normalisation weights are not decayed).
    """
    norm_types = tuple(t for t in vars(torch.nn).values() if isinstance(t, type) and "Norm" in t.__name__)
    decay, no_decay = [], []
    for module in network.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "weight" and not isinstance(module, norm_types):
                decay.append(param)
            else:
                no_decay.append(param)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine_lambda(
    total_iterations: int, warmup_iterations: int = 100, final_factor: float = 0.01
) -> Callable[[int], float]:
    """Learning-rate factor per iteration: linear warm-up from 0, then cosine decay to ``final_factor``.

    ultralytics warms up over ``max(3 epochs, 100 iterations)`` and decays to ``lrf=0.01`` of the
    initial rate. Use with ``torch.optim.lr_scheduler.LambdaLR`` and MONAI's
    ``LrScheduleHandler(epoch_level=False)`` (one step per iteration).

    Example:
        >>> f = warmup_cosine_lambda(1000, 100)
        >>> round(f(50), 3), round(f(100), 3), round(f(1000), 3)
        (0.505, 1.0, 0.01)
    """
    total = max(int(total_iterations), 1)
    warm = max(min(int(warmup_iterations), total - 1), 0)
    final = float(final_factor)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class EngineSetup:
    """What :class:`DetectionTrainer` and ``DetectionEvaluator`` share: AMP only on CUDA (never on
    CPU, where it would reach validation as bf16), no decollation (detection batches are lists),
    and denormal floats flushed on CPU while :meth:`run` runs. Mixed in before the MONAI engine."""

    flush_denormal: bool

    def _engine_kwargs(
        self, device: str | torch.device, amp: bool, flush_denormal: bool, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The MONAI engine's ``device`` / ``amp`` / ``decollate`` arguments (and the rest)."""
        device = torch.device(device)
        self.flush_denormal = bool(flush_denormal) and device.type == "cpu"
        kwargs.setdefault("decollate", False)
        return {**kwargs, "device": device, "amp": bool(amp) and device.type == "cuda"}

    def run(self, *args: Any, **kwargs: Any) -> None:
        """The MONAI engine's ``run``, with denormal floats flushed on CPU for its duration."""
        with flush_denormals(self.flush_denormal):
            super().run(*args, **kwargs)  # type: ignore[misc]


class DetectionTrainer(EngineSetup, SupervisedTrainer):
    """``SupervisedTrainer`` for the tiled YOLOv5 detector (as the model zoo's ``DetectionTrainer``).

    Each iteration takes a batch from :func:`detection_collate`, runs the network in train
    mode, computes :class:`~monai_smalldet.networks.DetectionLoss` (``loss_function``) against
    the per-tile targets, back-propagates (fp16 autocast + ``GradScaler`` only when ``amp`` and
    the device is CUDA), clips the gradient norm and steps the optimizer.

    ``engine.state.output`` holds ``image``, ``loss`` (the detached total, a float tensor) and
    the detached loss parts ``box_loss``, ``cls_loss``, ``dfl_loss`` (per image, as ultralytics
    logs them).

    Args:
        device: training device.
        max_epochs: epochs.
        train_data_loader: ``DataLoader(..., collate_fn=detection_collate)``.
        network: the YOLOv5 from :func:`~monai_smalldet.networks.build_network`.
        optimizer: e.g. ``SGD(yolo_param_groups(net), lr=0.01, momentum=0.937, nesterov=True)``.
        loss_function: ``DetectionLoss(network)``.
        amp: mixed precision; ignored (False) on CPU.
        max_grad_norm: gradient norm clip (ultralytics: 10); ``None`` disables it.
        flush_denormal: on CPU, flush denormal floats to zero while :meth:`run` runs
            (:func:`flush_denormals`; the previous setting is restored when it returns or
            raises). Mammogram tiles are largely black, and the activations of their
            background decay into denormal numbers that make CPU convolutions many times
            slower (``tests/test_engines.py`` checks the flag is set only while it runs).
        kwargs: further ``SupervisedTrainer`` arguments (``train_handlers``, ``epoch_length``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        amp: bool = False,
        max_grad_norm: float | None = 10.0,
        flush_denormal: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            **self._engine_kwargs(device, amp, flush_denormal, kwargs),
        )
        self.max_grad_norm = max_grad_norm

    def _iteration(self, engine: DetectionTrainer, batchdata: Mapping[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if isinstance(batchdata, Sequence):  # a loader without detection_collate
            batchdata = detection_collate(batchdata)
        device = engine.state.device
        images = batchdata["image"].to(device, non_blocking=engine.non_blocking)
        targets = [
            {k: torch.as_tensor(v).to(device, non_blocking=engine.non_blocking) for k, v in t.items()}
            for t in batchdata["targets"]
        ]
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        def compute() -> torch.Tensor:
            preds = engine.inferer(images, engine.network)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            total, parts = engine.loss_function(preds, targets)
            engine.state.output.update(parts)
            engine.state.output[Keys.LOSS] = total
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            return total

        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                loss = compute()
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.unscale_(engine.optimizer)
            self._clip(engine)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss = compute()
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            self._clip(engine)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.state.output[Keys.LABEL] = None  # targets are not needed after the step
        return engine.state.output

    def _clip(self, engine: DetectionTrainer) -> None:
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), max_norm=float(self.max_grad_norm))
