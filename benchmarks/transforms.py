"""Speed and memory of the geometric preprocessing on a full-size synthetic mammogram.

Run: ``.venv/bin/python -m benchmarks.transforms [--repeats 7]``. Data are synthetic: one
3328 x 4096 (columns x rows) 12-bit right CC image from
:func:`monai_smalldet.data.synthetic.generate_mammogram`, written as DICOM MG.

Measured (median of ``--repeats`` runs, CPU only):

* ``read``: the plain pixel read, ``pydicom.dcmread(path).pixel_array`` -- the reference;
* ``floor_read_plus_float32``: ``pydicom.dcmread(path).pixel_array.astype(np.float32)``, the
  least any loader that hands float32 pixels on can cost (one extra pass over 13.6 Mpx);
* ``read_mammogram``: :func:`~monai_smalldet.data.dicom.read_mammogram` alone (pixel read +
  Modality/VOI LUT + float32 [0, 1]);
* ``load``: the project loader ``LoadMammogram`` (``read_mammogram`` + MetaTensor metadata,
  the reader's array wrapped without a copy), and ``load_monai_loadimage``: the same file through
  ``monai.transforms.LoadImage(reader=MammogramReader(), ensure_channel_first=True)``, which
  gives the same output (and was ``LoadMammogram``'s implementation before);
* ``laterality``, ``crop``, ``pyramid``, ``tiling``: :class:`NormalizeLaterality`,
  :class:`CropBreast`, :class:`ScalePyramid` ``(1, 0.5, 0.25)``, :class:`SystematicTile`
  (1024 px, overlap 0.1) on every level, each on the previous stage's output;
* ``transforms_crop_before_laterality``: the same transforms with the crop first (the flip then
  mirrors only the cropped pixels; the frame records make both orders equivalent);
* ``chain``: load + laterality + crop + pyramid + tiling end to end, reported as a ratio to
  ``read`` (``chain_over_read``; goal: at most 1.5x) and to the float32 floor
  (``chain_over_floor``), and the transforms alone as a ratio to ``read``;
* ``chain_crop_first``: the chain with the crop before the flip. Not the reference: the crop
  box found on the unflipped image can differ by a few columns (1616 instead of 1624 here);
* peak memory: resident-set high-water mark of a fresh process running the chain once,
  minus its level after the imports;
* the 0.5X downsampling options (block mean, bilinear + antialias, MONAI
  ``Resize(anti_aliasing=True)``);
* an overlap study (geometry only): tiles per image and the share of lesions lying whole in at
  least one tile of each level, for several overlaps, on 40 synthetic images (crop and
  lesion boxes from 0.25-scale images, scaled to full resolution).

Prints a table and writes ``benchmarks/results/transforms.json`` with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe_machine
from monai_smalldet.files import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "transforms.json"
TILE_PX, OVERLAP = 1024, 0.1


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 2), round(min(times) * 1e3, 2)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def measure(path: Path, repeats: int) -> dict[str, Any]:
    """Time every stage on ``path`` (run in a fresh process so that peak memory is its own)."""
    import warnings

    import pydicom
    import torch
    from monai.data import MetaTensor
    from monai.transforms import LoadImage

    from monai_smalldet.data.dicom import read_mammogram
    from monai_smalldet.data.reader import MammogramReader
    from monai_smalldet.transforms.crop import CropBreast
    from monai_smalldet.transforms.laterality import NormalizeLaterality
    from monai_smalldet.transforms.loading import LoadMammogram
    from monai_smalldet.transforms.pyramid import ScalePyramid
    from monai_smalldet.transforms.tiling import SystematicTile

    load = LoadMammogram()
    laterality, crop, pyramid = NormalizeLaterality(), CropBreast(), ScalePyramid((1.0, 0.5, 0.25))
    tiler = SystematicTile(TILE_PX, OVERLAP)

    def chain() -> list:
        img = load(path)
        img, _, frame = laterality(img)
        img, _, frame = crop(img, frame=frame)
        tiles = []
        for level in pyramid(img, frame=frame):
            tiles += tiler(level.image, frame=level.frame, scale=level.scale, level=level.level)
        return tiles

    def transforms_only(img: Any) -> list:
        img, _, frame = laterality(img)
        img, _, frame = crop(img, frame=frame)
        tiles = []
        for level in pyramid(img, frame=frame):
            tiles += tiler(level.image, frame=level.frame, scale=level.scale, level=level.level)
        return tiles

    # memory high-water marks, in this order: plain float load, + transforms, + project loader
    rss_imports = _rss_mb()
    ds = pydicom.dcmread(path)
    plain = MetaTensor(torch.from_numpy(ds.pixel_array.astype(np.float32) / np.float32(4095))[None])
    plain.meta.update({"laterality": "R", "pixel_spacing_mm": (0.07, 0.07)})
    del ds
    rss_plain = _rss_mb()
    tiles = transforms_only(plain)
    rss_transforms = _rss_mb()
    del tiles, plain
    tiles = chain()
    rss_chain = _rss_mb()

    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    out["read_ms"], out["read_ms_min"] = _median_ms(lambda: pydicom.dcmread(path).pixel_array, repeats)

    def plain_float() -> np.ndarray:
        return pydicom.dcmread(path).pixel_array.astype(np.float32) * np.float32(1 / 4095)

    out["read_to_float32_ms"], _ = _median_ms(plain_float, repeats)
    out["floor_read_plus_float32_ms"], _ = _median_ms(
        lambda: pydicom.dcmread(path).pixel_array.astype(np.float32), repeats
    )
    out["read_mammogram_ms"], _ = _median_ms(lambda: read_mammogram(path), repeats)
    out["load_ms"], _ = _median_ms(lambda: load(path), repeats)
    reader = MammogramReader()
    with warnings.catch_warnings():  # LoadImage builds MONAI's default readers; one may warn
        warnings.simplefilter("ignore")
        monai_load = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
    out["load_monai_loadimage_ms"], _ = _median_ms(lambda: monai_load(path, reader=reader), repeats)
    img = load(path)
    out["image_shape"] = list(img.shape)
    out["laterality_ms"], _ = _median_ms(lambda: laterality(img), repeats)
    flipped, _, frame = laterality(img)
    out["laterality_estimated_ms"], _ = _median_ms(lambda: laterality(img.as_tensor()), repeats)
    out["crop_ms"], _ = _median_ms(lambda: crop(flipped, frame=frame), repeats)
    cropped, _, frame = crop(flipped, frame=frame)
    out["crop_shape"] = list(cropped.shape)
    out["pyramid_ms"], _ = _median_ms(lambda: pyramid(cropped, frame=frame), repeats)
    levels = pyramid(cropped, frame=frame)
    out["level_shapes"] = [list(lv.image.shape) for lv in levels]

    def tile_all() -> list:
        return [t for lv in levels for t in tiler(lv.image, frame=lv.frame, scale=lv.scale, level=lv.level)]

    out["tiling_ms"], _ = _median_ms(tile_all, repeats)
    out["tiles_per_level"] = [len(tiler(lv.image)) for lv in levels]
    out["n_tiles"] = len(tiles)
    out["chain_ms"], out["chain_ms_min"] = _median_ms(chain, repeats)

    def _crop_first_chain(image: Any) -> list:  # flips only the cropped pixels
        img2, _, frame2 = crop(image)
        img2, _, frame2 = laterality(img2, frame=frame2)
        return [t for lv in pyramid(img2, frame=frame2) for t in tiler(lv.image, frame=lv.frame)]

    def crop_first() -> list:
        return _crop_first_chain(img)

    out["transforms_crop_before_laterality_ms"], _ = _median_ms(crop_first, repeats)
    out["chain_crop_first_ms"], _ = _median_ms(lambda: _crop_first_chain(load(path)), repeats)
    transforms_ms = out["laterality_ms"] + out["crop_ms"] + out["pyramid_ms"] + out["tiling_ms"]
    out["transforms_ms"] = round(transforms_ms, 2)
    out["ratio_chain_to_read"] = round(out["chain_ms"] / out["read_ms"], 2)
    out["chain_over_read"] = out["ratio_chain_to_read"]
    out["chain_over_floor"] = round(out["chain_ms"] / out["floor_read_plus_float32_ms"], 2)
    out["floor_over_read"] = round(out["floor_read_plus_float32_ms"] / out["read_ms"], 2)
    out["load_over_read"] = round(out["load_ms"] / out["read_ms"], 2)
    out["ratio_transforms_to_read"] = round(transforms_ms / out["read_ms"], 2)
    out["ratio_read_to_float_plus_transforms_to_read"] = round(
        (out["read_to_float32_ms"] + transforms_ms) / out["read_ms"], 2
    )
    out["peak_rss_mb"] = round(rss_chain, 1)
    out["rss_after_imports_mb"] = round(rss_imports, 1)
    out["peak_rss_increase_plain_float_load_mb"] = round(rss_plain - rss_imports, 1)
    out["peak_rss_increase_transforms_mb"] = round(rss_transforms - rss_plain, 1)
    out["peak_rss_increase_project_loader_chain_mb"] = round(rss_chain - rss_transforms, 1)
    out["image_float32_mb"] = round(img.numel() * 4 / 2**20, 1)
    out["downsample_0p5_ms"] = _downsampling_options(cropped, repeats)
    return out


def _downsampling_options(img: Any, repeats: int) -> dict[str, float]:
    """0.5X of the cropped image: the pyramid's block mean vs. the alternatives."""
    import torch.nn.functional as F
    from monai.transforms import Resize

    from monai_smalldet.transforms.geometry import resample_image

    t = img.as_tensor()
    size = (t.shape[1] // 2, t.shape[2] // 2)
    return {
        "block_mean_area": _median_ms(lambda: resample_image(t, 0.5, 0.5), repeats)[0],
        "torch_area_interpolate": _median_ms(
            lambda: F.interpolate(t[None], size=size, mode="area"), max(2, repeats // 2)
        )[0],
        "bilinear_antialias": _median_ms(
            lambda: F.interpolate(t[None], size=size, mode="bilinear", antialias=True), repeats
        )[0],
        "monai_resize_anti_aliasing": _median_ms(lambda: Resize(size, anti_aliasing=True)(t), 1)[0],
    }


def overlap_study(
    n_images: int = 40, overlaps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
) -> dict[str, Any]:
    """Tiles per image and whole-lesion coverage per level for several overlaps (geometry only)."""
    from monai_smalldet.data.synthetic import SynthConfig, generate_mammogram
    from monai_smalldet.transforms.crop import CropBreast
    from monai_smalldet.transforms.frames import to_spatial_order
    from monai_smalldet.transforms.tiling import TileGrid

    factor = 4.0  # 0.25-scale images, geometry scaled to full resolution (0.07 mm)
    config = SynthConfig(p_normal=0.0, max_lesions=3)
    cases = []
    for seed in range(n_images):
        view = ("CC", "MLO")[seed % 2]
        m = generate_mammogram(1000 + seed, scale=0.25, view=view, laterality="L", config=config)
        x1, y1, x2, y2 = CropBreast().compute_crop_box(m.to_float()[None], to_spatial_order(m.boxes))
        crop_hw = (round((y2 - y1) * factor), round((x2 - x1) * factor))
        boxes = (m.boxes - np.array([x1, y1, x1, y1], dtype=np.float32)) * factor
        cases.append((crop_hw, boxes.astype(np.float64), np.asarray(m.lesion_size_mm)))
    n_lesions = sum(len(b) for _, b, _ in cases)
    rows = []
    for overlap in overlaps:
        grid = TileGrid(TILE_PX, overlap)
        n_tiles, whole = 0, {s: 0 for s in (1.0, 0.5, 0.25)}
        whole_small = {s: 0 for s in whole}
        n_small = 0
        for (h, w), boxes, sizes in cases:
            for s in whole:
                level_hw = (int(h * s), int(w * s))
                tiles = np.asarray(grid(level_hw), dtype=np.float64)
                n_tiles += len(tiles)
                b = boxes * s
                inside = (
                    (b[:, None, 0] >= tiles[None, :, 0])
                    & (b[:, None, 1] >= tiles[None, :, 1])
                    & (b[:, None, 2] <= tiles[None, :, 2])
                    & (b[:, None, 3] <= tiles[None, :, 3])
                ).any(axis=1)
                whole[s] += int(inside.sum())
                whole_small[s] += int(inside[sizes < 10].sum())
            n_small += int((sizes < 10).sum())
        rows.append(
            {
                "overlap": overlap,
                "tiles_per_image": round(n_tiles / len(cases), 2),
                "lesions_whole_in_a_tile": {f"{s}X": round(whole[s] / n_lesions, 3) for s in whole},
                "lesions_under_10mm_whole_in_a_tile": {
                    f"{s}X": round(whole_small[s] / max(n_small, 1), 3) for s in whole
                },
            }
        )
    return {
        "images": len(cases),
        "lesions": n_lesions,
        "lesions_under_10mm": n_small,
        "tile_px": TILE_PX,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child process: time this file
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.repeats)))
        return

    from monai_smalldet.data.dicom_writer import write_mammogram_dicom
    from monai_smalldet.data.synthetic import generate_mammogram

    with tempfile.TemporaryDirectory() as tmp:
        m = generate_mammogram(5, scale=1.0, view="CC", laterality="R")
        path = write_mammogram_dicom(
            Path(tmp) / "rcc.dcm", m.image, pixel_spacing_mm=m.pixel_spacing_mm, laterality="R", view="CC"
        )
        del m
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.transforms",
                "--measure",
                str(path),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    timings = json.loads(child.stdout.strip().splitlines()[-1])
    study = overlap_study()
    payload = {
        "benchmark": "geometric preprocessing: load + laterality + crop + pyramid + tiling",
        "data": "synthetic (monai_smalldet.data.synthetic, seed 5, R CC, 3328 x 4096, 12-bit, DICOM MG)",
        "machine": describe_machine(),
        "settings": {
            "scales": [1.0, 0.5, 0.25],
            "tile_px": TILE_PX,
            "overlap": OVERLAP,
            "repeats": args.repeats,
        },
        "timings": timings,
        "overlap_study": study,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, payload)

    t = timings
    print("| stage | median ms |")
    print("| --- | --- |")
    for key in (
        "read_ms",
        "floor_read_plus_float32_ms",
        "read_to_float32_ms",
        "read_mammogram_ms",
        "load_ms",
        "load_monai_loadimage_ms",
        "laterality_ms",
        "crop_ms",
        "pyramid_ms",
        "tiling_ms",
        "transforms_ms",
        "transforms_crop_before_laterality_ms",
        "chain_ms",
        "chain_crop_first_ms",
    ):
        print(f"| {key[:-3]} | {t[key]} |")
    print(
        f"\nchain / read = {t['chain_over_read']}x (goal: whole preprocessing <= 1.5x the read); "
        f"chain / floor (read + astype float32) = {t['chain_over_floor']}x; floor / read = "
        f"{t['floor_over_read']}x; load / read = {t['load_over_read']}x; transforms / read = "
        f"{t['ratio_transforms_to_read']}x; tiles: {t['tiles_per_level']}"
    )
    print(
        f"peak RSS {t['peak_rss_mb']} MB; high-water increase: plain float load +{t['peak_rss_increase_plain_float_load_mb']} MB, "
        f"transforms +{t['peak_rss_increase_transforms_mb']} MB, project loader chain "
        f"+{t['peak_rss_increase_project_loader_chain_mb']} MB (one float32 image {t['image_float32_mb']} MB)"
    )
    print(f"0.5X downsampling ms: {t['downsample_0p5_ms']}")
    print("\n| overlap | tiles / image | whole in a tile X / 0.5X / 0.25X | < 10 mm X / 0.5X / 0.25X |")
    print("| --- | --- | --- | --- |")
    for r in study["rows"]:
        a, b = r["lesions_whole_in_a_tile"], r["lesions_under_10mm_whole_in_a_tile"]
        print(
            f"| {r['overlap']} | {r['tiles_per_image']} | {a['1.0X']} / {a['0.5X']} / {a['0.25X']} | "
            f"{b['1.0X']} / {b['0.5X']} / {b['0.25X']} |"
        )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
