"""Every bundle config runs end to end on a tiny synthetic dataset (model-zoo CI style).

``ConfigWorkflow`` runs ``bundle/configs/{train,evaluate,inference}.yaml`` with overrides:
4 training / 2 validation / 2 test images of 266 x 328 pixels (scale 0.08, 0.875 mm),
64 px tiles, one epoch of two steps. Each test checks what its config wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from monai_smalldet.networks import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / f"{name}.yaml") for name in ("train", "evaluate", "inference"))
META, LOGGING = str(CONFIGS / "metadata.json"), str(CONFIGS / "logging.conf")


def _tiny(root: Path) -> dict:
    return {
        "dataset_dir": str(root / "data"),
        "synthetic#n_train": 4,
        "synthetic#n_val": 2,
        "synthetic#n_test": 2,
        "synthetic#scale": 0.08,
        "synthetic#workers": 1,
        "pixel_spacing_mm": 0.875,
        "tile_size": 64,
        "epochs": 1,
        "val_interval": 1,
        "batch_images": 2,
        "tiles_per_image": 2,
        "num_workers": 0,
        "ckpt_dir": str(root / "models"),
        "output_dir": str(root / "eval"),
        "validate#inferer#conf_thres": 0.05,  # fewer boxes from the untrained network: faster
    }


def _run(config_file: str | list[str], workflow_type: str | None, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=config_file, meta_file=META, logging_file=LOGGING, workflow_type=workflow_type, **override
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run train.yaml once; the other configs reuse its dataset and checkpoint."""
    root = tmp_path_factory.mktemp("bundle")
    workflow = _run(TRAIN, "train", **_tiny(root))
    handlers = workflow.parser.get_parsed_content("train#handlers")
    assert not any(type(h).__name__ == "TensorBoardStatsHandler" for h in handlers)  # tensorboard absent
    return root


def test_train_writes_best_and_final_checkpoints(trained: Path) -> None:
    network, spec = load_checkpoint(trained / "models" / "model.pt")
    assert (spec.tile_size_px, spec.pixel_spacing_mm, spec.scales) == (64, 0.875, (1.0, 0.5, 0.25))
    assert spec.extra["key_metric"] == "val_froc" and spec.extra["epoch"] == 1
    assert not network.training
    _, final = load_checkpoint(trained / "models" / "model_final.pt")
    assert final.extra["final"] is True
    metrics = json.loads((trained / "eval" / "validation" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {
        "val_froc",
        "val_froc_scale0",
        "val_froc_scale1",
        "val_froc_scale2",
        "val_froc_small",
    }
    assert metrics["key_metric"] == "val_froc" and metrics["images"] == 2
    info = json.loads((trained / "models" / "training_info.json").read_text())
    assert (info["profile"], info["data"], info["n_train_images"], info["epochs_run"]) == (
        "quick-cpu",
        "synthetic",
        4,
        1,
    )
    history = (trained / "eval" / "train_history.jsonl").read_text().splitlines()
    assert json.loads(history[0])["iterations"] == 2


def test_evaluate_writes_froc_metrics_and_plot(trained: Path) -> None:
    out = trained / "evaluation"
    _run([TRAIN, EVALUATE], None, **{**_tiny(trained), "output_dir": str(out)})
    metrics = json.loads((out / "metrics.json").read_text())
    value = metrics["metrics"]["val_froc"]
    assert metrics["images"] == 2 and (value is None or 0.0 <= value <= 1.0)
    assert "sensitivity_at_fpi" in json.dumps(metrics["froc"]["val_froc"])
    assert (out / "froc.png").stat().st_size > 1000
    assert (out / "metrics.csv").is_file()


def test_inference_writes_one_json_per_image_inside_the_image(trained: Path) -> None:
    out = trained / "predictions"
    _run(
        INFERENCE,
        None,
        ckpt_path=str(trained / "models" / "model.pt"),
        input_dir=str(trained / "data" / "test"),
        output_dir=str(out),
    )
    results = sorted(p for p in out.glob("*.json") if p.name != "failed.json")
    assert len(results) == 2
    assert json.loads((out / "failed.json").read_text()) == []
    for path in results:
        payload = json.loads(path.read_text())
        height, width = payload["image_size_hw"]
        for finding in payload["findings"]:
            x1, y1, x2, y2 = finding["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
