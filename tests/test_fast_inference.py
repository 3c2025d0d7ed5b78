"""Fast inference: the optimised paths give the answers of the plain network.

Real yolov5n networks (random weights; the equality checks do not need trained ones):
Conv+BN folding and ``channels_last``, the ONNX Runtime backend (dynamic batch and size),
bf16 autocast, skipping tiles that hold no breast, and the switches of the CLI and the app.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from monai_smalldet.inference import MultiScaleDetector
from monai_smalldet.networks import (
    NetworkRunner,
    NetworkSpec,
    build_network,
    resolve_precision,
    save_checkpoint,
)
from tests.fakes import BrightSquareNet


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network("n").eval()
    # random BatchNorm statistics, so that folding them is not a no-op
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _plain(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)[0]


def test_precision_resolution() -> None:
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") == "fp32"  # reduced precision on CPU only by name
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu", backend="onnxruntime") == "fp32"
    with pytest.raises(ValueError, match="fp16 inference needs a CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="onnxruntime backend runs fp32"):
        resolve_precision("bf16", "cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        NetworkRunner(build_network("n"), "cpu", backend="tensorrt")


def test_fused_channels_last_runner_matches_and_leaves_the_network_alone(network) -> None:
    before = {k: v.clone() for k, v in network.state_dict().items()}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    runner = NetworkRunner(network, "cpu", precision="fp32")
    assert runner.optimize and runner.channels_last
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.network.modules())
    x = torch.rand(2, 1, 256, 192)
    ref, got = _plain(network, x), runner(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got[:, :4], ref[:, :4], rtol=0, atol=1e-2)  # box pixels
    torch.testing.assert_close(got[:, 4:], ref[:, 4:], rtol=0, atol=1e-5)  # scores
    # the trained network is untouched: same weights, BatchNorms still there, contiguous
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()) == n_bn
    for k, v in network.state_dict().items():
        assert torch.equal(v, before[k]), k
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()


def test_runner_may_fuse_a_network_nothing_else_uses_in_place(network, tmp_path) -> None:
    x = torch.rand(1, 1, 256, 192)
    ref = NetworkRunner(network, "cpu", precision="fp32")(x)
    own = copy.deepcopy(network)
    runner = NetworkRunner(own, "cpu", precision="fp32", copy_network=False)
    assert runner.network is own  # no copy: its BatchNorms are folded into its convolutions
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in own.modules())
    torch.testing.assert_close(runner(x), ref, rtol=0, atol=1e-4)
    # a detector from a checkpoint owns its network: fused in place, same boxes as a copy
    save_checkpoint(tmp_path / "m.pt", network, NetworkSpec(tile_size_px=128))
    img = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    owned = MultiScaleDetector.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    assert owned.runner.network is owned.network
    copied = MultiScaleDetector.from_checkpoint(
        tmp_path / "m.pt", device="cpu", precision="fp32", copy_network=True
    )
    assert copied.runner.network is not copied.network
    a = owned.predict(img, laterality="L", pixel_spacing_mm=0.07).fused
    b = copied.predict(img, laterality="L", pixel_spacing_mm=0.07).fused
    assert len(a) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_onnxruntime_backend_gives_the_same_boxes(network) -> None:
    pytest.importorskip("onnxruntime")
    runner = NetworkRunner(network, "cpu", backend="onnxruntime")
    for shape in [(3, 1, 256, 256), (1, 1, 320, 160)]:  # dynamic batch and size
        x = torch.rand(*shape)
        ref, got = _plain(network, x), runner(x)
        assert got.shape == ref.shape
        # boxes (cx, cy, w, h) within 0.01 px, scores within 1e-5: the same findings
        torch.testing.assert_close(got[:, :4], ref[:, :4], rtol=0, atol=1e-2)
        torch.testing.assert_close(got[:, 4:], ref[:, 4:], rtol=0, atol=1e-5)


def test_min_score_decodes_only_anchors_that_can_be_kept(network) -> None:
    """With ``min_score`` the onnxruntime backend decodes only the anchors scoring above it in some
    image of the batch: the anchors left are the plain network's, in order, and NMS at that
    threshold keeps exactly what it keeps from all anchors."""
    pytest.importorskip("onnxruntime")
    from monai_smalldet.networks import decode

    runner = NetworkRunner(network, "cpu", backend="onnxruntime")
    x = torch.rand(2, 1, 256, 320)
    x[1] *= 0.2  # a darker second image: its anchors pass the threshold below in other places
    full = runner(x)
    best = full[:, 4:].amax(1)
    threshold = float(best.quantile(0.1))
    passing = best > threshold
    assert (passing[0] != passing[1]).any()  # so "in some image" differs from "in every image"
    part = runner(x, min_score=threshold)
    kept = passing.any(0)
    assert 0 < part.shape[-1] == int(kept.sum()) < full.shape[-1]
    torch.testing.assert_close(part, full[..., kept], rtol=0, atol=1e-6)
    for a, b in zip(decode(full, conf_thres=threshold), decode(part, conf_thres=threshold), strict=True):
        assert len(a["box"]) > 0
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    nothing = runner(x, min_score=1.0)  # no anchor scores above 1
    assert nothing.shape == (2, 5, 0)
    assert [len(d["box"]) for d in decode(nothing, conf_thres=1.0)] == [0, 0]


def test_onnxruntime_backend_runs_any_network_as_it_is() -> None:
    """A network without an ultralytics head is exported whole (no raw-head decoding)."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3, stride=8, padding=1), torch.nn.Flatten(2)).eval()
    runner = NetworkRunner(net, "cpu", backend="onnxruntime")
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), net(x), rtol=0, atol=1e-5)


def test_bf16_autocast_runs_and_stays_close(network) -> None:
    runner = NetworkRunner(network, "cpu", precision="bf16")
    x = torch.rand(1, 1, 128, 128)
    ref, got = _plain(network, x), runner(x)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: boxes within a few pixels, scores within 0.01
    assert (got[:, :4] - ref[:, :4]).abs().max() < 8.0
    assert (got[:, 4:] - ref[:, 4:]).abs().max() < 0.01


def _notched_breast(shape=(1024, 1024)) -> np.ndarray:
    """A breast touching the top and left edges whose lower-right corner is air inside the
    crop box, with a bright square near the boundary."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    breast = (xx / (0.95 * w)) ** 2 + (yy / (0.95 * h)) ** 2 < 1
    img = np.where(breast, 0.4, 0.0).astype(np.float32)
    img[300:340, 600:640] = 1.0
    return img


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_air_tiles_are_skipped_without_losing_findings(laterality: str) -> None:
    img = _notched_breast()
    square = [600, 300, 640, 340]
    if laterality == "R":  # the mirror image: the detector flips it back through its frames
        img = np.ascontiguousarray(img[:, ::-1])
        square = [img.shape[1] - 640, 300, img.shape[1] - 600, 340]
    kwargs = {"tile_size": 256, "overlap": 0.0, "scales": (1.0, 0.5), "device": "cpu", "crop_breast": True}
    fast = MultiScaleDetector(BrightSquareNet(), **kwargs).predict(img, laterality=laterality)
    full = MultiScaleDetector(BrightSquareNet(), skip_air_tiles=False, **kwargs).predict(
        img, laterality=laterality
    )
    # the quarter disc leaves the far corner of the 4 x 4 grid as air
    assert fast.air_tiles_skipped[0] >= 1
    assert sum(fast.tiles_per_scale) + sum(fast.air_tiles_skipped) == sum(full.tiles_per_scale)
    assert full.air_tiles_skipped == [0, 0]
    np.testing.assert_allclose(fast.fused.boxes, full.fused.boxes)
    np.testing.assert_allclose(fast.fused.boxes[0], square, atol=1.0)
    assert json.loads(json.dumps(fast.to_dict()))["air_tiles_skipped"] == fast.air_tiles_skipped


@pytest.mark.parametrize(("laterality", "margin"), [("L", 0), ("R", 0), ("L", 32)])
def test_tiles_across_the_skin_line_run_on_their_breast_part(laterality: str, margin: int) -> None:
    """Findings on the skin line all round a half-disc breast, where the breast part of a tile
    starts inside it (above, below or beside): the same boxes from the cropped tiles."""
    from tests.fakes import mammogram_with_square

    img = mammogram_with_square("L", (0, 0, 0, 0))
    h, w = img.shape
    rim = []
    for angle in np.linspace(-75, 75, 7):  # one finding per 128 tile: they lie far apart
        x = int(0.7 * w * np.cos(np.radians(angle)))
        y = int(h / 2 + 0.45 * h * np.sin(np.radians(angle)))
        img[y - 6 : y + 6, x - 6 : x + 6] = 1.0
        rim.append([x - 6, y - 6, x + 6, y + 6])
    if laterality == "R":
        img = np.ascontiguousarray(img[:, ::-1])
    kwargs = {"tile_size": 128, "overlap": 0.0, "scales": (1.0,), "device": "cpu", "air_margin_px": margin}
    runs = {}
    for crop in (False, True):
        net = BrightSquareNet()
        det = MultiScaleDetector(net, crop_tiles_to_breast=crop, **kwargs)
        runs[crop] = (det.predict(img, laterality=laterality), sum(np.prod(c) for c in net.calls))
    (whole, whole_px), (cropped, cropped_px) = runs[False], runs[True]
    # the tiles along the rim are part air (a margin keeps some of it)
    assert cropped_px < (0.9 if margin == 0 else 1.0) * whole_px
    assert cropped.tiles_per_scale == whole.tiles_per_scale
    assert len(cropped.fused) >= len(rim)
    order = np.lexsort(whole.fused.boxes.T[::-1])
    np.testing.assert_allclose(
        cropped.fused.boxes[np.lexsort(cropped.fused.boxes.T[::-1])], whole.fused.boxes[order]
    )


def test_crop_tiles_to_breast_defaults_and_margin() -> None:
    assert MultiScaleDetector(BrightSquareNet(), device="cpu").crop_tiles_to_breast
    assert not MultiScaleDetector(BrightSquareNet(), device="cpu", skip_air_tiles=False).crop_tiles_to_breast
    with pytest.raises(ValueError, match="air_margin_px"):
        MultiScaleDetector(BrightSquareNet(), device="cpu", air_margin_px=-1)


def test_inferer_sees_a_network_that_is_still_training() -> None:
    """The validation inferer must not run a fused snapshot of the weights."""
    from monai_smalldet.inferers import MultiScaleInferer

    torch.manual_seed(0)
    net = build_network("n")
    inferer = MultiScaleInferer(tile_size=128, scales=(1.0,), device="cpu", conf_thres=0.0)
    image = torch.rand(1, 1, 256, 256)
    first = inferer([image[0]], net)[0]["label_scores"].clone()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    second = inferer([image[0]], net)[0]["label_scores"]
    assert not torch.equal(first[: len(second)], second[: len(first)])
    assert net.training  # left in the mode it came in


def test_app_reads_backend_and_precision_from_the_environment() -> None:
    from apps.mammo_detect.app import env_detector_overrides

    env = {"MAMMO_DETECT_BACKEND": "onnxruntime", "MAMMO_DETECT_PRECISION": "fp32", "OTHER": "x"}
    assert env_detector_overrides(env) == {"backend": "onnxruntime", "precision": "fp32"}
    assert env_detector_overrides({"MAMMO_DETECT_BACKEND": ""}) == {}
