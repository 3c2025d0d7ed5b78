"""Every bundle config runs end to end on a tiny synthetic dataset (model-zoo CI style).

``ConfigWorkflow`` runs ``bundle/configs/{train,evaluate,inference}.yaml`` with overrides:
4 training / 2 validation / 2 test images of 266 x 328 pixels (scale 0.08, 0.875 mm),
64 px tiles, one epoch of two steps. Each test checks what its config wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_smalldet.networks import NetworkSpec, build_network, load_checkpoint, save_checkpoint
from monai_smalldet.transforms import Preprocessing

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


def test_training_runs_from_a_persistent_dataset(trained: Path, tmp_path: Path) -> None:
    """The deterministic part of the training transforms (load ... pyramid) cached on disk by
    MONAI's PersistentDataset instead of CacheDataset: the frame records pickle and come back."""
    overrides = {**_tiny(trained), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    overrides["train#dataset"] = {
        "_target_": "PersistentDataset",
        "data": "@train_datalist",
        "transform": "@train#preprocessing",
        "cache_dir": str(tmp_path / "cache"),
    }
    workflow = _run(TRAIN, "train", **overrides)
    assert type(workflow.parser.get_parsed_content("train#dataset")).__name__ == "PersistentDataset"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4  # one per training image
    _, spec = load_checkpoint(tmp_path / "models" / "model_final.pt")
    assert spec.extra["final"] is True


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
    _, spec = load_checkpoint(trained / "models" / "model.pt")  # calibrated at the end of training
    for path in results:
        payload = json.loads(path.read_text())
        height, width = payload["image_size_hw"]
        assert payload["fusion"] == spec.fusion["name"]
        assert payload["spacing_source"] in ("ImagerPixelSpacing", "PixelSpacing")
        point = payload["operating_point"]
        assert point["source"] == "checkpoint"
        assert point["score_threshold"] == spec.operating_point["score_threshold"]
        for finding in payload["findings"]:
            x1, y1, x2, y2 = finding["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert finding["reported"] == (finding["score"] >= point["score_threshold"])


# -- bundle tooling -----------------------------------------------------------------------------
SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"


def test_metadata_validates_offline_and_holds_only_measured_metrics(tmp_path: Path) -> None:
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"  # an existing file at filepath: verify_metadata downloads nothing
    schema.write_bytes(SCHEMA.read_bytes())
    verify_metadata(meta_file=META, filepath=str(schema))
    meta = json.loads(Path(META).read_text())
    for name, value in meta["eval_metrics"].items():  # numbers only, each with its source on disk
        assert isinstance(value, float) and 0.0 <= value <= 1.0, name
    bad = json.loads(Path(META).read_text())
    del bad["network_data_format"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(schema))


def test_verify_net_in_out_accepts_the_network_description() -> None:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_export", meta_file=META, config_file=TRAIN, device="cpu", n=2)
    meta = json.loads(Path(META).read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 7
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(net_id="network_export", meta_file=meta, config_file=TRAIN, device="cpu", n=2)


def test_ckpt_export_gives_a_torchscript_that_matches_the_checkpoint(trained: Path) -> None:
    import torch
    from monai.bundle import ckpt_export

    target = trained / "model.ts"
    ckpt_export(
        net_id="network_export",
        filepath=str(target),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=META,
        config_file=TRAIN,
        key_in_ckpt="",
        use_trace=True,
        input_shape=[1, 1, 64, 64],
        tile_size=64,
    )
    scripted = torch.jit.load(str(target))
    network, _ = load_checkpoint(trained / "models" / "model.pt")
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), network(x)[0], rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_multi_gpu_config_trains_two_gloo_ranks_that_agree(trained: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes, gloo: each rank trains on its shard, validation is gathered."""
    import os
    import subprocess
    import sys

    report = tmp_path / "ranks"
    report.mkdir()
    extra = tmp_path / "report.json"
    # (no "import" in the expression: MONAI would parse it as an import statement)
    rank_file = f"os.path.join({str(report)!r}, 'rank' + str(torch.distributed.get_rank()) + '.pt')"
    write = f"$torch.save(dict(@validate#evaluator.state.metrics), {rank_file})"
    # (no "imports" key: it would replace train.yaml's list)
    finalize = [write, "$torch.distributed.barrier()", "$torch.distributed.destroy_process_group()"]
    extra.write_text(json.dumps({"finalize": finalize}))
    overrides = {**_tiny(trained), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    overrides["synthetic#n_val"] = 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([TRAIN, str(CONFIGS / "multi_gpu_train.yaml"), str(extra)]),
    ]
    cmd += ["--meta_file", META, "--logging_file", LOGGING]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    import torch

    ranks = [torch.load(report / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0] == ranks[1] and "val_froc" in ranks[0]
    _, spec = load_checkpoint(tmp_path / "models" / "model_final.pt")  # rank 0 wrote it
    assert spec.extra["final"] is True


def test_full_profile_is_an_override_of_train(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([TRAIN, str(CONFIGS / "full.yaml")])
    parser["dataset_dir"] = str(tmp_path / "unused")  # nothing is generated by parsing these
    assert parser.get_parsed_content("tile_size") == 1024
    assert parser.get_parsed_content("pixel_spacing_mm") == 0.07
    assert parser.get_parsed_content("synthetic#scale") == 1.0
    optimizer = parser.get_parsed_content("optimizer")
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["lr"] == 0.01
    spec = parser.get_parsed_content("network_spec")
    assert (spec.variant, spec.tile_size_px) == ("s", 1024)
    quick = ConfigParser()
    quick.read_config(TRAIN)
    assert type(quick.get_parsed_content("optimizer")).__name__ == "AdamW"
    assert quick.get_parsed_content("learning_rate") == pytest.approx(0.002)
    assert not (tmp_path / "unused").exists()


def _parsed(config_file: str | list[str], **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.update(override)
    return parser


def test_one_preprocessing_item_reaches_training_validation_and_the_spec(tmp_path: Path) -> None:
    """A crop or laterality setting changed once in the config reaches every consumer."""
    parser = _parsed(TRAIN, **_tiny(tmp_path), **{"preprocessing#crop_margin_px": 8})
    parser["preprocessing#normalize_laterality"] = False
    steps = {type(t).__name__: t for t in parser.get_parsed_content("train#preprocessing_transforms")}
    assert "NormalizeLateralityd" not in steps and steps["CropBreastd"].cropper.margin_px == 8
    assert steps["ResampleToSpacingd"].resampler.target_spacing_mm[0] == 0.875
    detector = parser.get_parsed_content("validate#inferer").detector(build_network("n"))
    assert detector.laterality is None and detector.crop.margin_px == 8
    assert (detector.preprocessing.tile_size, detector.scales) == (64, (1.0, 0.5, 0.25))
    spec = parser.get_parsed_content("network_spec")
    assert Preprocessing.from_spec(spec) == detector.preprocessing


def test_evaluation_runs_the_checkpoints_preprocessing(tmp_path: Path) -> None:
    """evaluate.yaml validates a checkpoint with the preprocessing its spec names, not the
    training config's defaults."""
    prep = Preprocessing(pixel_spacing_mm=0.5, scales=(1.0, 0.5), tile_size=96, crop_margin_px=4)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_network("n"), NetworkSpec(**prep.spec_fields()))
    parser = _parsed([TRAIN, EVALUATE], **_tiny(tmp_path), ckpt_path=str(ckpt))
    assert parser.get_parsed_content("validate#inferer").detector(build_network("n")).preprocessing == prep
