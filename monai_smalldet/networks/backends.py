"""Run the detector network as fast as the hardware allows, with the same answers.

A :class:`NetworkRunner` turns a trained network into a callable ``x (B, 1, h, w) float32 ->
head output (B, 4 + nc, anchors)`` for inference only:

- ``torch`` backend: a copy of the network with Conv+BatchNorm folded (ultralytics' ``fuse``),
  in ``channels_last`` memory format on CPU, under ``torch.inference_mode`` and an autocast
  of the chosen precision;
- ``onnxruntime`` backend: the same fused network exported to ONNX (dynamic batch and size)
  and run by ONNX Runtime's CPU (or CUDA) provider, fp32. The graph ends at the head's raw
  outputs (box distributions and class logits); the distribution-to-box decoding runs in
  torch: ONNX Runtime's CPU softmax over the distribution axis of every anchor is slow,
  torch's is not, and given the decoder's score threshold (``min_score``) it decodes only
  the anchors that can pass it.

Precision ``"auto"`` picks fp16 on CUDA and fp32 on every CPU. bf16 on CPU is opt-in
(``precision="bf16"``): with it the backbone and neck run under bf16 autocast while the
detection head, the box decoding and the scores stay in fp32 (:class:`_FP32Head`), because
scores rounded to bf16's 8 bits of mantissa collapse into ties near a low operating point and
change which boxes are reported. Whether bf16 gives the same findings as fp32 on a given CPU
is measured, not assumed (``tests/test_precision.py``, ``benchmarks/precision.py``). The
trained network passed in is not modified unless asked (``copy_network=False``).
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from typing import Any

import torch

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "NetworkRunner",
    "cpu_supports_bf16",
    "head_output_only",
    "resolve_precision",
]

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device | str, backend: str = "torch") -> str:
    """The precision that ``precision`` means on ``device`` (``fp32``, ``bf16`` or ``fp16``).

    Raises:
        ValueError: unknown precision, fp16 asked on CPU, or a reduced precision asked of the
            onnxruntime backend (it runs the fp32 graph).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    kind = torch.device(device).type
    if backend == "onnxruntime":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"the onnxruntime backend runs fp32 only, got precision {precision!r}.")
        return "fp32"
    if precision == "auto":
        # reduced precision on CPU is never implied: it must be asked for by name
        return "fp16" if kind == "cuda" else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ValueError("fp16 inference needs a CUDA device; use bf16 or fp32 on CPU.")
    return precision


class _FP32Head(torch.nn.Module):
    """A detection head that runs in fp32 whatever autocast is active around it.

    Wraps an ultralytics ``Detect`` module in place of itself: its inputs are cast to fp32 and
    autocast is disabled for its convolutions, the distribution-to-box decoding and the
    sigmoid scores. Attribute access falls through to the wrapped head (``stride``, ``f``,
    ``i``, ``decode_bboxes``, ...), so ultralytics' graph walk still finds what it needs.
    """

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.head, name)

    def forward(self, x: Any) -> Any:
        with torch.autocast(x[0].device.type, enabled=False):
            return self.head([t.float() for t in x])


def _head_in_fp32(network: torch.nn.Module) -> torch.nn.Module:
    """Replace the ``Detect`` head of an ultralytics model by :class:`_FP32Head` (in place)."""
    layers = getattr(network, "model", None)
    head = _detect_head(network)
    if isinstance(layers, torch.nn.Sequential) and len(layers) and layers[-1] is head is not None:
        layers[-1] = _FP32Head(head)
    return network


def _fused_copy(network: torch.nn.Module, in_place: bool = False) -> torch.nn.Module:
    """An eval-mode copy of ``network`` (``network`` itself if ``in_place``) with Conv+BatchNorm
    folded where the model knows how."""
    net = (network if in_place else copy.deepcopy(network)).eval()
    fuse = getattr(net, "fuse", None)
    if callable(fuse):
        net = fuse(verbose=False) or net
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _detect_head(network: torch.nn.Module) -> Any:
    """The ultralytics ``Detect`` head of ``network`` (``None`` when it has none)."""
    from ultralytics.nn.modules import Detect

    return next((m for m in network.modules() if isinstance(m, Detect)), None)


class _RawHeadOutputs(torch.nn.Module):
    """``network`` up to its head's raw outputs: box distributions ``(B, 4 * reg_max, A)`` and
    class logits ``(B, nc, A)``, before decoding (the graph exported to ONNX)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network.eval()
        self.detect = _detect_head(network)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Detect returns its raw outputs in training mode; set here because the exporter puts
        # the whole module in eval mode first. Only the head's own flag: its layers are fused
        # convolutions without BatchNorm or dropout, so nothing else changes.
        self.detect.training = True
        out = self.network(x)
        return out["boxes"], out["scores"]


def head_output_only(network: torch.nn.Module, dynamic: bool = True) -> torch.nn.Module:
    """Make ``network``'s eval-mode forward return only the head output ``(B, 4 + nc, anchors)``.

    Sets ultralytics' ``Detect.export`` (and ``dynamic``: anchors from each input's size) on
    ``network`` itself and returns it; training mode is unchanged and the state_dict keys stay
    the same, so checkpoints load as they are. The form for ``verify_net_in_out``,
    ``ckpt_export`` (TorchScript trace) and ONNX export.
    """
    from ultralytics.nn.modules import Detect

    for module in network.modules():
        if isinstance(module, Detect):
            module.export = True
            module.dynamic = bool(dynamic)
    return network


class NetworkRunner:
    """Inference-only execution of a detector network.

    Args:
        network: the trained network (not modified unless ``copy_network=False``; a fused copy
            is made when ``optimize``).
        device: where to run.
        backend: ``"torch"`` or ``"onnxruntime"`` (needs the ``onnx`` extra).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (see :func:`resolve_precision`).
        optimize: fold Conv+BatchNorm and use ``channels_last`` on CPU (ultralytics models; any
            other network runs as given). ``False`` runs ``network`` itself, so a network that
            is still training is seen as it is now.
        threads: ONNX Runtime intra-op threads (``None``: torch's thread count).
        copy_network: optimise a copy (default). ``False`` folds the BatchNorms of ``network``
            itself, which then serves inference only: for a network nothing else uses (a
            detector loaded from a checkpoint), it saves the copy.

    Example:
        .. code-block:: python

            runner = NetworkRunner(network, "cpu", backend="torch", precision="auto")
            raw = runner(torch.rand(4, 1, 1024, 1024))       # (4, 4 + nc, anchors)
            preds = decode(raw)
    """

    def __init__(
        self,
        network: torch.nn.Module,
        device: torch.device | str = "cpu",
        *,
        backend: str = "torch",
        precision: str = "auto",
        optimize: bool = True,
        threads: int | None = None,
        copy_network: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.device = torch.device(device)
        self.backend = backend
        self.precision = resolve_precision(precision, self.device, backend)
        # only ultralytics models know how to fold their BatchNorms; other networks run as given
        self.optimize = (bool(optimize) or backend == "onnxruntime") and callable(
            getattr(network, "fuse", None)
        )
        self.channels_last = self.optimize and self.device.type == "cpu" and backend == "torch"
        if self.optimize:
            net = _fused_copy(network, in_place=not copy_network).to(self.device)
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last)
        else:
            net = network
        if self.precision in _DTYPES and self.optimize and backend == "torch":
            # the head and its scores in fp32 (module docstring), on the copy made above; a
            # network run as given (optimize=False) is not altered and runs whole under autocast
            net = _head_in_fp32(net)
        self.network = net
        self._session: Any = None
        self._detect: Any = None
        if backend == "onnxruntime":
            self._session = self._onnx_session(net, threads)

    def _onnx_session(self, net: torch.nn.Module, threads: int | None) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - depends on the extra installed
            raise ImportError(
                "the onnxruntime backend needs the 'onnx' extra: pip install 'monai-smalldet[onnx]'"
            ) from err
        plain = copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format).eval()
        # an ultralytics detector ends at its head's raw outputs (decoded in torch: see the
        # module docstring); any other network is exported as it is
        self._detect = _detect_head(plain)
        if self._detect is not None:
            head: torch.nn.Module = _RawHeadOutputs(plain)
            outputs = ["box_distributions", "class_logits"]
        else:
            head, outputs = plain, ["pred"]
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
            torch.onnx.export(
                head,
                (torch.zeros(1, 1, 64, 64),),
                buffer,
                dynamo=False,
                input_names=["image"],
                output_names=outputs,
                opset_version=17,
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    **{name: {0: "batch", 2: "anchors"} for name in outputs},
                },
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(buffer.getvalue(), options, providers=providers)

    def __call__(self, x: torch.Tensor, min_score: float | None = None) -> torch.Tensor:
        """Head output ``(B, 4 + nc, anchors)`` in float32 for ``x`` ``(B, C, h, w)``.

        ``min_score``: anchors whose best class score is at most ``min_score`` in every image
        of the batch may be left out (what a decoder with that score threshold drops first):
        the onnxruntime backend then decodes the boxes of the others only. The anchors kept
        keep their order.
        """
        if self._session is not None:
            outs = self._session.run(None, {"image": x.detach().float().cpu().numpy()})
            if self._detect is None:
                return torch.from_numpy(outs[0])
            dist, logits = (torch.from_numpy(o) for o in outs)
            return self._decode_raw(dist, logits, tuple(x.shape[2:]), min_score)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = _DTYPES.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            y = self.network(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return y.float()

    def _decode_raw(
        self, dist: torch.Tensor, logits: torch.Tensor, hw: tuple[int, int], min_score: float | None = None
    ) -> torch.Tensor:
        """What the head returns in eval mode, from its raw outputs on an ``hw`` input: boxes
        (cx, cy, w, h) in input pixels, then class sigmoid scores (the head's own decoding);
        with ``min_score``, for the anchors that score above it in some image only."""
        from ultralytics.utils.tal import make_anchors

        detect = self._detect
        sizes = []
        for stride in detect.stride.tolist():
            # feature map size after log2(stride) stride-2 convolutions (k=3, p=1: ceil halving)
            h, w = hw
            for _ in range(round(math.log2(stride))):
                h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
        if sum(h * w for h, w in sizes) != dist.shape[-1]:
            raise RuntimeError(f"the exported head gave {dist.shape[-1]} anchors for an input of {hw}.")
        anchors, strides = make_anchors(torch.tensor(sizes), detect.stride, 0.5)
        with torch.inference_mode():
            scores = logits.sigmoid()
            if min_score is not None:
                # most anchors of a mammogram's tile score near 0: skip their distributions' softmax
                keep = (scores.amax(1) > min_score).any(0)
                if not keep.any():
                    return dist.new_zeros((dist.shape[0], 4 + scores.shape[1], 0))
                dist, scores, anchors, strides = (
                    dist[..., keep],
                    scores[..., keep],
                    anchors[keep],
                    strides[keep],
                )
            boxes = detect.decode_bboxes(detect.dfl(dist), anchors.transpose(0, 1).unsqueeze(0))
            return torch.cat((boxes * strides.transpose(0, 1), scores), 1)

    def __repr__(self) -> str:
        return (
            f"NetworkRunner(backend={self.backend!r}, precision={self.precision!r}, "
            f"device={str(self.device)!r}, optimize={self.optimize})"
        )
