"""Pictures for people: a contact sheet of a dataset with its ground-truth boxes.

Boxes are ``(x1, y1, x2, y2)`` pixels with x = column, as everywhere in the project.
Matplotlib (contact sheets) runs on the non-interactive Agg backend; overlays are drawn with
Pillow. Every file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write

__all__ = ["OVERLAY_TITLE_PX", "overlay_png", "preview_sheet", "thumbnail"]


def thumbnail(image: np.ndarray, max_side: int = 512) -> tuple[np.ndarray, float]:
    """Area-downsample a (H, W) image so its longer side is at most ``max_side``.

    Returns:
        the thumbnail and the factor (thumbnail pixels per image pixel).
    """
    import cv2

    if image.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) image, got shape {tuple(image.shape)}.")
    factor = min(1.0, max_side / max(image.shape))
    if factor >= 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    small = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return small, size[0] / image.shape[1]


def preview_sheet(
    items: Sequence[dict[str, Any]],
    out_png: str | os.PathLike[str],
    *,
    columns: int = 4,
    max_side: int = 512,
    title: str | None = None,
) -> Path:
    """Write a PNG contact sheet of datalist ``items`` with malignant (red) and benign (yellow) boxes.

    Args:
        items: datalist entries with an absolute ``image`` path and ``box``; ``benign_box``,
            ``lesion_type``, ``lesion_size_mm``, ``laterality`` and ``view`` are used when present.
        out_png: output path.
        columns: thumbnails per row.
        max_side: thumbnail size in pixels.
        title: figure title.

    Returns:
        ``out_png`` as a :class:`~pathlib.Path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .data.dicom import read_mammogram

    if not items:
        raise ValueError("preview_sheet needs at least one datalist item.")
    rows = math.ceil(len(items) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        image, meta = read_mammogram(item["image"])
        small, f = thumbnail(image, max_side)
        ax.imshow(small, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for key, colour, style in (("box", "red", "-"), ("benign_box", "yellow", "--")):
            for x1, y1, x2, y2 in item.get(key, []):
                pad = 4 / f  # draw just outside the lesion so it stays visible
                ax.add_patch(
                    Rectangle(
                        ((x1 - pad) * f, (y1 - pad) * f),
                        (x2 - x1 + 2 * pad) * f,
                        (y2 - y1 + 2 * pad) * f,
                        fill=False,
                        edgecolor=colour,
                        linestyle=style,
                        linewidth=1.0,
                    )
                )
        found = ", ".join(
            f"{t.split('_')[0]} {s:.0f}mm"
            for t, s in zip(item.get("lesion_type", []), item.get("lesion_size_mm", []), strict=False)
        )
        ax.set_title(f"{meta.laterality or '?'} {meta.view or '?'}: {found or 'normal'}", fontsize=7)
    fig.suptitle(
        title or "Synthetic mammograms (not patient data): red = malignant, yellow = benign", fontsize=9
    )
    fig.tight_layout()
    try:
        return atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=90), suffix=".png")
    finally:
        plt.close(fig)


#: Height in pixels of the title strip above an overlay.
OVERLAY_TITLE_PX = 16
_GREYS = 254  # palette entries for the image; the two after them are red and green
_OVERLAY_PALETTE = [
    *(v for i in range(_GREYS) for v in (round(i * 255 / (_GREYS - 1)),) * 3),
    *(255, 0, 0),
    *(0, 255, 0),
]


def _overlay_font(size: int) -> Any:
    """matplotlib's DejaVuSans (installed with it, nothing downloaded), else Pillow's own."""
    from PIL import ImageFont

    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):  # pragma: no cover - part of every matplotlib wheel
        return ImageFont.load_default()


def overlay_png(
    image: np.ndarray,
    out_png: str | os.PathLike[str],
    boxes: Sequence[Sequence[float]] = (),
    scores: Sequence[float] = (),
    *,
    truth: Sequence[Sequence[float]] = (),
    max_side: int = 1024,
    title: str | None = None,
) -> Path:
    """Write an overlay PNG of a (H, W) image in [0, 1] with findings (red, score) and truth (green).

    Boxes are ``(x1, y1, x2, y2)`` pixels of ``image``, x = column. The image is
    area-downsampled to ``max_side`` (:func:`thumbnail`) and drawn pixel for pixel below a
    :data:`OVERLAY_TITLE_PX` title strip with Pillow (cheaper than a matplotlib figure per
    image, which the deploy app writes for every mammogram). Written atomically.
    """
    from PIL import Image, ImageDraw

    small, f = thumbnail(np.asarray(image, dtype=np.float32), max_side)
    h, w = small.shape
    # a palette image (1 byte per pixel, a third of RGB's bytes to compress): indices 0-253 are
    # greys (an error below half a grey level), 254 red, 255 green
    grey = np.clip(np.nan_to_num(small), 0.0, 1.0) * float(_GREYS - 1)
    canvas = Image.new("P", (w, h + OVERLAY_TITLE_PX), _GREYS - 1)
    canvas.putpalette(_OVERLAY_PALETTE)
    canvas.paste(Image.fromarray((grey + 0.5).astype(np.uint8), mode="L"), (0, OVERLAY_TITLE_PX))
    draw = ImageDraw.Draw(canvas)
    font = _overlay_font(10)
    red, green, black = _GREYS, _GREYS + 1, 0

    def rect(box: Sequence[float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (float(v) * f for v in box)
        return x1, y1 + OVERLAY_TITLE_PX, max(x1, x2 - 1), max(y1, y2 - 1) + OVERLAY_TITLE_PX

    for box in truth:
        draw.rectangle(rect(box), outline=green, width=1)
    for box, s in zip(boxes, scores, strict=False):
        x1, y1, x2, y2 = rect(box)
        draw.rectangle((x1, y1, x2, y2), outline=red, width=1)
        draw.text((x1, max(OVERLAY_TITLE_PX, y1 - 11)), f"{float(s):.2f}", fill=red, font=font)
    if title:
        draw.text((3, 2), title, fill=black, font=font)
    return atomic_write(out_png, lambda tmp: canvas.save(tmp, format="PNG", compress_level=1), suffix=".png")
