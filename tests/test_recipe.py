"""The training recipe and the operating point: weight averaging, fusion and threshold chosen on
validation, the spec that carries them, and the generator's lesion contrast.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from monai_smalldet.data.synthetic import SynthConfig, generate_mammogram
from monai_smalldet.engines import EMAHandler, calibrate_outputs, threshold_at_fpi
from monai_smalldet.fusion import Detections
from monai_smalldet.inference import MultiScaleDetector, MultiScaleOutput
from monai_smalldet.metrics import froc
from monai_smalldet.networks import NetworkSpec, WeightEMA, build_network, load_checkpoint, save_checkpoint


def test_weight_ema_follows_the_trained_weights_with_ultralytics_decay() -> None:
    """After each step the average moves by (1 - d) towards the weights, d = 0.9 (1 - exp(-n / tau))."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, decay=0.9, tau=2.0)
    start = ema.module[0].weight.detach().clone()
    engine = Engine(lambda e, b: net[0].weight.data.add_(1.0))  # one "optimizer step" per iteration
    engine.network = net
    EMAHandler(ema).attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    expected = start.clone()
    for n, w_shift in zip((1, 2, 3), (1.0, 2.0, 3.0), strict=True):
        d = 0.9 * (1 - np.exp(-n / 2.0))
        expected = d * expected + (1 - d) * (start + w_shift)
    assert torch.allclose(ema.module[0].weight, expected, atol=1e-6)
    assert ema.updates == 3 and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def _out(per_scale: list[list[tuple]], hw=(100, 100)) -> MultiScaleOutput:
    """A detector output with the given (x1, y1, x2, y2, score) boxes per level."""
    levels = []
    for boxes in per_scale:
        b = np.asarray([x[:4] for x in boxes], np.float32).reshape(-1, 4)
        s = np.asarray([x[4] for x in boxes], np.float32)
        levels.append(Detections(b, s, np.ones(len(b), np.int64)))
    return MultiScaleOutput(fused=levels[0], per_scale=levels, scales=(1.0, 0.5, 0.25), image_size_hw=hw)


def test_calibration_prefers_max_when_lesions_are_seen_at_one_level_and_reads_the_threshold() -> None:
    """Each lesion is found at one level only, at 0.6; each image has a false positive seen at all
    three levels at 0.3. The paper's avg divides a lone 0.6 by 3 (0.2), below the FP's 0.3: at
    0 FPI it finds nothing. ``max`` keeps 0.6 > 0.3 and finds all lesions with no FP."""
    lesion, fp = (10, 10, 20, 20), (60, 60, 70, 70)
    outputs, items = [], []
    for level in range(3):
        per_scale = [[(*fp, 0.3)] for _ in range(3)]
        per_scale[level] = per_scale[level] + [(*lesion, 0.6)]
        outputs.append(_out(per_scale))
        items.append({"box": [list(lesion)], "label": [1]})
    cal = calibrate_outputs(outputs, items, target_fpi=0.0)
    paper = next(r for r in cal.candidates if r["name"] == "wbf" and r["kwargs"] == {})
    assert paper["sensitivity"] == 0.0
    assert cal.fusion["name"] == "wbf" and cal.fusion["kwargs"].get("conf_type") == "max"
    assert cal.operating_point["sensitivity"] == 1.0
    assert cal.operating_point["score_threshold"] == pytest.approx(0.6)
    assert (cal.operating_point["num_images"], cal.operating_point["num_lesions"]) == (3, 3)


def test_threshold_at_fpi_is_the_lowest_score_within_the_budget() -> None:
    preds = [
        {"box": [[0, 0, 5, 5], [50, 50, 55, 55]], "label_scores": [0.9, 0.4]},
        {"box": [[50, 50, 55, 55]], "label_scores": [0.7]},
    ]
    truth = [{"box": [[0, 0, 10, 10]]}, {"box": []}]
    result = froc(preds, truth, n_bootstrap=0, stratify=False)
    assert threshold_at_fpi(result, 0.5) == pytest.approx(0.7)  # one FP over two images
    assert threshold_at_fpi(result, 1.0) == pytest.approx(0.4)
    assert threshold_at_fpi(result, 0.0) == pytest.approx(0.9)


def test_calibration_needs_lesions() -> None:
    with pytest.raises(ValueError, match="no lesion"):
        calibrate_outputs([_out([[], [], []])], [{"box": []}])


def test_the_spec_carries_fusion_and_operating_point_to_the_detector(tmp_path) -> None:
    spec = NetworkSpec(tile_size_px=64, pixel_spacing_mm=0.5)
    calibrated = dataclasses.replace(
        spec,
        fusion={"name": "wbf", "kwargs": {"conf_type": "max", "iou_thr": 0.3}},
        operating_point={"score_threshold": 0.123, "target_fpi": 0.3},
    )
    save_checkpoint(tmp_path / "model.pt", build_network("n"), calibrated)
    assert load_checkpoint(tmp_path / "model.pt")[1] == calibrated
    detector = MultiScaleDetector.from_checkpoint(tmp_path / "model.pt", device="cpu")
    assert (detector.fusion_name, detector.fusion.conf_type, detector.fusion.iou_thr) == ("wbf", "max", 0.3)
    assert detector.score_threshold == pytest.approx(0.123)
    # another fusion: the threshold measured for the spec's does not apply
    other = MultiScaleDetector.from_checkpoint(tmp_path / "model.pt", device="cpu", fusion="nms")
    assert other.fusion_name == "nms" and other.score_threshold is None
    # an uncalibrated spec: the paper's WBF and no threshold
    save_checkpoint(tmp_path / "bare.pt", build_network("n"), spec)
    bare = MultiScaleDetector.from_checkpoint(tmp_path / "bare.pt", device="cpu")
    assert (bare.fusion_name, bare.fusion.conf_type, bare.score_threshold) == ("wbf", "avg", None)


def test_mass_contrast_is_linear_in_the_diameter_up_to_its_cap() -> None:
    """Peak contrast = drawn contrast x diameter / mass_contrast_ref_mm: the same 8 mm mass
    (same seed, place and tissue) referred to 2 mm instead of 8 mm adds 4x the signal at its
    centre; ``mass_contrast_max`` caps it."""

    def centre_gain(**overrides: float) -> float:
        cfg = dataclasses.replace(
            SynthConfig(scale=0.25),
            type_weights=(1.0, 0.0, 0.0),
            mass_diameter_mm=(8.0, 8.0),
            p_benign=0.0,
            **overrides,
        )
        kwargs = {"seed": 11, "scale": 0.25, "view": "CC", "laterality": "L", "n_lesions": 1, "config": cfg}
        with_mass = generate_mammogram(**kwargs)
        without = generate_mammogram(**kwargs, render_findings=False)
        x, y = (int(v / with_mass.pixel_spacing_mm) for v in with_mass.lesions[0].center_mm)
        return float(with_mass.image[y, x]) - float(without.image[y, x])

    base = centre_gain(mass_contrast_ref_mm=8.0)
    assert base > 0
    assert centre_gain(mass_contrast_ref_mm=2.0) / base == pytest.approx(4.0, rel=0.1)
    assert centre_gain(mass_contrast_ref_mm=2.0, mass_contrast_max=0.01) < 0.5 * base


def test_a_model_that_cannot_reach_the_target_gets_a_finite_threshold_that_reports_nothing() -> None:
    """No score keeps the FPI at the target: the threshold lies above every score, not at inf
    (the spec is JSON, where inf is not valid)."""
    import json

    from monai_smalldet.engines import calibrate_outputs

    detections = Detections(
        np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.9]), np.array([1]), np.ones((1, 1), bool)
    )
    outputs = [
        MultiScaleOutput(fused=detections, per_scale=[detections], scales=(1.0,), image_size_hw=(100, 100))
    ]
    items = [{"box": [[50.0, 50.0, 60.0, 60.0]], "label": [1]}]  # the one prediction is a false positive
    cal = calibrate_outputs(outputs, items, target_fpi=0.3, candidates=(("wbf", {}),))
    threshold = cal.operating_point["score_threshold"]
    assert np.isfinite(threshold) and threshold > 1.0 and cal.operating_point["sensitivity"] == 0.0
    json.loads(json.dumps(cal.to_dict(), allow_nan=False))  # strict JSON
