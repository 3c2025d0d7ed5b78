"""The model shipped in bundle/models/: it loads, it detects, and every fast path agrees with it.

On a fresh synthetic test set (seed 3000, scale 0.25: the model's profile; no training split
uses that seed), the fused fp32 detector and the ONNX Runtime backend must reach the same
sensitivity at 0.3 false positives per image as the plain network within 0.01 (the
fast-inference issue's tolerance), bf16 autocast within one lesion of the 16 (bf16 keeps 8
significant bits: scores near the 0.3-FPI threshold, 2.4 false positives over 8 images, swap
places), and the trained model must find more lesions than the same network with random
weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from monai_smalldet.data.synthetic import generate_mammogram
from monai_smalldet.inference import MultiScaleDetector
from monai_smalldet.metrics import froc
from monai_smalldet.networks import build_network, load_checkpoint

MODEL = Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt"
N_IMAGES = 8


@pytest.fixture(scope="module")
def test_set() -> list:
    views = [("CC", "L"), ("MLO", "L"), ("CC", "R"), ("MLO", "R")]
    return [
        generate_mammogram(
            seed=3000 + i, scale=0.25, view=views[i % 4][0], laterality=views[i % 4][1], n_lesions=2
        )
        for i in range(N_IMAGES)
    ]


def _sensitivity(detector: MultiScaleDetector, images: list, fpi: float = 0.3) -> float:
    preds, truth = [], []
    for m in images:
        found = detector.predict(
            m.to_float(), laterality=m.laterality, pixel_spacing_mm=m.pixel_spacing_mm
        ).fused
        preds.append({"box": found.boxes, "label_scores": found.scores})
        truth.append({"box": m.boxes})
    return froc(preds, truth, n_bootstrap=0).sensitivity_at(fpi)


def test_the_shipped_model_loads_with_its_spec() -> None:
    network, spec = load_checkpoint(MODEL)
    assert spec.extra.get("key_metric") == "val_froc"
    assert (spec.variant, spec.tile_size_px, spec.scales) == ("n", 256, (1.0, 0.5, 0.25))
    assert spec.pixel_spacing_mm == pytest.approx(0.28)
    assert not network.training
    # fusion and reporting threshold chosen on >= 200 validation images, in fp32
    from monai_smalldet.fusion import FUSIONS

    point = spec.operating_point
    assert spec.fusion["name"] in FUSIONS and 0.0 < spec.score_threshold < 1.0
    assert (point["target_fpi"], point["split"], point["precision"]) == (0.3, "validation", "fp32")
    assert point["num_images"] >= 200


@pytest.mark.slow
def test_fast_paths_keep_the_sensitivity_and_training_paid(test_set) -> None:
    assert sum(len(m.boxes) for m in test_set) >= N_IMAGES
    plain = MultiScaleDetector.from_checkpoint(MODEL, device="cpu", optimize=False, precision="fp32")
    reference = _sensitivity(plain, test_set)
    variants = {
        "fused fp32": {"precision": "fp32"},
        "bf16": {"precision": "bf16"},
    }
    try:
        import onnxruntime  # noqa: F401

        variants["onnxruntime"] = {"backend": "onnxruntime"}
    except ImportError:  # pragma: no cover - the onnx extra is part of make test
        pass
    one_lesion = 1.0 / sum(len(m.boxes) for m in test_set)
    for name, kwargs in variants.items():
        value = _sensitivity(MultiScaleDetector.from_checkpoint(MODEL, device="cpu", **kwargs), test_set)
        tolerance = one_lesion + 1e-9 if name == "bf16" else 0.01
        assert abs(value - reference) <= tolerance, (name, value, reference)

    # the default (tiled, 3 scales + WBF) path of the trained model against random weights
    torch.manual_seed(0)
    _, spec = load_checkpoint(MODEL)
    untrained = MultiScaleDetector(
        build_network(spec.variant),
        device="cpu",
        scales=spec.scales,
        tile_size=spec.tile_size_px,
        target_spacing_mm=spec.pixel_spacing_mm,
    )
    trained = MultiScaleDetector.from_checkpoint(MODEL, device="cpu")
    found, chance = _sensitivity(trained, test_set), _sensitivity(untrained, test_set)
    assert np.isfinite(reference) and found >= chance + 0.1, (found, chance)
