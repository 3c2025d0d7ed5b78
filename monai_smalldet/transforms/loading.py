"""Loading transforms: file path -> channel-first ``(1, H, W)`` MetaTensor of a mammogram."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import MetaTensor, get_track_meta
from monai.data.utils import is_no_channel
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, MetaKeys, ensure_tuple, ensure_tuple_rep
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..data.dicom import DEFAULT_SPACING_MM
from ..data.reader import MammogramReader
from ..spacing import SpacingError, read_spacing_mm

__all__ = ["LoadMammogram", "LoadMammogramd"]


class LoadMammogram(Transform):
    """Load a mammogram file as a ``float32`` ``(1, H, W)`` :class:`~monai.data.MetaTensor`.

    The result is that of ``monai.transforms.LoadImage(reader=MammogramReader(...),
    image_only=True, ensure_channel_first=True, dtype=dtype)`` called with that reader -- same
    pixels, same ``meta`` keys and values, same ``spatial_ndim`` -- but it is built directly:
    the reader's ``float32`` array is wrapped without a copy (``torch.from_numpy`` plus a
    leading channel view) and none of MONAI's default readers is constructed.
    :class:`~monai_smalldet.data.reader.MammogramReader` is the *only* reader (no MONAI
    reader is tried as a fall-back, so a refused file raises
    :class:`~monai_smalldet.data.dicom.MammogramReadError` instead of being read by a reader
    without the mammography checks). Values are in ``[0, 1]`` with bright = dense tissue;
    axis 1 is rows, axis 2 columns. The metadata is in ``img.meta``: ``pixel_spacing_mm``
    (``[row, col]`` mm), ``laterality``, ``view``, ``photometric``, ``spacing_source``, the
    DICOM UIDs, ``affine`` (``float64`` tensor), ``original_affine``, ``spatial_shape``,
    ``original_channel_dim`` (``nan``), ``filename_or_obj`` (the path as a string, ``~``
    expanded), ... (``"none"`` where unknown); like ``LoadImage`` with this reader, there is
    no ``space`` key. With MONAI's meta tracking off (``set_track_meta(False)``) a plain
    :class:`torch.Tensor` is returned, as ``LoadImage`` does.

    Args:
        require_mg: refuse DICOM files whose Modality is not ``MG`` (else warn).
        apply_voi: apply the DICOM VOI LUT / window.
        default_spacing_mm: spacing assumed when a file records none.
        dtype: data type of the loaded image (``None`` keeps the reader's ``float32``).

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
        self.dtype = dtype

    def __call__(self, filename: Sequence[PathLike] | PathLike) -> MetaTensor:
        """Load ``filename`` (one file, or several stacked as channels).

        Raises:
            MammogramReadError: for a file that is not a readable single 2-D mammogram.
        """
        # the steps of LoadImage.__call__ for one given reader, minus the reader search, the
        # default readers and the checks that cannot apply here (mammogram_meta_dict returns a
        # dict of native-endian arrays and plain values: LoadImage's switch_endianness is a no-op)
        names = tuple(f"{Path(name).expanduser()}" for name in ensure_tuple(filename))
        array, meta = self.reader.get_data(self.reader.read(names))
        # no copy for the reader's C-contiguous float32 array and dtype float32 / None
        array = convert_to_dst_type(array, dst=array, dtype=self.dtype)[0]
        meta[ImageMetaKey.FILENAME_OR_OBJ] = names[0]
        channel_dim = meta[MetaKeys.ORIGINAL_CHANNEL_DIM]
        # LoadImage fixes spatial_ndim while the array has no channel dim yet: 2 for a 2-D image
        # (nan channel dim) and for an (N, H, W) stack (channel dim 0); EnsureChannelFirst keeps it
        spatial_ndim = array.ndim if is_no_channel(channel_dim) else array.ndim - 1
        data = convert_to_tensor(array, track_meta=False)  # torch.from_numpy: shares memory
        data = data[None] if is_no_channel(channel_dim) else torch.movedim(data, int(channel_dim), 0)
        if not get_track_meta():
            return data
        img = MetaTensor(data, meta=meta, spatial_ndim=spatial_ndim)  # affine -> float64 tensor
        if MetaKeys.SPACE not in meta:
            # MetaTensor() adds a default "space"; LoadImage replaces the meta after construction,
            # so its output has none: drop it to stay identical
            img.meta.pop(MetaKeys.SPACE, None)
        return img


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
        spacing_key: the item key of a spacing the datalist gives (``[row, col]`` mm or one
            number, as :mod:`monai_smalldet.data.datalists` writes it), used **only** for a file
            that records none (``spacing_source == "default"``): it replaces the default in
            ``meta["pixel_spacing_mm"]`` and the affine, and ``meta["spacing_source"]`` becomes
            the item's ``spacing_source`` (``"datalist"`` when it has none). A spacing in the
            file's header always wins. ``None``: the item's spacing is ignored.

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
        spacing_key: str | None = "pixel_spacing_mm",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
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
            if isinstance(img, MetaTensor):
                self._datalist_spacing(img, d)
            d[key] = img
            if meta_key is not None:
                d[meta_key] = dict(img.meta)
        return d

    def _datalist_spacing(self, img: MetaTensor, d: Mapping[Hashable, Any]) -> None:
        given = d.get(self.spacing_key) if self.spacing_key is not None else None
        if given is None or img.meta.get("spacing_source") != "default":
            return
        source = d.get("spacing_source")
        if source in (None, "missing"):  # a datalist that writes "missing" writes no spacing either
            source = "datalist"
        try:
            row_mm, col_mm = read_spacing_mm(given)
        except SpacingError as err:
            raise SpacingError(
                f"{img.meta.get('filename_or_obj')}: the item's {self.spacing_key!r}: {err}"
            ) from None
        img.meta["pixel_spacing_mm"] = np.array([row_mm, col_mm], dtype=np.float64)
        img.meta["spacing_source"] = str(source)
        affine = torch.diag(torch.tensor([row_mm, col_mm, 1.0, 1.0], dtype=torch.float64))
        img.affine = affine
        img.meta[MetaKeys.ORIGINAL_AFFINE] = affine.numpy().copy()
