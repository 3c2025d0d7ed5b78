"""Training speed of the bundle's own training step, per profile and precision, and where the time goes.

Run: ``.venv/bin/python -m benchmarks.train_speed [--profiles quick full] [--precisions fp32 bf16]``

For each profile (``quick``: ``train.yaml``, 0.28 mm, 256 px tiles, yolov5n; ``full``:
``train.yaml`` + ``full.yaml``, 0.07 mm, 1024 px tiles, yolov5s, the paper's geometry)
synthetic images at the profile's scale go through the training config's own transforms: the
deterministic part that ``CacheDataset`` keeps (DICOM decode, laterality, spacing, breast crop,
pyramid) is timed per image; the random part (``RandLesionTileSamplerd`` and the augmentations)
per tile; then optimizer steps of the profile's tiles per step (forward, loss, backward, step)
and the weight-average update are timed, in one process with torch on every core.

Precisions: ``fp32`` (what the trainer does on CPU) and ``bf16`` (forward and loss under
``torch.autocast("cpu", torch.bfloat16)``; measured only where the CPU has native bf16, and
only as a speed figure: the trainer does not train in bf16 on CPU, and no quality was measured
for it). Writes ``benchmarks/results/train_speed.json``. Synthetic data only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import describe_machine
from monai_smalldet.files import write_json_atomic

#: profile -> (config files merged in order, image scale of the generator, images, timed steps)
PROFILES: dict[str, tuple[tuple[str, ...], float, int, int]] = {
    "quick": (("bundle/configs/train.yaml",), 0.25, 16, 20),
    "full": (("bundle/configs/train.yaml", "bundle/configs/full.yaml"), 1.0, 2, 2),
}


def _median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 2)


def _config(files: tuple[str, ...], dataset_dir: str) -> Any:
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(list(files))
    config["dataset_dir"] = dataset_dir
    return config


def _tiles(config: Any, items: list[dict]) -> tuple[list[dict], list[float], list[float]]:
    """Training tiles of ``items`` through the config's transforms, and the per-image and
    per-tile seconds of the deterministic and the random part."""
    pre = config.get_parsed_content("train#preprocessing_transforms", instantiate=True)
    rand = config.get_parsed_content("train#random_transforms", instantiate=True)
    cached, per_image = [], []
    for item in items:
        t0 = time.perf_counter()
        d = dict(item)
        for t in pre:
            d = t(d)
        per_image.append(time.perf_counter() - t0)
        cached.append(d)
    sampler, augment = rand[0], rand[1:]
    per_tile, tiles = [], []
    tiles_per_image = int(config["tiles_per_image"])
    for d in cached * 4:
        t0 = time.perf_counter()
        out = sampler(d)
        for i, tile in enumerate(out):
            for t in augment:
                tile = t(tile)
            out[i] = tile
        per_tile.append((time.perf_counter() - t0) / tiles_per_image)
        tiles.extend(out)
    return tiles, per_image, per_tile


def _steps(config: Any, tiles: list[dict], steps: int, precision: str) -> tuple[list[float], list[float]]:
    """Seconds of ``steps`` optimizer steps (after two untimed ones) and of the EMA updates."""
    from monai_smalldet.engines import detection_collate

    network = config.get_parsed_content("network", instantiate=True)
    loss_fn = config.get_parsed_content("loss", instantiate=True)
    optimizer = config.get_parsed_content("optimizer", instantiate=True)
    ema = config.get_parsed_content("ema", instantiate=True)
    batch = int(config["batch_images"]) * int(config["tiles_per_image"])
    network.train()
    step_s, ema_s = [], []
    torch.set_flush_denormal(True)
    for k in range(steps + 2):
        chunk = [tiles[(k * batch + j) % len(tiles)] for j in range(batch)]
        data = detection_collate(chunk)
        cast = (
            torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        )
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with cast:
            loss, _ = loss_fn(network(data["image"]), data["targets"])
        loss.float().backward()
        optimizer.step()
        t1 = time.perf_counter()
        ema.update(network)
        t2 = time.perf_counter()
        if k >= 2:  # the first steps allocate
            step_s.append(t1 - t0)
            ema_s.append(t2 - t1)
    return step_s, ema_s


def measure(profile: str, precisions: list[str]) -> list[dict[str, Any]]:
    """One row per precision of ``profile``: the phases of a step and tiles per second."""
    from monai_smalldet.data.synthetic import generate_dataset, load_datalist

    files, scale, n_images, steps = PROFILES[profile]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(tmp, n_train=n_images, n_val=0, n_test=0, seed=77, scale=scale, progress=False)
        items = load_datalist(Path(tmp) / "datalist.json", "training")
        config = _config(files, tmp)
        tiles, per_image, per_tile = _tiles(config, items)
        batch = int(config["batch_images"]) * int(config["tiles_per_image"])
        for precision in precisions:
            step_s, ema_s = _steps(config, tiles, steps, precision)
            step = statistics.median(step_s) + statistics.median(ema_s) + batch * statistics.median(per_tile)
            rows.append(
                {
                    "profile": profile,
                    "config": list(files),
                    "precision": precision,
                    "network": f"yolov5{config['variant']}",
                    "tile_size_px": int(config["tile_size"]),
                    "pixel_spacing_mm": float(config["pixel_spacing_mm"]),
                    "tiles_per_step": batch,
                    "images": n_images,
                    "timed_steps": steps,
                    "per_image_preprocessing_ms (cached by CacheDataset)": _median_ms(per_image),
                    "per_tile_sampling_and_augmentation_ms": _median_ms(per_tile),
                    "forward_loss_backward_step_ms": _median_ms(step_s),
                    "ema_update_ms": _median_ms(ema_s),
                    "step_s_if_serial": round(step, 3),
                    "tiles_per_s_if_serial": round(batch / step, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    from monai_smalldet.networks.backends import cpu_supports_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_speed.json")
    args = parser.parse_args()
    native = cpu_supports_bf16()
    precisions = [p for p in args.precisions if p == "fp32" or native]
    rows = [row for profile in args.profiles for row in measure(profile, precisions)]
    report = {
        "benchmark": "training step of the bundle's configs: phases and tiles per second",
        "data": "synthetic mammograms only (the project's generator); nothing here is a clinical result",
        "command": "python -m benchmarks.train_speed --profiles "
        + " ".join(args.profiles)
        + " --precisions "
        + " ".join(args.precisions),
        "machine": describe_machine(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native,
        "bf16_note": "bf16 rows time autocast on CPU only; the trainer trains in fp32 on CPU"
        if native
        else "no bf16 rows: this CPU has no native bf16",
        "rows": rows,
        "note": "one process; in training the DataLoader workers sample while the main process steps, "
        "on the same cores",
    }
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
