"""An exponential moving average of a detector's weights: ultralytics' ``ModelEMA``.

``ema.module`` is a copy of the network (eval mode, no gradients) whose parameters and
floating-point buffers follow ``v <- d * v + (1 - d) * w`` after every optimizer step, with
``d = decay * (1 - exp(-updates / tau))`` (a ramp that lets the average track the fast early
changes). Validation, checkpoint selection and the shipped model use the average: it is the
standard YOLOv5 recipe, and it smooths the step-to-step noise of small batches.
"""

from __future__ import annotations

import torch

__all__ = ["WeightEMA"]


class WeightEMA:
    """Moving average of ``network``'s weights (ultralytics ``ModelEMA`` behind this package's door).

    Args:
        network: the network being trained (DDP / DataParallel wrappers are unwrapped).
        decay: largest per-step decay.
        tau: ramp constant of the decay, in optimizer steps.
        updates: steps already averaged (to continue a run).

    Example:
        .. code-block:: python

            ema = WeightEMA(network, tau=1000)
            ...  # after each optimizer.step():
            ema.update(network)
            evaluate(ema.module)
    """

    def __init__(
        self, network: torch.nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0
    ) -> None:
        from ultralytics.utils.torch_utils import ModelEMA

        if not 0.0 < decay < 1.0 or tau <= 0:
            raise ValueError(f"decay must lie in (0, 1) and tau be > 0, got decay={decay}, tau={tau}.")
        self._ema = ModelEMA(network, decay=decay, tau=tau, updates=int(updates))

    @property
    def module(self) -> torch.nn.Module:
        """The averaged network (eval mode)."""
        return self._ema.ema

    @property
    def updates(self) -> int:
        return int(self._ema.updates)

    def update(self, network: torch.nn.Module) -> None:
        """Fold the current weights of ``network`` into the average."""
        self._ema.update(network)
