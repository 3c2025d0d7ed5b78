"""Where a training step's time goes, on the bundle's quick profile.

Run: ``.venv/bin/python -m benchmarks.training [--images 16] [--steps 20]``

Synthetic images at the quick profile (scale 0.25, 0.28 mm) go through the training config's
own transforms: the deterministic part that ``CacheDataset`` keeps (DICOM decode, laterality,
spacing, breast crop, pyramid) is timed per image; the random part (``RandLesionTileSamplerd``
and the augmentations) per tile; then ``--steps`` optimizer steps of 16 tiles (forward, loss,
backward, step) and the weight-average update are timed, in one process with torch on every
core. Writes ``benchmarks/results/training.json``. Synthetic data only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import describe_machine
from monai_smalldet.files import write_json_atomic


def _median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training.json")
    args = parser.parse_args()

    from monai.bundle import ConfigParser

    from monai_smalldet.data.synthetic import generate_dataset, load_datalist
    from monai_smalldet.engines import detection_collate

    config = ConfigParser()
    config.read_config("bundle/configs/train.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(
            tmp, n_train=args.images, n_val=0, n_test=0, seed=77, scale=0.25, progress=False, workers=2
        )
        items = load_datalist(Path(tmp) / "datalist.json", "training")
        config["dataset_dir"] = tmp
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
        network = config.get_parsed_content("network", instantiate=True)
        loss_fn = config.get_parsed_content("loss", instantiate=True)
        optimizer = config.get_parsed_content("optimizer", instantiate=True)
        ema = config.get_parsed_content("ema", instantiate=True)
        batch = int(config["batch_images"]) * tiles_per_image
        network.train()
        step_s, ema_s = [], []
        torch.set_flush_denormal(True)
        for k in range(args.steps + 2):
            chunk = [tiles[(k * batch + j) % len(tiles)] for j in range(batch)]
            data = detection_collate(chunk)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = loss_fn(network(data["image"]), data["targets"])
            loss.backward()
            optimizer.step()
            t1 = time.perf_counter()
            ema.update(network)
            t2 = time.perf_counter()
            if k >= 2:  # the first steps allocate
                step_s.append(t1 - t0)
                ema_s.append(t2 - t1)
    step = statistics.median(step_s) + statistics.median(ema_s) + batch * statistics.median(per_tile)
    report = {
        "benchmark": "training step breakdown, quick profile (train.yaml)",
        "data": "synthetic (scale 0.25, 0.28 mm, 256 px tiles, yolov5n, 16 tiles per step)",
        "machine": describe_machine(),
        "torch_threads": torch.get_num_threads(),
        "per_image_preprocessing_ms (cached by CacheDataset)": _median_ms(per_image),
        "per_tile_sampling_and_augmentation_ms": _median_ms(per_tile),
        "forward_loss_backward_step_ms": _median_ms(step_s),
        "ema_update_ms": _median_ms(ema_s),
        "step_s_if_serial": round(step, 3),
        "tiles_per_s_if_serial": round(batch / step, 1),
        "note": "one process; in training the DataLoader workers sample while the main process steps, on the same cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
