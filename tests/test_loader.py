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


def _reference_load(path, **kwargs):
    """What LoadMammogram replaces: MONAI's LoadImage with MammogramReader as the given reader."""
    reader = MammogramReader(**{k: v for k, v in kwargs.items() if k != "dtype"})
    load = LoadImage(
        reader=reader, image_only=True, ensure_channel_first=True, dtype=kwargs.get("dtype", np.float32)
    )
    return load(path, reader=reader)


def _assert_same_meta_value(key, got, expected):
    assert type(got) is type(expected), (key, type(got), type(expected))
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and torch.equal(got, expected), key
    elif isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), key
    else:
        assert got == expected, key


def _assert_same_as_load_image(got, expected):
    assert type(got) is type(expected) is MetaTensor
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    assert got.is_contiguous() and expected.is_contiguous()
    assert sorted(got.meta) == sorted(expected.meta)
    for key, value in expected.meta.items():
        _assert_same_meta_value(key, got.meta[key], value)
    assert torch.equal(got.affine, expected.affine) and got.affine.dtype == expected.affine.dtype
    assert got.spatial_ndim == expected.spatial_ndim
    assert (got.is_batch, got.applied_operations, got.pending_operations) == (
        expected.is_batch,
        expected.applied_operations,
        expected.pending_operations,
    )


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"apply_voi": False}, {"default_spacing_mm": 0.05}, {"dtype": None}, {"dtype": np.float16}],
    ids=["default", "no_voi", "spacing", "dtype_none", "dtype_float16"],
)
def test_load_mammogram_equals_monai_load_image(marked_dicom, kwargs, as_path):
    path = marked_dicom if as_path else str(marked_dicom)
    got = LoadMammogram(**kwargs)(path)
    _assert_same_as_load_image(got, _reference_load(path, **kwargs))
    assert "space" not in got.meta  # LoadImage with this reader records none either
    assert got.meta["filename_or_obj"] == str(marked_dicom)


def test_load_mammogram_equals_monai_load_image_png_and_stack(tmp_path, marked_dicom, write_mg, mg_pixels):
    data = np.zeros((64, 48), np.uint16)
    data[5, 40] = 4095
    Image.fromarray(data).save(tmp_path / "a.png")
    _assert_same_as_load_image(LoadMammogram()(tmp_path / "a.png"), _reference_load(tmp_path / "a.png"))
    # several files: stacked as channels, original_channel_dim 0
    names = [str(marked_dicom), str(write_mg("other.dcm", mg_pixels))]
    got = LoadMammogram()(names)
    assert tuple(got.shape) == (2, 64, 48) and got.meta["original_channel_dim"] == 0
    _assert_same_as_load_image(got, _reference_load(names))


def test_load_mammogram_expands_user(marked_dicom, monkeypatch):
    monkeypatch.setenv("HOME", str(marked_dicom.parent))
    got = LoadMammogram()(f"~/{marked_dicom.name}")
    assert got.meta["filename_or_obj"] == str(marked_dicom)
    _assert_same_as_load_image(got, _reference_load(f"~/{marked_dicom.name}"))


def test_load_mammogram_wraps_reader_array_without_copy(marked_dicom):
    load = LoadMammogram()
    arrays = []
    get_data = load.reader.get_data

    def spy(img):
        array, meta = get_data(img)
        arrays.append(array)
        return array, meta

    load.reader.get_data = spy
    img = load(marked_dicom)
    assert img.data_ptr() == arrays[0].ctypes.data  # the reader's buffer, viewed as (1, H, W)
    assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, 64, 48)


def test_load_mammogram_without_meta_tracking(marked_dicom):
    from monai.data import set_track_meta

    set_track_meta(False)
    try:
        got, expected = LoadMammogram()(marked_dicom), _reference_load(marked_dicom)
    finally:
        set_track_meta(True)
    assert type(got) is type(expected) is torch.Tensor
    assert got.shape == expected.shape == (1, 64, 48) and torch.equal(got, expected)


def test_load_mammogramd_equals_load_imaged(four_views):
    ref = LoadImaged(keys="image", reader=MammogramReader(), ensure_channel_first=True, image_only=True)
    for item in four_views:
        _assert_same_as_load_image(LoadMammogramd(keys="image")(item)["image"], ref(item)["image"])
