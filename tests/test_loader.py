"""MammogramReader inside MONAI's LoadImage(d), the LoadMammogram(d) transforms, Dataset/DataLoader."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, EnsureTyped, LoadImage, LoadImaged
from PIL import Image

from monai_smalldet.data import MammogramMeta, MammogramReadError
from monai_smalldet.data.reader import MammogramReader
from monai_smalldet.transforms import LoadMammogram, LoadMammogramd

# MONAI's LoadImage builds its default readers too; without nvImageCodec one of them warns.
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

META_FIELDS = [f.name for f in dataclasses.fields(MammogramMeta)]


@pytest.fixture
def marked_dicom(write_mg, mg_pixels) -> Path:
    """A 12-bit L MLO file with spacing (0.1, 0.05) and a full-scale pixel at (row 5, col 40)."""
    pixels = mg_pixels.copy()
    pixels[5, 40] = 4095
    return write_mg(
        "marked.dcm", pixels, view="MLO", pixel_spacing_mm=(0.1, 0.05), window_center=2048, window_width=4096
    )


@pytest.fixture
def four_views(write_mg, mg_pixels) -> list[dict]:
    items = []
    for i, (laterality, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
        photometric = "MONOCHROME1" if laterality == "R" else "MONOCHROME2"
        stored = mg_pixels if photometric == "MONOCHROME2" else (4095 - mg_pixels).astype(np.uint16)
        path = write_mg(
            f"{laterality}{view}.dcm",
            stored,
            laterality=laterality,
            view=view,
            photometric=photometric,
            instance_number=i + 1,
            uid_entropy=["loader-test"],
        )
        items.append({"image": str(path), "label": i})
    return items


VERIFY_CASES = [
    (["a.dcm"], True),
    (["A.DCM"], True),
    (["a.dicom"], True),
    (["a.png"], True),
    (["a.tif"], True),
    (["a.TIFF"], True),
    (["a.nii"], True),
    (["a.nii.gz"], True),
    (["a.dcm", "b.png"], True),
    (["a.jpg"], False),
    (["a.npy"], False),
    (["a.gz"], False),
    (["a.dcm", "b.jpg"], False),
]


@pytest.mark.parametrize("names, expected", VERIFY_CASES)
def test_verify_suffix(names, expected):
    assert MammogramReader().verify_suffix(names if len(names) > 1 else names[0]) is expected


def test_verify_suffix_sniffs_dicom_without_suffix(write_mg, tmp_path):
    dicom = write_mg("x.dcm", np.zeros((2, 2), np.uint16)).rename(tmp_path / "IMG0001")
    text = tmp_path / "NOTES"
    text.write_text("x" * 200)
    reader = MammogramReader()
    assert reader.verify_suffix(dicom) and reader.verify_suffix(str(dicom))
    assert not reader.verify_suffix(text)
    assert not reader.verify_suffix(tmp_path / "absent")


def test_reader_get_data_has_no_channel_and_keeps_axes(marked_dicom):
    reader = MammogramReader()
    data, meta = reader.get_data(reader.read(marked_dicom))
    assert data.shape == (64, 48) and data.dtype == np.float32
    assert data[5, 40] == 1.0  # (row, col), not swapped
    assert meta["spatial_shape"].tolist() == [64, 48]
    assert math.isnan(meta["original_channel_dim"])
    np.testing.assert_allclose(meta["affine"], np.diag([0.1, 0.05, 1.0, 1.0]))
    assert meta["filename_or_obj"] == str(marked_dicom)
    for name in META_FIELDS:
        assert name in meta, name
    np.testing.assert_allclose(meta["pixel_spacing_mm"], [0.1, 0.05])
    assert (meta["laterality"], meta["view"], meta["modality"]) == ("L", "MLO", "MG")


def test_reader_stacks_several_files(marked_dicom, write_mg, mg_pixels):
    other = write_mg("other.dcm", mg_pixels)
    reader = MammogramReader()
    data, meta = reader.get_data(reader.read([marked_dicom, other]))
    assert data.shape == (2, 64, 48) and meta["original_channel_dim"] == 0


def test_reader_options_are_forwarded(write_mg, tmp_path):
    import pydicom

    path = write_mg("ct.dcm", np.full((2, 2), 1000, np.uint16), window_center=1000, window_width=201)
    ds = pydicom.dcmread(path)
    ds.Modality = "CT"
    ds.save_as(path)
    with pytest.raises(MammogramReadError, match="not a mammogram"):
        MammogramReader(require_mg=True).read(path)
    with pytest.warns(UserWarning, match="'CT'"):
        data, _ = MammogramReader(apply_voi=False).get_data(MammogramReader(apply_voi=False).read(path))
    np.testing.assert_allclose(data, 1000 / 4095, atol=1e-6)  # window ignored
    Image.fromarray(np.zeros((4, 3), np.uint8)).save(tmp_path / "a.png")
    _, meta = MammogramReader(default_spacing_mm=0.2).get_data(
        MammogramReader(default_spacing_mm=0.2).read(tmp_path / "a.png")
    )
    np.testing.assert_allclose(meta["pixel_spacing_mm"], [0.2, 0.2])
    assert meta["spacing_source"] == "default"
    with pytest.raises(TypeError, match="unexpected"):
        MammogramReader().read(path, colour=True)


def test_loadimaged_with_mammogram_reader(marked_dicom):
    load = Compose([LoadImaged(keys="image", reader=MammogramReader(), ensure_channel_first=True)])
    img = load({"image": str(marked_dicom)})["image"]
    assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, 64, 48)
    assert img[0, 5, 40] == 1.0
    assert (img.meta["laterality"], img.meta["view"]) == ("L", "MLO")
    np.testing.assert_allclose(img.meta["pixel_spacing_mm"], [0.1, 0.05])


def test_load_mammogram_array_transform(marked_dicom):
    img = LoadMammogram()(marked_dicom)
    assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, 64, 48) and img.dtype == torch.float32
    assert img[0, 5, 40] == 1.0 and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert (img.meta["laterality"], img.meta["view"], img.meta["spacing_source"]) == (
        "L",
        "MLO",
        "ImagerPixelSpacing",
    )
    np.testing.assert_allclose(img.meta["pixel_spacing_mm"], [0.1, 0.05])
    np.testing.assert_allclose(img.affine[:2, :2], np.diag([0.1, 0.05]))
    assert img.meta["filename_or_obj"] == str(marked_dicom)


def test_load_mammogram_png_orientation(tmp_path):
    data = np.zeros((64, 48), np.uint16)
    data[5, 40] = 4095
    Image.fromarray(data).save(tmp_path / "a.png")
    img = LoadMammogram(default_spacing_mm=0.05)(tmp_path / "a.png")
    assert tuple(img.shape) == (1, 64, 48) and img[0, 5, 40] == 1.0
    assert img.meta["laterality"] == "none" and img.meta["source_format"] == "png"
    np.testing.assert_allclose(img.meta["pixel_spacing_mm"], [0.05, 0.05])


def test_load_mammogram_errors_are_not_swallowed(tmp_path):
    """LoadMammogram uses its reader only: no MONAI fall-back reader loads a refused file."""
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(rgb)
    with pytest.raises(MammogramReadError, match="mode RGB"):
        LoadMammogram()(rgb)
    # plain LoadImage with the reader falls back to PILReader (documented caveat)
    assert LoadImage(reader=MammogramReader(), image_only=True)(rgb).shape[-1] == 3


def test_load_mammogramd_in_compose(four_views):
    pipeline = Compose([LoadMammogramd(keys="image", meta_keys="image_meta_dict"), EnsureTyped(keys="image")])
    item = pipeline(four_views[1])
    assert tuple(item["image"].shape) == (1, 64, 48) and item["label"] == 1
    assert item["image"].meta["laterality"] == "R" and item["image_meta_dict"]["view"] == "CC"
    assert item["image"].meta["photometric"] == "MONOCHROME1"
    # the MONOCHROME1 right CC reads as the MONOCHROME2 left CC of the same stored values
    left = pipeline(four_views[0])["image"]
    torch.testing.assert_close(item["image"].as_tensor(), left.as_tensor(), atol=1e-6, rtol=0)


def test_load_mammogramd_keys_handling(four_views):
    assert "other" not in LoadMammogramd(keys=["image", "other"], allow_missing_keys=True)(four_views[0])
    with pytest.raises(KeyError):
        LoadMammogramd(keys=["image", "other"])(four_views[0])
    with pytest.raises(ValueError, match="same length"):
        LoadMammogramd(keys="image", meta_keys=["a", "b"])


@pytest.mark.parametrize(
    "make_transform",
    [
        lambda: LoadMammogramd(keys="image"),
        lambda: LoadImaged(
            keys="image", reader=MammogramReader(), ensure_channel_first=True, image_only=True
        ),
    ],
    ids=["LoadMammogramd", "LoadImaged+MammogramReader"],
)
def test_dataset_and_dataloader_with_workers(four_views, make_transform):
    dataset = Dataset(four_views, transform=Compose([make_transform()]))
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        image = batch["image"]
        assert isinstance(image, MetaTensor) and tuple(image.shape) == (2, 1, 64, 48)
        assert image.dtype == torch.float32
        assert tuple(image.meta["pixel_spacing_mm"].shape) == (2, 2)
        assert tuple(image.affine.shape) == (2, 4, 4)
    assert [v for b in batches for v in b["image"].meta["laterality"]] == ["L", "R", "L", "R"]
    assert [v for b in batches for v in b["image"].meta["view"]] == ["CC", "CC", "MLO", "MLO"]
