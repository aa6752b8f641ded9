"""Drawing for `visrl-bench show`: a sample's image decoded no larger than needed, the gold box, the model's
boxes and the crop regions drawn on its thumbnail (boxes given in original pixels), crop thumbnails, and
the contact sheet."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from visrl_bench.core.boxes import Box
from visrl_bench.core.errors import VisrlError

THUMB = 384  # longest side of an annotated image
CROP_THUMB = 192  # longest side of a crop
JPEG_QUALITY = 85
# distinct under JPEG and for most colour-blind readers: gold green, the model's boxes red, crops blue
GOLD, BOX, CROP = (0, 200, 0), (235, 20, 20), (20, 110, 255)


def open_reduced(sample, size: tuple[int, int] | None, crops: list[Box]):
    """The sample's image, decoded no larger than the report needs: THUMB for the image, CROP_THUMB for its
    smallest crop. Returns (image, scale from original pixels to the image's)."""
    want = None
    if size is not None:
        w, h = size
        scale = THUMB / max(w, h)
        sides = [min(c.width, c.height) for c in crops if c.width > 0 and c.height > 0]
        if sides:  # a crop thumbnail from at least half its own resolution (it is upscaled at most 2x)
            scale = max(scale, min(1.0, CROP_THUMB / 2 / min(sides)))
        want = (max(1, math.ceil(w * min(scale, 1.0))), max(1, math.ceil(h * min(scale, 1.0))))
    image = sample.image.load(reduce_to=want) if sample.image is not None else sample.load_image()
    base = size[0] if size is not None else image.width
    return image, image.width / base


def annotate(image, scale: float, gold: list[Box], boxes: list[Box | None], crops: list[Box | None]):
    """A THUMB-sized copy of `image` with the gold boxes, the model's boxes (numbered by turn when there are
    several) and the crop regions drawn; every box given in original pixels."""
    from PIL import ImageDraw

    fit = min(1.0, THUMB / max(image.size))
    size = (max(1, round(image.width * fit)), max(1, round(image.height * fit)))
    thumb = image.resize(size, reducing_gap=2.0) if fit < 1 else image.copy()  # a new image either way
    s = scale * thumb.width / image.width
    draw = ImageDraw.Draw(thumb)
    width = max(3, round(max(thumb.size) / 128))

    def rect(box: Box, colour, w: int) -> None:
        # the outline lies inside the box: its first pixel row / column is the box's edge, rounded
        x1, y1, x2, y2 = (round(v * s) for v in box.as_list())
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=w)

    for box in crops:
        if box is not None:
            rect(box, CROP, max(2, width - 1))
    for box in gold:
        rect(box, GOLD, width)
    for n, box in enumerate(boxes, start=1):
        if box is not None:
            rect(box, BOX, width)
            if len(boxes) > 1:
                draw.text((box.x1 * s + width + 1, box.y1 * s + width), str(n), fill=BOX)
    return thumb


def crop_thumbnail(image, scale: float, region: Box):
    x1, y1, x2, y2 = (round(v * scale) for v in region.as_list())
    crop = image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
    fit = CROP_THUMB / max(crop.size)
    return crop.resize((max(1, round(crop.width * fit)), max(1, round(crop.height * fit))), reducing_gap=2.0)


def write_contact_sheet(
    cells: list[tuple[Any, str, bool | None]], path: str | Path, columns: int | None = None
):
    """A grid of annotated thumbnails with each sample's id and outcome under it: a paper figure."""
    from PIL import Image, ImageDraw

    if not cells:
        raise VisrlError("no samples for the contact sheet")
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    caption = 18
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, label, ok) in enumerate(cells):
        x, y = (i % columns) * THUMB, (i // columns) * (THUMB + caption)
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        mark = {True: "right", False: "wrong", None: ""}[ok]
        draw.text((x + 4, y + THUMB + 3), f"{label} {mark}", fill=(0, 0, 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)
