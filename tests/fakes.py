"""Fakes shared by the tests: a "network" whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import torch


class BrightSquareNet(torch.nn.Module):
    """Eval-mode YOLO output (B, 4 + 1, 1): the bright region of each input as cx, cy, w, h."""

    def __init__(self, level: float = 0.75) -> None:
        super().__init__()
        self.level = level
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor):
        self.calls.append(tuple(x.shape))
        out = torch.zeros(x.shape[0], 5, 1)
        for i, img in enumerate(x[:, 0]):
            on = img > self.level
            if not on.any():
                continue
            rows = torch.nonzero(on.any(dim=1)).flatten()
            cols = torch.nonzero(on.any(dim=0)).flatten()
            x1, x2 = float(cols[0]), float(cols[-1]) + 1
            y1, y2 = float(rows[0]), float(rows[-1]) + 1
            out[i, :, 0] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.9])
        return out, {}


def mammogram_with_square(laterality: str, square_xyxy: tuple[int, int, int, int], shape=(1200, 900)):
    """A breast-like half-disc against the chest wall of ``laterality`` and a bright square."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    chest_x = 0 if laterality == "L" else w - 1
    breast = ((xx - chest_x) / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1
    img = np.where(breast, 0.4, 0.02).astype(np.float32)
    x1, y1, x2, y2 = square_xyxy
    img[y1:y2, x1:x2] = 1.0
    return img


def write_right_breast_dicom(
    path, shape_hw: tuple[int, int], lesion_xy, *, view: str = "CC", spacing_mm: float = 0.1
):
    """A right-breast MG DICOM (chest wall at the last column) with one bright rectangular lesion.

    Breast pixels 1500, air 40, lesion 3800 (12-bit stored values); ``lesion_xy`` is
    ``(x1, y1, x2, y2)`` stored-image pixels, x = column. Returns the path.
    """
    from monai_smalldet.data.dicom_writer import write_mammogram_dicom

    h, w = shape_hw
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((xx - w) / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2 < 1
    pixels = np.where(breast, 1500, 40).astype(np.uint16)
    x1, y1, x2, y2 = (int(v) for v in lesion_xy)
    pixels[y1:y2, x1:x2] = 3800
    return write_mammogram_dicom(
        path, pixels, pixel_spacing_mm=spacing_mm, laterality="R", view=view, bits_stored=12
    )
