"""Datasets for the bundle: the synthetic dataset is written on first use."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["ensure_synthetic_dataset"]

log = logging.getLogger(__name__)


def ensure_synthetic_dataset(
    dataset_dir: str | os.PathLike[str],
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    scale: float = 0.25,
    workers: int = 1,
) -> str:
    """Path of ``dataset_dir/datalist.json``; when it does not exist, a synthetic dataset is written.

    An existing ``datalist.json`` (synthetic or real, decathlon style) is used as it is.
    """
    datalist = Path(dataset_dir) / "datalist.json"
    if datalist.is_file():
        return str(datalist)
    from ..data.synthetic import generate_dataset

    log.info(
        "no %s: writing a synthetic dataset (%d/%d/%d images, scale %s)",
        datalist,
        n_train,
        n_val,
        n_test,
        scale,
    )
    return str(
        generate_dataset(
            dataset_dir,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            seed=seed,
            scale=scale,
            workers=workers,
            progress=False,
        )
    )
