"""YOLOv5 behind monai_smalldet.networks: build, loss, decode, safe checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch

from monai_smalldet.networks import (
    CheckpointError,
    DetectionLoss,
    NetworkSpec,
    build_network,
    decode,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("n", num_classes=1)


def test_build_is_yolov5_with_a_grayscale_stem(net):
    assert type(net).__name__ == "DetectionModel"
    stem = net.model[0].conv
    assert stem.in_channels == 1
    assert net.model[-1].nc == 1
    assert list(net.model[-1].stride) == [8.0, 16.0, 32.0]
    n_params = sum(p.numel() for p in net.parameters())
    assert 2.4e6 < n_params < 2.7e6  # yolov5n (2.51 M with 80 classes less the class convs)
    with pytest.raises(ValueError, match="variant"):
        build_network("q")


def _square_batch(n=2, size=64):
    x = torch.zeros(n, 1, size, size)
    targets = []
    for i in range(n):
        y0 = 10 + 8 * i
        x[i, 0, y0 : y0 + 16, 20:36] = 1.0
        targets.append({"box": torch.tensor([[20.0, y0, 36.0, y0 + 16.0]]), "label": torch.tensor([1])})
    return x, targets


def test_loss_forward_backward_and_learning():
    """A few optimiser steps on two images teach the network where the squares are."""
    torch.manual_seed(0)
    model = build_network("n")
    loss_fn = DetectionLoss(model)
    x, targets = _square_batch()

    def top_box_hits() -> int:
        model.eval()
        with torch.inference_mode():
            preds = decode(model(x), conf_thres=0.0)
        model.train()
        hits = 0
        for p, t in zip(preds, targets, strict=True):
            (x1, y1, x2, y2), box = t["box"][0].tolist(), p["box"][0]
            cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
            hits += int(x1 <= cx <= x2 and y1 <= cy <= y2)
        return hits

    before = top_box_hits()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        total, parts = loss_fn(model(x), targets)
        assert set(parts) == {"box_loss", "cls_loss", "dfl_loss"} and torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
    # 40 steps are too few for ultralytics' BN momentum (0.03) to settle the running statistics
    # that eval mode uses: re-estimate them exactly from the batch (a standard BN recalibration)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    with torch.no_grad():
        model(x)
    assert top_box_hits() == 2 > before


def test_loss_accepts_empty_images_and_rejects_bad_targets(net):
    net.train()
    loss_fn = DetectionLoss(net, reduction="mean")
    out = net(torch.rand(2, 1, 64, 64))
    empty = {"box": torch.zeros(0, 4), "label": torch.zeros(0, dtype=torch.long)}
    total, _ = loss_fn(out, [empty, empty])
    assert torch.isfinite(total)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(out, [{"box": [[1, 2, 3, 4]], "label": [7]}, empty])
    with pytest.raises(ValueError, match="x2 > x1"):
        loss_fn(out, [{"box": [[5, 2, 3, 4]], "label": [1]}, empty])
    with pytest.raises(ValueError, match="targets for a batch"):
        loss_fn(out, [empty])
    with pytest.raises(ValueError, match="train-mode"):
        loss_fn(torch.rand(2, 5, 84), [empty, empty])  # decoded eval output carries no feature maps


def test_decode_contract(net):
    net.eval()
    with torch.inference_mode():
        preds = decode(net(torch.rand(3, 1, 96, 64)), conf_thres=0.0, max_det=50, class_labels=(1,))
    assert len(preds) == 3
    for p in preds:
        assert set(p) == {"box", "label_scores", "label"}
        assert p["box"].shape[1] == 4 and len(p["box"]) == len(p["label_scores"]) == len(p["label"]) <= 50
        assert (p["label"] == 1).all()
        assert (p["box"][:, 2] >= p["box"][:, 0]).all() and (p["box"][:, 3] >= p["box"][:, 1]).all()
        assert torch.all(p["label_scores"][:-1] >= p["label_scores"][1:])  # sorted by score
    with pytest.raises(ValueError, match="classes"):
        decode(net(torch.rand(1, 1, 64, 64)), class_labels=(1, 2))


@pytest.mark.parametrize("anchors", [5, 6, 7])
def test_decode_reads_any_number_of_anchors_as_anchors(anchors):
    """Six anchors too (ultralytics' NMS takes a last dimension of 6 for an end-to-end model's
    (B, N, 6) output): each anchor above the threshold gives its own box, in x1y1x2y2 pixels."""
    raw = torch.zeros(2, 5, anchors)
    raw[:, 0] = torch.arange(anchors) * 100.0 + 50  # centre x, far apart: NMS keeps every box
    raw[:, 1] = 40.0  # centre y
    raw[:, 2:4] = 20.0  # width, height
    raw[0, 4] = torch.linspace(0.9, 0.5, anchors)
    raw[1, 4, ::2] = 0.8  # image 1: every other anchor
    preds = decode(raw, conf_thres=0.1, class_labels=(3,))
    assert [len(p["box"]) for p in preds] == [anchors, (anchors + 1) // 2]
    torch.testing.assert_close(preds[0]["box"][0], torch.tensor([40.0, 30.0, 60.0, 50.0]))
    torch.testing.assert_close(preds[0]["label_scores"], torch.linspace(0.9, 0.5, anchors))
    assert (preds[1]["label"] == 3).all()


def test_checkpoint_round_trip(tmp_path, net):
    net.eval()
    spec = NetworkSpec(variant="n", tile_size_px=256, pixel_spacing_mm=0.28)
    path = save_checkpoint(tmp_path / "model.pt", net, spec)
    assert (tmp_path / "model.json").is_file() and not list(tmp_path.glob(".*tmp"))
    loaded, spec2 = load_checkpoint(path)
    assert spec2 == spec and not loaded.training
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)[0], net(x)[0])
    half = save_checkpoint(tmp_path / "half.pt", net, spec, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded_half, _ = load_checkpoint(half)
    with torch.inference_mode():
        torch.testing.assert_close(loaded_half(x)[0], net(x)[0], atol=2e-2, rtol=2e-2)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickled_objects_are_refused(tmp_path, net, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = NetworkSpec()
    full = tmp_path / "full.pt"
    torch.save(net, full)  # a whole pickled module, not a state_dict
    (tmp_path / "full.json").write_text('{"variant": "n"}')
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(full)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model.0.conv.weight": _Payload()}))
    with pytest.raises(CheckpointError, match="full.pt|evil.pt"):
        load_checkpoint(evil, spec=spec)
    assert not (tmp_path / "PWNED").exists()  # the payload never ran


def test_checkpoint_errors_name_the_file(tmp_path, net):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    path = save_checkpoint(tmp_path / "m.pt", net, NetworkSpec(variant="n"))
    (tmp_path / "m.json").write_text('{"variant": "s"}')
    with pytest.raises(CheckpointError, match=r"m\.pt.*do not fit yolov5s"):
        load_checkpoint(path)
    (tmp_path / "m.json").write_text('{"variant": "n", "colour": 1}')
    with pytest.raises(CheckpointError, match="unknown spec fields"):
        load_checkpoint(path)


def test_load_weights_starts_a_network_from_a_checkpoint(tmp_path, net):
    path = save_checkpoint(tmp_path / "start.pt", net, NetworkSpec(variant="n"))
    torch.manual_seed(123)
    fresh = build_network("n")
    assert load_weights(fresh, None) is fresh  # null in the config: random initialisation
    assert not torch.equal(fresh.state_dict()["model.0.conv.weight"], net.state_dict()["model.0.conv.weight"])
    assert load_weights(fresh, path) is fresh
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match=r"start\.pt.*does not fit"):
        load_weights(build_network("n", num_classes=2), path)
