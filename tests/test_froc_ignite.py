"""FROCMetric in an Ignite engine, a MONAI evaluator and two gloo processes."""

from __future__ import annotations

import json
import math
import socket

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError

from monai_smalldet.metrics import FROCMetric, UndefinedSensitivityWarning, froc


def _images(n: int, seed: int) -> list[tuple[dict, dict]]:
    """(prediction, ground truth) per image; every third image has no lesion."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lesions = [[10.0, 10.0, 30.0, 30.0]] if i % 3 else []
        boxes = [[15.0, 15.0, 25.0, 25.0], [60.0, 60.0, 70.0, 70.0]]
        pred = {"box": torch.tensor(boxes), "label_scores": torch.tensor(rng.random(2))}
        gt = {
            "box": torch.tensor(lesions).reshape(-1, 4),
            "lesion_size_mm": [4.0 + 10.0 * (i % 2)] * len(lesions),
        }
        out.append((pred, gt))
    return out


def _batches(images, size):
    return [
        ([p for p, _ in images[k : k + size]], [g for _, g in images[k : k + size]])
        for k in range(0, len(images), size)
    ]


def _reference(images, **kw):
    return froc([p for p, _ in images], [g for _, g in images], n_bootstrap=0, **kw)


def test_metric_over_two_epochs_resets_and_matches_froc():
    epochs = {1: _images(9, seed=0), 2: _images(12, seed=1)}
    batches = {e: _batches(imgs, 3) for e, imgs in epochs.items()}
    engine = Engine(lambda eng, k: batches[eng.state.epoch][k])
    metric = FROCMetric("sensitivity@0.3")
    metric.attach(engine, "froc")
    seen = {}

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(eng):
        seen[eng.state.epoch] = (eng.state.metrics["froc"], eng.state.froc_details["froc"])

    engine.run(list(range(3)), max_epochs=2, epoch_length=3)  # epoch 2 uses only its first 9 images
    for epoch, n in ((1, 9), (2, 9)):
        value, details = seen[epoch]
        expected = _reference(epochs[epoch][:n])
        assert details.num_images == n  # reset at every epoch
        assert value == pytest.approx(expected.sensitivity_at_fpi[0.3])
        np.testing.assert_allclose(details.fpi, expected.fpi)
    assert metric.last_result is seen[2][1]
    assert seen[1][0] != seen[2][0]


@pytest.mark.parametrize(
    "key, pick",
    [
        ("sensitivity@0.3", lambda r: r.sensitivity_at_fpi[0.3]),
        ("sensitivity_step@0.25", lambda r: r.sensitivity_at_fpi_step[0.25]),
        ("cpm", lambda r: r.cpm),
        ("size<10mm/sensitivity@0.5", lambda r: r.strata["size<10mm"].sensitivity_at_fpi[0.5]),
        ("size>=10mm/cpm", lambda r: r.strata["size>=10mm"].cpm),
    ],
)
def test_keys_select_values(key, pick):
    images = _images(10, seed=2)
    metric = FROCMetric(key)
    for batch in _batches(images, 4):
        metric.update(batch)
    expected = _reference(images, fpis=metric.fpis)
    assert metric.compute() == pytest.approx(pick(expected))
    if "@0.25" in key:
        assert 0.25 in metric.fpis


def test_bad_key_missing_stratum_and_empty_metric():
    with pytest.raises(ValueError, match="key must be"):
        FROCMetric("recall@0.3")
    metric = FROCMetric("type=mass/sensitivity@0.3")
    metric.update(([{"box": [], "label_scores": []}], [{"box": [[0, 0, 4, 4]]}]))
    with pytest.warns(UndefinedSensitivityWarning, match="type=mass"):
        assert math.isnan(metric.compute())
    metric.reset()
    with pytest.raises(NotComputableError):
        metric.compute()


def test_single_image_mapping_and_image_id_deduplication():
    pred = {"box": [[4, 4, 6, 6], [50, 50, 60, 60]], "label_scores": [0.9, 0.8]}
    gt = {"box": [[0, 0, 10, 10]], "image_id": "a"}
    metric = FROCMetric("cpm", image_id_key="image_id")
    metric.update((pred, gt))
    metric.update((pred, gt))  # a padded distributed sampler repeats the image
    metric.update(([{"box": [], "label_scores": []}], [{"box": [], "image_id": "b"}]))
    metric.compute()
    assert metric.last_result.num_images == 2 and metric.last_result.num_lesions == 1


def test_metric_as_monai_evaluator_key_metric():
    from monai.engines import Evaluator

    images = _images(8, seed=3)
    # flat per-image dicts, MONAI style: predictions and labels side by side
    flat = [
        {
            "pred_box": p["box"],
            "pred_score": p["label_scores"],
            "box": g["box"],
            "lesion_size_mm": g["lesion_size_mm"],
        }
        for p, g in images
    ]
    loader = [flat[k : k + 4] for k in range(0, len(flat), 4)]
    evaluator = Evaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        iteration_update=lambda engine, batch: batch,
        key_val_metric={
            "val_froc": FROCMetric(
                "sensitivity@0.3",
                output_transform=lambda out: (out, out),
                pred_box_key="pred_box",
                pred_score_key="pred_score",
            )
        },
        decollate=False,
    )
    evaluator.run()
    expected = _reference(images).sensitivity_at_fpi[0.3]
    assert evaluator.state.metrics["val_froc"] == pytest.approx(expected)
    assert evaluator.state.best_metric == pytest.approx(expected)
    assert evaluator.state.froc_details["val_froc"].num_images == 8


# ----------------------------------------------------------------------- distributed


def _distributed_run(local_rank: int, out_dir: str) -> None:
    images = _images(11, seed=4)
    rank = idist.get_rank()
    mine = images[:7] if rank == 0 else images[7:]  # uneven shares
    engine = Engine(lambda eng, batch: batch)
    metric = FROCMetric("size<10mm/sensitivity@0.3")
    metric.attach(engine, "froc")
    engine.run(_batches(mine, 2), max_epochs=1)
    with open(f"{out_dir}/rank{rank}.json", "w") as fh:
        json.dump({"value": engine.state.metrics["froc"], "images": metric.last_result.num_images}, fh)


@pytest.mark.slow
def test_two_gloo_processes_agree_with_single_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=port) as parallel:
        parallel.run(_distributed_run, str(tmp_path))
    expected = _reference(_images(11, seed=4)).strata["size<10mm"].sensitivity_at_fpi[0.3]
    assert expected == pytest.approx(0.5)  # not a trivial 0 or 1
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["images"] == 11
        assert got["value"] == pytest.approx(expected)
