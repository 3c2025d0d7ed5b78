"""The bundle's engines: collation, schedule, parameter groups, handlers and a learning test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.apps.detection.transforms.dictionary import RandFlipBoxd
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from monai.utils import set_determinism

from monai_smalldet.data.synthetic import generate_dataset, load_datalist
from monai_smalldet.engines import (
    DetectionEvaluator,
    DetectionTrainer,
    EpochSummaryHandler,
    SpecCheckpointSaver,
    denormals_are_flushed,
    detection_collate,
    froc_metrics,
    warmup_cosine_lambda,
    whole_image_collate,
    yolo_param_groups,
)
from monai_smalldet.inferers import MultiScaleInferer
from monai_smalldet.metrics import FROCMetric
from monai_smalldet.networks import DetectionLoss, NetworkSpec, build_network, load_checkpoint
from monai_smalldet.transforms import (
    BoxesToSpatialOrderd,
    BoxesToXYOrderd,
    CropBreastd,
    LoadMammogramd,
    NormalizeLateralityd,
    RandTileSamplerd,
    ScalePyramidd,
)


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory: pytest.TempPathFactory) -> str:
    """6 training and 2 validation synthetic mammograms of 266 x 328 pixels (0.875 mm)."""
    out = tmp_path_factory.mktemp("tiny_synthetic")
    return str(generate_dataset(out, n_train=6, n_val=2, n_test=0, seed=1, scale=0.08, progress=False))


def _tile(n_boxes: int, size: int = 32) -> dict:
    boxes = np.array([[2.0 + i, 3.0, 10.0 + i, 12.0] for i in range(n_boxes)]).reshape(-1, 4)
    return {"image": torch.rand(1, size, size), "box": boxes, "label": np.ones(n_boxes, dtype=np.int64)}


def test_detection_collate_keeps_per_tile_targets() -> None:
    batch = [[_tile(0), _tile(2)], [_tile(1)]]  # RandTileSamplerd: one list of tiles per image
    out = detection_collate(batch)
    assert out["image"].shape == (3, 1, 32, 32) and out["image"].dtype == torch.float32
    assert [len(t["box"]) for t in out["targets"]] == [0, 2, 1]
    assert [t["label"].dtype for t in out["targets"]] == [torch.int64] * 3
    assert out["targets"][1]["box"].shape == (2, 4)
    with pytest.raises(ValueError, match="same shape"):
        detection_collate([_tile(1, 32), _tile(1, 64)])
    with pytest.raises(ValueError, match="labels"):
        detection_collate([{**_tile(2), "label": np.ones(1)}])


def test_whole_image_collate_keeps_images_apart() -> None:
    batch = [
        {"image": torch.rand(1, 40, 30), "box": [[1, 2, 3, 4]]},
        {"image": torch.rand(1, 20, 50), "box": []},
    ]
    out = whole_image_collate(batch)
    assert [tuple(i.shape) for i in out["image"]] == [(1, 40, 30), (1, 20, 50)]
    assert out["targets"][0] == {"box": [[1, 2, 3, 4]]}


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1 / 11), (9, 10 / 11), (10, 1.0), (55, 0.01 + 0.99 * 0.5), (100, 0.01), (500, 0.01)],
)
def test_warmup_cosine_lambda(step: int, expected: float) -> None:
    assert warmup_cosine_lambda(100, 10, 0.01)(step) == pytest.approx(expected)


def test_yolo_param_groups_decay_conv_weights_only() -> None:
    net = build_network("n")
    decay, no_decay = yolo_param_groups(net, 5e-4)
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    trainable = [id(p) for p in net.parameters() if p.requires_grad]  # ultralytics freezes the DFL conv
    assert sorted(ids) == sorted(trainable)  # every trainable parameter, once
    assert all(p.ndim > 1 for p in decay["params"])  # convolution weights
    assert all(p.ndim == 1 for p in no_decay["params"])  # biases and BatchNorm weights
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0


def test_spec_checkpoint_saver_keeps_the_best(tmp_path) -> None:
    net = build_network("n")
    spec = NetworkSpec(tile_size_px=64, pixel_spacing_mm=0.875)
    saver = SpecCheckpointSaver(tmp_path, net, spec)
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "val_froc"
    for epoch, value in enumerate([0.2, float("nan"), 0.5, 0.4], start=1):
        engine.state.epoch = epoch
        engine.state.metrics = {"val_froc": value}
        saver.key_metric_completed(engine)
    assert saver.best == 0.5
    loaded, loaded_spec = load_checkpoint(tmp_path / "model.pt")
    assert loaded_spec.extra == {"key_metric": "val_froc", "key_metric_value": 0.5, "epoch": 3}
    assert loaded_spec.tile_size_px == 64
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _train_loader(datalist_file: str, tile_size: int = 64, batch_images: int = 2) -> DataLoader:
    keys = {"image_keys": "image", "box_keys": "box"}
    transform = Compose(
        [
            LoadMammogramd("image"),
            BoxesToSpatialOrderd("box"),
            NormalizeLateralityd(**keys),
            CropBreastd(**keys, margin_px=4),
            ScalePyramidd(**keys, scales=(1.0, 0.5)),
            RandTileSamplerd("image", "box", "label", tile_size=tile_size, num_samples=4, pos=3, neg=1),
            RandFlipBoxd(**keys, box_ref_image_keys="image", prob=0.5, spatial_axis=0),
            BoxesToXYOrderd("box"),
        ]
    )
    transform.set_random_state(seed=0)
    dataset = Dataset(load_datalist(datalist_file, "training"), transform=transform)
    return DataLoader(
        dataset, batch_size=batch_images, shuffle=True, num_workers=0, collate_fn=detection_collate
    )


def test_trainer_loss_falls(tiny_datalist: str, tmp_path) -> None:
    """A few dozen SGD steps (ultralytics' recipe) on tiles of 6 images lower the detection loss."""
    set_determinism(seed=0)
    try:
        net = build_network("n")
        optimizer = torch.optim.SGD(yolo_param_groups(net, 5e-4), lr=0.01, momentum=0.937, nesterov=True)
        summary = EpochSummaryHandler(
            ("loss", "box_loss", "cls_loss", "dfl_loss"), tmp_path / "history.jsonl", optimizer
        )
        losses: list[float] = []
        trainer = DetectionTrainer(
            device="cpu",
            max_epochs=12,
            train_data_loader=_train_loader(tiny_datalist),  # 3 steps of 8 tiles per epoch
            network=net,
            optimizer=optimizer,
            loss_function=DetectionLoss(net),
            train_handlers=[summary],
            amp=True,  # ignored on CPU
        )
        assert trainer.amp is False
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"]))
        )
        trainer.run()
    finally:
        set_determinism(seed=None)
    assert len(losses) == 36 and all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.8 * first, (first, last)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert {"loss", "box_loss", "cls_loss", "dfl_loss", "lr", "seconds"} <= set(history[0])


def test_engines_flush_denormals_only_while_they_run(tiny_datalist: str) -> None:
    """Flushing denormals is process state: on during a run on CPU, as it was before afterwards,
    also when the run raises (and the evaluator run inside a training run leaves it on)."""
    net = build_network("n")

    def trainer(flush: bool, seen: list[bool]) -> DetectionTrainer:
        engine = DetectionTrainer(
            device="cpu",
            max_epochs=1,
            epoch_length=1,
            train_data_loader=_train_loader(tiny_datalist, tile_size=32, batch_images=1),
            network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=1e-4),
            loss_function=DetectionLoss(net),
            flush_denormal=flush,
        )
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(denormals_are_flushed()))
        return engine

    val_loader = DataLoader(
        Dataset(load_datalist(tiny_datalist, "validation")[:1], transform=LoadMammogramd("image")),
        batch_size=1,
        collate_fn=whole_image_collate,
    )
    evaluator = DetectionEvaluator(
        device="cpu",
        val_data_loader=val_loader,
        network=net,
        inferer=MultiScaleInferer(scales=(1.0,), tile_size=64, conf_thres=0.5),
    )
    seen: list[bool] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(denormals_are_flushed()))
    assert not denormals_are_flushed()
    evaluator.run()
    assert seen == [True] and not denormals_are_flushed()

    training = trainer(True, seen := [])
    training.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(e.state.epoch))
    training.add_event_handler(Events.COMPLETED, lambda e: seen.append(denormals_are_flushed()))
    training.run()
    assert seen == [True, True, True] and not denormals_are_flushed()

    torch.set_flush_denormal(True)  # a caller's own setting is kept
    trainer(True, seen := []).run()
    assert seen == [True] and denormals_are_flushed()
    torch.set_flush_denormal(False)

    failing = trainer(True, seen := [])
    failing.add_event_handler(Events.ITERATION_COMPLETED, lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.run()
    assert seen == [True] and not denormals_are_flushed()

    trainer(False, seen := []).run()
    assert seen == [False]


def test_evaluator_runs_froc_on_whole_images(tiny_datalist: str) -> None:
    data = load_datalist(tiny_datalist, "validation")
    loader = DataLoader(
        Dataset(data, transform=LoadMammogramd("image")), batch_size=2, collate_fn=whole_image_collate
    )
    from monai.handlers import from_engine

    to_pairs = from_engine(["pred", "label"])
    evaluator = DetectionEvaluator(
        device="cpu",
        val_data_loader=loader,
        network=build_network("n"),
        inferer=MultiScaleInferer(per_scale=True, scales=(1.0, 0.5), tile_size=64, conf_thres=0.01),
        key_val_metric={"val_froc": FROCMetric(output_transform=to_pairs)},
        additional_metrics=froc_metrics(num_scales=2, output_transform=to_pairs, small_lesion_key=None),
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    assert set(metrics) == {"val_froc", "val_froc_scale0", "val_froc_scale1"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    preds = evaluator.state.output["pred"]
    height, width = evaluator.state.output["image"][0].shape[1:]
    boxes = preds[0]["box"]
    assert boxes.ndim == 2 and boxes.shape[1] == 4
    assert bool((boxes[:, [0, 2]] <= width + 1e-3).all() and (boxes[:, [1, 3]] <= height + 1e-3).all())
    assert evaluator.state.froc_details["val_froc"].num_images == 2


def test_precise_bn_recomputes_the_running_statistics_exactly() -> None:
    from ignite.engine import Engine

    from monai_smalldet.engines import PreciseBNHandler

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3, bias=False)
    bn = torch.nn.BatchNorm2d(3, momentum=0.03)
    net = torch.nn.Sequential(conv, bn).eval()
    bn.running_mean.fill_(5.0)  # stale statistics, as after fast-moving weights
    bn.running_var.fill_(9.0)
    batches = [{"image": torch.rand(4, 1, 16, 16) * (i + 1)} for i in range(5)]
    engine = Engine(lambda e, b: None)
    engine.network = net
    engine.data_loader = batches
    engine.state.device = torch.device("cpu")
    engine.state.epoch = 2
    PreciseBNHandler(num_batches=3)(engine)
    with torch.no_grad():
        feats = [conv(b["image"]) for b in batches[:3]]
    # cumulative average of the per-batch statistics (what momentum=None computes)
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.03 and not net.training  # restored
    before = bn.running_mean.clone()
    PreciseBNHandler(num_batches=3)(engine)  # same epoch again: idempotent, same batches
    torch.testing.assert_close(bn.running_mean, before)
    with pytest.raises(ValueError, match="num_batches"):
        PreciseBNHandler(num_batches=0)
