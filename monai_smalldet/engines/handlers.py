"""Handlers for the bundle: best-checkpoint saving with the network spec, FROC reports."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..files import write_json_atomic
from ..metrics.froc import DEFAULT_FPIS
from ..networks import NetworkSpec, save_checkpoint

__all__ = [
    "EMAHandler",
    "EpochSummaryHandler",
    "FROCReportHandler",
    "PreciseBNHandler",
    "SpecCheckpointSaver",
    "TimeLimitHandler",
    "TrainingInfoHandler",
]

log = logging.getLogger(__name__)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class SpecCheckpointSaver:
    """Save the network as a plain ``state_dict`` + JSON :class:`NetworkSpec` (``save_checkpoint``).

    MONAI's ``CheckpointSaver`` pickles ignite checkpoints and cannot write the spec that
    :func:`~monai_smalldet.networks.load_checkpoint` needs; this handler can. Attached to an
    evaluator with ``save_key_metric=True`` it keeps the best network by the evaluator's key
    metric (``<save_dir>/<key_metric_filename>``, the spec's ``extra`` records metric, value and
    epoch); attached to a trainer with ``save_final=True`` it writes ``final_filename`` when
    training ends (also when it is stopped early).

    Args:
        save_dir: output folder.
        network: the network to save.
        spec: how to rebuild it (see :class:`NetworkSpec`).
        save_key_metric: save on every improvement of ``engine.state.metrics[key_metric_name]``.
        key_metric_name: metric to watch; default the engine's key metric.
        key_metric_filename: file name of the best checkpoint.
        save_final: save when the engine completes or is terminated.
        final_filename: file name of the final checkpoint.
        half: store fp16 tensors.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        network: torch.nn.Module,
        spec: NetworkSpec,
        save_key_metric: bool = True,
        key_metric_name: str | None = None,
        key_metric_filename: str = "model.pt",
        save_final: bool = False,
        final_filename: str = "model_final.pt",
        half: bool = False,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.spec = spec
        self.save_key_metric = save_key_metric
        self.key_metric_name = key_metric_name
        self.key_metric_filename = key_metric_filename
        self.save_final = save_final
        self.final_filename = final_filename
        self.half = half
        self.best: float | None = None
        self.saved: list[Path] = []

    def attach(self, engine: Engine) -> None:
        if self.save_key_metric:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.key_metric_completed)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self.completed)
            engine.add_event_handler(Events.TERMINATE, self.completed)

    def _save(self, filename: str, extra: dict[str, Any]) -> Path:
        spec = replace(self.spec, extra={**self.spec.extra, **extra})
        path = save_checkpoint(self.save_dir / filename, self.network, spec, half=self.half)
        self.saved.append(path)
        return path

    def key_metric_completed(self, engine: Engine) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"key metric {name!r} not in the engine's metrics {sorted(engine.state.metrics)}.")
        value = _finite(engine.state.metrics[name])
        improved = self.best is None or (value is not None and value > self.best)
        if not improved:
            return
        if value is not None:
            self.best = value
        elif self.best is None:
            self.best = -math.inf  # an undefined first value is saved once, then beaten by any number
        epoch = int(engine.state.epoch)
        path = self._save(
            self.key_metric_filename, {"key_metric": name, "key_metric_value": value, "epoch": epoch}
        )
        log.info("saved %s (%s = %s at epoch %d)", path, name, value, epoch)

    def completed(self, engine: Engine) -> None:
        path = self._save(self.final_filename, {"epoch": int(engine.state.epoch), "final": True})
        log.info("saved %s", path)


class FROCReportHandler:
    """Write the evaluator's metrics and FROC curves when it completes.

    Files: ``<output_dir>/<metrics_filename>`` (``{"metrics": {name: value}, "froc": {name:
    FROCResult.to_dict()}}``, NaN as ``null``) and, with ``plot=True``, ``<output_dir>/froc.png``
    with one curve per FROC metric (fused and per scale).

    Args:
        output_dir: output folder (created).
        metrics_filename: name of the JSON file.
        plot: also draw the FROC curves.
        fpis: FPIs marked on the plot.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        metrics_filename: str = "metrics.json",
        plot: bool = True,
        fpis: tuple[float, ...] = DEFAULT_FPIS,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metrics_filename = metrics_filename
        self.plot = plot
        self.fpis = fpis

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        details = getattr(engine.state, "froc_details", None) or {}
        payload = {
            "epoch": int(engine.state.epoch),
            "images": int(engine.state.iteration),
            "key_metric": getattr(engine.state, "key_metric_name", None),
            "metrics": {k: _finite(v) for k, v in engine.state.metrics.items()},
            "froc": {k: v.to_dict() for k, v in details.items() if v is not None},
        }
        path = write_json_atomic(self.output_dir / self.metrics_filename, payload)
        curves = {k: v for k, v in details.items() if v is not None}
        if self.plot and curves:
            from ..metrics import plot_froc

            plot_froc(curves, self.output_dir / "froc.png", fpis=self.fpis, title="FROC")
        log.info("wrote %s", path)


class EpochSummaryHandler:
    """Log the epoch means of the trainer's loss outputs, the learning rate and the epoch time.

    The summaries are kept in :attr:`history` (and ``engine.state.epoch_history``) and, with
    ``history_file``, appended as JSON lines (``{"epoch", "iterations", "seconds", "lr",
    "<key>": mean}``).

    Args:
        output_keys: keys of ``engine.state.output`` to average (scalar tensors or numbers).
        history_file: JSON-lines file to append to (created with its folder).
        optimizer: the optimizer whose first group's learning rate is logged.
        name: logger name.
    """

    def __init__(
        self,
        output_keys: tuple[str, ...] | list[str] = ("loss",),
        history_file: str | os.PathLike[str] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        name: str = "monai_smalldet.train",
    ) -> None:
        self.output_keys = tuple(output_keys)
        self.history_file = Path(history_file) if history_file else None
        self.optimizer = optimizer
        self.logger = logging.getLogger(name)
        self.history: list[dict[str, Any]] = []
        self._sums: dict[str, float] = {}
        self._count = 0
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        import time

        self._sums = dict.fromkeys(self.output_keys, 0.0)
        self._count = 0
        self._start = time.perf_counter()

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, dict):
            return
        for key in self.output_keys:
            value = output.get(key)
            if value is not None:
                self._sums[key] += float(value)
        self._count += 1

    def epoch_completed(self, engine: Engine) -> None:
        import time

        n = max(self._count, 1)
        summary: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            "iterations": self._count,
            "seconds": round(time.perf_counter() - self._start, 2),
        }
        if self.optimizer is not None:
            summary["lr"] = float(self.optimizer.param_groups[0]["lr"])
        summary.update({k: round(v / n, 5) for k, v in self._sums.items()})
        self.history.append(summary)
        engine.state.epoch_history = self.history
        self.logger.info(
            "epoch %d/%d: %s",
            summary["epoch"],
            engine.state.max_epochs,
            ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k != "epoch"),
        )
        if self.history_file is not None:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            with self.history_file.open("a") as f:
                f.write(json.dumps(summary) + "\n")


class TrainingInfoHandler:
    """Write ``training_info.json`` when training ends: settings, data size, wall time, machine.

    The file holds ``info`` (what the config passes: profile, seed, data sizes, ...), the
    epochs run, the wall time, the machine (platform, CPU count, torch/monai versions,
    device), the per-epoch summaries of an :class:`EpochSummaryHandler` (when present) and the
    best validation metric of a :class:`SpecCheckpointSaver` (when given).

    Args:
        path: JSON file to write.
        info: fields recorded as they are.
        checkpoint_saver: the evaluator's best-checkpoint saver, for its best value.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        info: dict[str, Any] | None = None,
        checkpoint_saver: SpecCheckpointSaver | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = dict(info or {})
        self.checkpoint_saver = checkpoint_saver
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.TERMINATE, self.completed)

    def started(self, engine: Engine) -> None:
        import time

        self._start = time.perf_counter()

    def completed(self, engine: Engine) -> None:
        import platform
        import time

        import monai

        device = getattr(engine.state, "device", None)
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "device": str(device),
        }
        if device is not None and torch.device(device).type == "cuda":
            machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
        payload: dict[str, Any] = {
            **self.info,
            "epochs_run": int(engine.state.epoch),
            "epochs_planned": int(engine.state.max_epochs or 0),
            "iterations": int(engine.state.iteration),
            "wall_time_s": round(time.perf_counter() - self._start, 1),
            "machine": machine,
        }
        if self.checkpoint_saver is not None:
            payload["best_key_metric"] = self.checkpoint_saver.best
            payload["checkpoints"] = sorted({str(p) for p in self.checkpoint_saver.saved})
        history = getattr(engine.state, "epoch_history", None)
        if history:
            payload["epoch_history"] = history
        write_json_atomic(self.path, payload, default=str)


class TimeLimitHandler:
    """Stop training cleanly after ``limit_s`` seconds of wall time (checked every iteration).

    ignite's ``TimeLimit`` is a bare callable; this wraps it with the ``attach`` that MONAI
    engines call on their handlers. The engine then fires ``TERMINATE``, so final checkpoints
    and the training summary are still written.
    """

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s = limit_s

    def attach(self, engine: Engine) -> None:
        if self.limit_s is None:
            return
        from ignite.handlers import TimeLimit

        engine.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(limit_sec=int(self.limit_s)))


class PreciseBNHandler:
    """Re-estimate the BatchNorm running statistics exactly before each validation ("precise BN").

    Eval mode normalises with running averages; with ultralytics' BatchNorm momentum (0.03) they
    trail the weights by some 30 iterations, and while the weights still move fast (a short CPU
    run) validation then sees statistics of a network that no longer exists: on an overfit
    batch the eval-mode scores fell to 0.004 while the train-mode loss fell tenfold; after this
    re-estimation the same network scored 0.99 on its lesions. The handler resets the
    statistics and averages them (``momentum=None``) over ``num_batches`` training batches in
    train mode without gradients, then restores each layer's momentum.

    Args:
        num_batches: training batches averaged.
        interval: run at the end of every ``interval`` epochs (list it before the
            ``ValidationHandler`` with the same interval) and when training ends.
        loader: batches to average over (default: the trainer's data loader).
        network: the network whose statistics are re-estimated (default: the trainer's; give
            the weight average, :class:`EMAHandler`'s ``ema.module``, when that is what is
            validated and saved).
    """

    def __init__(
        self,
        num_batches: int = 20,
        interval: int = 1,
        loader: Any = None,
        network: torch.nn.Module | None = None,
    ) -> None:
        if num_batches < 1 or interval < 1:
            raise ValueError(f"num_batches and interval must be >= 1, got {num_batches}, {interval}.")
        self.num_batches = int(num_batches)
        self.interval = int(interval)
        self.loader = loader
        self.network = network
        self._done_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self._done_epoch == engine.state.epoch:
            return
        from .trainer import detection_collate

        network = self.network if self.network is not None else engine.network
        layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not layers:
            return
        momenta = [m.momentum for m in layers]
        was_training = network.training
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        network.train()
        seen = 0
        try:
            with torch.no_grad():
                for batch in self.loader if self.loader is not None else engine.data_loader:
                    if not isinstance(batch, dict):
                        batch = detection_collate(batch)
                    network(batch["image"].to(engine.state.device))
                    seen += 1
                    if seen >= self.num_batches:
                        break
        finally:
            for m, momentum in zip(layers, momenta, strict=True):
                m.momentum = momentum
            network.train(was_training)
        self._done_epoch = engine.state.epoch
        log.info("BatchNorm statistics re-estimated over %d training batches", seen)


class EMAHandler:
    """Fold the trainer's weights into a :class:`~monai_smalldet.networks.WeightEMA` after
    every iteration (after the optimizer step).

    Args:
        ema: the moving average; validate and save ``ema.module``.
    """

    def __init__(self, ema: Any) -> None:
        self.ema = ema

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.ema.update(engine.network)
