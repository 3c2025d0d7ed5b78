"""Loading transforms: file path -> channel-first ``(1, H, W)`` MetaTensor of a mammogram."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import ensure_tuple, ensure_tuple_rep

from ..data.dicom import DEFAULT_SPACING_MM
from ..data.reader import MammogramReader

__all__ = ["LoadMammogram", "LoadMammogramd"]


@contextmanager
def _quiet_default_reader_setup() -> Iterator[None]:
    """Silence the notices MONAI's default DICOM readers emit while ``LoadImage`` builds them.

    ``LoadImage`` always constructs MONAI's default readers; without nvImageCodec the
    ``NvImgCodecPydicomReader`` logs and warns that it falls back to pydicom. Those readers
    are never used by :class:`LoadMammogram`, so the notices are noise here.
    """
    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
            yield
    finally:
        logger.disabled = was_disabled


class LoadMammogram(Transform):
    """Load a mammogram file as a ``float32`` ``(1, H, W)`` :class:`~monai.data.MetaTensor`.

    A thin wrapper of :class:`monai.transforms.LoadImage` with
    :class:`~monai_smalldet.data.reader.MammogramReader` as its *only* reader (MONAI's default
    readers are not tried as fall-backs, so a refused file raises
    :class:`~monai_smalldet.data.dicom.MammogramReadError` instead of being read by a reader
    without the mammography checks), ``image_only=True`` and ``ensure_channel_first=True``.
    Values are in ``[0, 1]`` with bright = dense tissue; axis 1 is rows, axis 2 columns. The
    metadata is in ``img.meta``: ``pixel_spacing_mm`` (``[row, col]`` mm), ``laterality``,
    ``view``, ``photometric``, ``spacing_source``, the DICOM UIDs, ``affine``,
    ``filename_or_obj``, ... (``"none"`` where unknown).

    Args:
        require_mg: refuse DICOM files whose Modality is not ``MG`` (else warn).
        apply_voi: apply the DICOM VOI LUT / window.
        default_spacing_mm: spacing assumed when a file records none.
        dtype: data type of the loaded image.

    Example:
        >>> from monai.transforms import Compose, ScaleIntensityRange
        >>> pipeline = Compose([LoadMammogram(require_mg=True)])
        >>> img = pipeline("/data/lcc.dcm")  # doctest: +SKIP
        >>> img.shape, img.meta["view"], img.meta["pixel_spacing_mm"]  # doctest: +SKIP
        (torch.Size([1, 4096, 3328]), 'CC', array([0.07, 0.07]))
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        require_mg: bool = False,
        apply_voi: bool = True,
        default_spacing_mm: float = DEFAULT_SPACING_MM,
        dtype: DtypeLike | None = np.float32,
    ) -> None:
        self.reader = MammogramReader(
            require_mg=require_mg, apply_voi=apply_voi, default_spacing_mm=default_spacing_mm
        )
        with _quiet_default_reader_setup():
            self._loader = LoadImage(
                reader=self.reader, image_only=True, ensure_channel_first=True, dtype=dtype
            )

    def __call__(self, filename: Sequence[PathLike] | PathLike) -> MetaTensor:
        """Load ``filename`` (one file, or several stacked as channels).

        Raises:
            MammogramReadError: for a file that is not a readable single 2-D mammogram.
        """
        return self._loader(filename, reader=self.reader)


class LoadMammogramd(MapTransform):
    """Dictionary-based wrapper of :class:`LoadMammogram`.

    Each key's file path is replaced by a ``(1, H, W)`` :class:`~monai.data.MetaTensor` whose
    ``meta`` holds the mammogram metadata.

    Args:
        keys: keys of the items holding file paths.
        allow_missing_keys: don't raise an exception if a key is missing.
        require_mg: refuse DICOM files whose Modality is not ``MG`` (else warn).
        apply_voi: apply the DICOM VOI LUT / window.
        default_spacing_mm: spacing assumed when a file records none.
        meta_keys: optional keys (one per key) under which a copy of each image's metadata
            dict is also stored, for code that expects a separate ``*_meta_dict``; ``None``
            stores none (the metadata is always in ``img.meta``).

    Example:
        >>> from monai.transforms import Compose, EnsureTyped
        >>> pipeline = Compose([LoadMammogramd(keys="image"), EnsureTyped(keys="image")])
        >>> item = pipeline({"image": "/data/lcc.dcm", "label": 1})  # doctest: +SKIP
        >>> item["image"].shape, item["image"].meta["laterality"]  # doctest: +SKIP
        (torch.Size([1, 4096, 3328]), 'L')
    """

    backend = LoadMammogram.backend

    def __init__(
        self,
        keys: KeysCollection,
        allow_missing_keys: bool = False,
        require_mg: bool = False,
        apply_voi: bool = True,
        default_spacing_mm: float = DEFAULT_SPACING_MM,
        meta_keys: KeysCollection | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMammogram(
            require_mg=require_mg, apply_voi=apply_voi, default_spacing_mm=default_spacing_mm
        )
        self.meta_keys = (
            ensure_tuple_rep(None, len(self.keys)) if meta_keys is None else ensure_tuple(meta_keys)
        )
        if len(self.keys) != len(self.meta_keys):
            raise ValueError(
                f"meta_keys should have the same length as keys, got {len(self.keys)} and {len(self.meta_keys)}."
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key in self.key_iterator(d, self.meta_keys):
            img = self.loader(d[key])
            d[key] = img
            if meta_key is not None:
                d[meta_key] = dict(img.meta)
        return d
