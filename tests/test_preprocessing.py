"""One preprocessing definition: training transforms, detector, checkpoint spec and overrides.

A right-breast DICOM at 0.1 mm goes through the training pipeline that
``Preprocessing.dictionary_transforms`` builds and through the detector that the same object
configures: both must give the same image and the same frame record. A checkpoint saved with a
non-default crop margin and laterality setting must hand them to ``from_checkpoint``.
"""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose

from monai_smalldet.inference import MultiScaleDetector
from monai_smalldet.networks import NetworkSpec, build_network, read_spec, save_checkpoint
from monai_smalldet.transforms import LoadMammogram, Preprocessing, tile_boxes_to_original
from tests.fakes import write_right_breast_dicom

H, W = 900, 600  # rows, columns at 0.1 mm
LESION_XY = [410.0, 300.0, 450.0, 360.0]


@pytest.fixture(scope="module")
def dicom(tmp_path_factory: pytest.TempPathFactory):
    return write_right_breast_dicom(
        tmp_path_factory.mktemp("prep") / "r_mlo.dcm", (H, W), LESION_XY, view="MLO"
    )


PREP = Preprocessing(pixel_spacing_mm=0.2, scales=(1.0, 0.5), tile_size=128, crop_margin_px=8)


def test_training_pipeline_and_detector_run_the_same_steps(dicom) -> None:
    item = {"image": str(dicom), "box": [LESION_XY], "benign_box": []}
    d = Compose(PREP.dictionary_transforms("image", ["box", "benign_box"]))(item)
    detector = MultiScaleDetector(build_network("n"), preprocessing=PREP, device="cpu")
    image = LoadMammogram()(str(dicom))
    work, frame = detector._preprocess(np.asarray(image, np.float32), "R", (0.1, 0.1))
    assert tuple(np.asarray(work).shape) == tuple(d["image_scale0"].shape)
    np.testing.assert_allclose(np.asarray(work), np.asarray(d["image_scale0"]), atol=1e-5)
    assert np.allclose(tuple(frame), tuple(d["frame_scale0"]))
    # the lesion went along, in MONAI's order inside the pipeline, back to the datalist's box
    back = tile_boxes_to_original(np.asarray(d["box_scale0"])[:, [1, 0, 3, 2]], d["frame_scale0"])
    np.testing.assert_allclose(back[0], LESION_XY, atol=1e-3)
    # the setting matters: another margin gives another crop
    wider = Compose(PREP.replace(crop_margin_px=40).dictionary_transforms("image", ["box", "benign_box"]))(
        item
    )
    assert wider["image_scale0"].shape[1:] != d["image_scale0"].shape[1:]


def test_checkpoint_carries_its_preprocessing(tmp_path, dicom) -> None:
    prep = PREP.replace(normalize_laterality=False, tile_overlap=0.25)
    spec = NetworkSpec(variant="n", **prep.spec_fields())
    path = save_checkpoint(tmp_path / "model.pt", build_network("n"), spec)
    assert Preprocessing.from_spec(read_spec(path)) == prep
    detector = MultiScaleDetector.from_checkpoint(path, device="cpu")
    assert detector.preprocessing == prep
    assert detector.laterality is None and detector.crop.margin_px == 8
    assert detector.resample.target_spacing_mm[0] == pytest.approx(0.2)
    assert detector.tiler.grid.overlap == pytest.approx(0.25)
    # a keyword overrides one setting and keeps the others
    only_1x = MultiScaleDetector.from_checkpoint(path, device="cpu", scales=(1.0,))
    assert only_1x.preprocessing == prep.replace(scales=(1.0,)) and only_1x.scales == (1.0,)


def test_spec_without_preprocessing_reads_as_before() -> None:
    """A checkpoint written before the spec kept ``preprocessing`` (the shipped model's format)."""
    old = NetworkSpec(tile_size_px=256, pixel_spacing_mm=0.28, scales=(1.0, 0.5, 0.25))
    assert Preprocessing.from_spec(old) == Preprocessing(pixel_spacing_mm=0.28, tile_size=256)


def test_round_trip_and_unknown_settings() -> None:
    assert Preprocessing.from_dict(PREP.to_dict()) == PREP
    with pytest.raises(ValueError, match="crop_margin"):
        Preprocessing.from_dict({**PREP.to_dict(), "crop_margin": 3})
    with pytest.raises(ValueError, match="flip"):
        Preprocessing.from_spec(NetworkSpec(preprocessing={"flip": True}))
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        Preprocessing(pixel_spacing_mm=None).spec_fields()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pixel_spacing_mm": -1.0}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": float("nan")}, "pixel_spacing_mm"),
        ({"scales": ()}, "scales"),
        ({"scales": (1.0, 2.0)}, "scales"),
        ({"tile_size": 0}, "tile_size"),
        ({"tile_overlap": 1.0}, "tile_overlap"),
        ({"crop_margin_px": -4}, "crop_margin_px"),
    ],
)
def test_invalid_settings_name_the_setting(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Preprocessing(**changes)


def test_detector_rejects_a_tile_off_the_network_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        MultiScaleDetector(build_network("n"), preprocessing=PREP.replace(tile_size=100), device="cpu")
