"""Boxes: the one place that knows coordinate conventions, box text, IoU and crops.

Every other module (tasks, reasoning modes, metrics, data generation) goes through here. A `Box` is always
stored as (x1, y1, x2, y2) in pixels of the ORIGINAL image; a convention only describes how a box is written
in model text or in a dataset file. Converting at exactly one place is what keeps a model that writes
0-1000 grids (Qwen2-VL) or padded-square coordinates (LLaVA-1.5 / Visual-CoT) from being silently mis-scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from visrl_bench.core.errors import VisrlError

ImageSize = tuple[int, int]  # (width, height), as PIL reports it


class BoxConvention(str, Enum):
    """How four numbers in text or in a file map to a box on the original image."""

    PIXEL = "pixel"  # x1, y1, x2, y2 in original-image pixels
    NORM = "norm"  # x / width, y / height in [0, 1]
    NORM1000 = "norm1000"  # x / width * 1000 on a 0-1000 grid (Qwen2-VL)
    SQUARE_NORM = "square_norm"  # [0, 1] of the image padded to a centred square (LLaVA-1.5, Visual-CoT)
    RESIZED_PIXEL = "resized_pixel"  # pixels of the model's resized input (Qwen2.5-VL)
    COCO_XYWH = "coco_xywh"  # x, y, width, height in original-image pixels (COCO, V*Bench files)


CONVENTIONS: tuple[str, ...] = tuple(c.value for c in BoxConvention)


class UnknownConventionError(VisrlError, ValueError):
    """A box convention named wrong (`--box-format norm999`): one line from the CLI, a ValueError in code."""


def as_convention(convention: str | BoxConvention) -> BoxConvention:
    """Accept a convention by name, with a clear error listing the known ones."""
    if isinstance(convention, BoxConvention):
        return convention
    try:
        return BoxConvention(str(convention).strip().lower())
    except ValueError:
        raise UnknownConventionError(
            f"unknown box convention {convention!r}; known: {', '.join(CONVENTIONS)}"
        ) from None


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in original-image pixels, corners (x1, y1) top-left and (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def as_xywh(self) -> list[float]:
        return [self.x1, self.y1, self.width, self.height]

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        return cls(float(x), float(y), float(x) + float(w), float(y) + float(h))


def gold_box(values: object, layout: str = "xywh") -> Box:
    """A gold box as benchmark data stores it ([x, y, w, h] or [x1, y1, x2, y2]), checked: four finite
    numbers and a positive width and height. A NaN or inverted gold box would otherwise reach the prompt
    and the focus IoU as if it were real; the ValueError says what is wrong, the caller adds where."""
    if not (isinstance(values, (list, tuple)) and len(values) == 4):
        raise ValueError(f"gold bbox must be 4 numbers ({layout}), got {values!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"gold bbox must be 4 numbers ({layout}), got {values!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"gold bbox has a non-finite value: {list(values)!r}")
    box = Box.from_xywh(*values) if layout == "xywh" else Box(*(float(v) for v in values))
    if not (box.width > 0 and box.height > 0):
        raise ValueError(
            f"gold bbox has no area (width {box.width:g}, height {box.height:g}): {list(values)!r}"
        )
    return box


def image_dimensions(width: object, height: object) -> ImageSize:
    """An image size as benchmark data states it, checked: two positive whole numbers (boxes are converted
    with it, so a NaN or text width must not reach them)."""
    try:
        w, h = float(width), float(height)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"image size must be two numbers, got {width!r} x {height!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w >= 1 and h >= 1 and w == int(w) and h == int(h)):
        raise ValueError(f"image size must be two positive whole numbers, got {width!r} x {height!r}")
    return int(w), int(h)


def _check_size(image_size: ImageSize) -> tuple[float, float]:
    w, h = image_size
    if not (w > 0 and h > 0):
        raise ValueError(f"image size must be positive, got {image_size!r}")
    return float(w), float(h)


def _square_pad(w: float, h: float) -> tuple[float, float, float]:
    side = max(w, h)
    return side, (side - w) / 2, (side - h) / 2


def _resized_scale(convention: BoxConvention, image_size: ImageSize, resized_size: ImageSize | None):
    if resized_size is None:
        raise ValueError(f"the {convention.value} convention needs resized_size (the model's input size)")
    w, h = _check_size(image_size)
    rw, rh = _check_size(resized_size)
    return rw / w, rh / h


def to_convention(
    box: Box,
    convention: str | BoxConvention,
    image_size: ImageSize,
    resized_size: ImageSize | None = None,
) -> tuple[float, float, float, float]:
    """Write a pixel box as the four numbers of `convention`."""
    conv = as_convention(convention)
    w, h = _check_size(image_size)
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    if conv is BoxConvention.PIXEL:
        return (x1, y1, x2, y2)
    if conv is BoxConvention.COCO_XYWH:
        return (x1, y1, x2 - x1, y2 - y1)
    if conv is BoxConvention.NORM:
        return (x1 / w, y1 / h, x2 / w, y2 / h)
    if conv is BoxConvention.NORM1000:
        return (x1 / w * 1000, y1 / h * 1000, x2 / w * 1000, y2 / h * 1000)
    if conv is BoxConvention.SQUARE_NORM:
        side, px, py = _square_pad(w, h)
        return ((x1 + px) / side, (y1 + py) / side, (x2 + px) / side, (y2 + py) / side)
    sx, sy = _resized_scale(conv, image_size, resized_size)
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def from_convention(
    values: Sequence[float],
    convention: str | BoxConvention,
    image_size: ImageSize,
    resized_size: ImageSize | None = None,
) -> Box:
    """Read four numbers written in `convention` as a pixel box (no clamping, no reordering)."""
    conv = as_convention(convention)
    w, h = _check_size(image_size)
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers, got {len(values)}")
    a, b, c, d = (float(v) for v in values)
    if conv is BoxConvention.PIXEL:
        return Box(a, b, c, d)
    if conv is BoxConvention.COCO_XYWH:
        return Box(a, b, a + c, b + d)
    if conv is BoxConvention.NORM:
        return Box(a * w, b * h, c * w, d * h)
    if conv is BoxConvention.NORM1000:
        return Box(a / 1000 * w, b / 1000 * h, c / 1000 * w, d / 1000 * h)
    if conv is BoxConvention.SQUARE_NORM:
        side, px, py = _square_pad(w, h)
        return Box(a * side - px, b * side - py, c * side - px, d * side - py)
    sx, sy = _resized_scale(conv, image_size, resized_size)
    return Box(a / sx, b / sy, c / sx, d / sy)


def convert(
    values: Sequence[float],
    source: str | BoxConvention,
    target: str | BoxConvention,
    image_size: ImageSize,
    resized_size: ImageSize | None = None,
) -> tuple[float, float, float, float]:
    """Rewrite four numbers from one convention into another, through original-image pixels."""
    return to_convention(
        from_convention(values, source, image_size, resized_size), target, image_size, resized_size
    )


_DECIMALS = {
    BoxConvention.NORM: 2,
    BoxConvention.SQUARE_NORM: 2,
    BoxConvention.NORM1000: 0,
    BoxConvention.PIXEL: 0,
    BoxConvention.RESIZED_PIXEL: 0,
    BoxConvention.COCO_XYWH: 0,
}


def format_box(
    box: Box,
    convention: str | BoxConvention,
    image_size: ImageSize,
    resized_size: ImageSize | None = None,
    decimals: int | None = None,
) -> str:
    """Box text as a model in `convention` writes it, e.g. "[0.12, 0.30, 0.55, 0.71]" (Visual-CoT style)."""
    conv = as_convention(convention)
    nums = to_convention(box, conv, image_size, resized_size)
    places = _DECIMALS[conv] if decimals is None else decimals
    if places == 0:
        return "[" + ", ".join(str(round(v)) for v in nums) + "]"
    return "[" + ", ".join(f"{v:.{places}f}" for v in nums) + "]"


# ---------------------------------------------------------------------------------------------------------
# Parsing free model text

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
# The patterns run on text whose whitespace runs are collapsed to one space (see `scan_window`): with at most
# one space between tokens no two parts of a pattern can share a run of spaces, so a failed match cannot
# backtrack quadratically ("(1,2)" followed by 32,000 spaces took 24 s with `\s*[,-]?\s*`).
_SEP = r" ?[,;] ?| "
_FOUR_IN_BRACKETS = re.compile(
    rf"[\[(] ?({_NUM})(?:{_SEP})({_NUM})(?:{_SEP})({_NUM})(?:{_SEP})({_NUM}) ?[\])]", re.IGNORECASE
)
# Qwen2-VL writes "(x1,y1),(x2,y2)" on its 0-1000 grid.
_TWO_POINTS = re.compile(
    rf"\( ?({_NUM}) ?, ?({_NUM}) ?\) ?[,-]? ?(?:to ?)?\( ?({_NUM}) ?, ?({_NUM}) ?\)", re.IGNORECASE
)
_CORNER_KEYS = (
    ("x1", "y1", "x2", "y2"),
    ("xmin", "ymin", "xmax", "ymax"),
    ("left", "top", "right", "bottom"),
)
_BARE_FOUR = re.compile(
    rf"(?<![\w.])({_NUM})(?:{_SEP})({_NUM})(?:{_SEP})({_NUM})(?:{_SEP})({_NUM})(?![\w.])", re.IGNORECASE
)
# Model output is untrusted: a runaway generation can be megabytes. Even linear patterns cost seconds per
# 10 MB, so only a bounded head is read (a real answer's box comes long before), and a longer text says so
# in the repairs instead of being searched silently past the bound.
SCAN_CHARS = 100_000
_RAW_CHARS = 10 * SCAN_CHARS  # whitespace-only stretches longer than this count against the bound too


def scan_window(text: str) -> tuple[str, bool]:
    """The head of `text` the parser reads, whitespace collapsed, and whether anything was cut off."""
    head = " ".join(text[:_RAW_CHARS].split())
    cut = len(text) > _RAW_CHARS or len(head) > SCAN_CHARS
    return head[:SCAN_CHARS], cut


def _keyed_corners(text: str) -> tuple[int, list[str]] | None:
    for keys in _CORNER_KEYS:
        found = []
        for key in keys:
            m = re.search(rf"[\"']?\b{key}\b[\"']? ?[:=] ?({_NUM})", text, re.IGNORECASE)
            if m is None:
                break
            found.append(m)
        else:
            return min(m.start() for m in found), [m.group(1) for m in found]
    return None


@dataclass
class ParsedBox:
    """What `parse_box` found: a box (or None with a reason) and every repair it made on the way."""

    box: Box | None
    repairs: list[str] = field(default_factory=list)
    reason: str | None = None
    raw: tuple[float, float, float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.box is not None


def parse_box(
    text: object,
    convention: str | BoxConvention,
    image_size: ImageSize,
    resized_size: ImageSize | None = None,
) -> ParsedBox:
    """Find the first box in free model text and read it in `convention`.

    Accepts brackets or parentheses, commas or spaces, Qwen2-VL's "(x1,y1),(x2,y2)" and JSON-style
    keys ("bbox_2d": [...], {"x1": ...}). Swapped corners are reordered and the box is clamped to the image;
    each such repair is listed. Never raises: on anything unusable it returns box=None with a reason.
    """
    try:
        return _parse_box(text, convention, image_size, resized_size)
    except Exception as exc:  # a parser that may raise would crash a long eval run
        return ParsedBox(None, reason=f"parser error: {type(exc).__name__}: {exc}")


def holds_box(text: object) -> bool:
    """Whether the text writes four numbers in a box's shape (what `parse_box` would read), before any image
    is involved: multi-turn zoom reads such a reply as a call for one more crop, whether or not the box then
    lies in the image."""
    return isinstance(text, str) and bool(_box_candidates(scan_window(text)[0]))


def _box_candidates(text: str) -> list[tuple[int, list[str], str | None]]:
    """(position, the four numbers' texts, the repair note) of each box form found."""
    candidates: list[tuple[int, list[str], str | None]] = []
    for pattern, note in ((_FOUR_IN_BRACKETS, None), (_TWO_POINTS, "point_pair_format")):
        m = pattern.search(text)
        if m:
            candidates.append((m.start(), list(m.groups()), note))
    keyed = _keyed_corners(text)
    if keyed:
        candidates.append((keyed[0], keyed[1], "keyed_corners"))
    if not candidates:
        m = _BARE_FOUR.search(text)
        if m:
            candidates.append((m.start(), list(m.groups()), "no_brackets"))
    return candidates


def _parse_box(text, convention, image_size, resized_size) -> ParsedBox:
    conv = as_convention(convention)
    w, h = _check_size(image_size)
    if not isinstance(text, str):
        return ParsedBox(None, reason=f"prediction is {type(text).__name__}, not text")
    repairs: list[str] = []
    text, cut = scan_window(text)
    if cut:
        repairs.append(f"text_beyond_{SCAN_CHARS}_chars_not_read")

    candidates = _box_candidates(text)
    if not candidates:
        where = f"in the first {SCAN_CHARS} characters" if cut else "in text"
        return ParsedBox(None, repairs=repairs, reason=f"no box found {where}")
    _, groups, note = min(candidates, key=lambda c: c[0])
    if note:
        repairs.append(note)
    if len(_FOUR_IN_BRACKETS.findall(text)) > 1:
        repairs.append("extra_boxes_ignored")

    try:
        nums = [float(g) for g in groups]
    except ValueError:
        return ParsedBox(None, reason=f"unreadable numbers {groups!r}")
    if not all(math.isfinite(v) for v in nums):
        return ParsedBox(None, reason=f"non-finite coordinate in {groups!r}")
    raw = (nums[0], nums[1], nums[2], nums[3])

    box = from_convention(nums, conv, image_size, resized_size)
    if not all(math.isfinite(v) for v in box.as_list()):
        return ParsedBox(None, reason=f"coordinates overflow in {groups!r}", raw=raw)
    x1, y1, x2, y2 = box.as_list()
    if x2 < x1:
        x1, x2 = x2, x1
        repairs.append("swapped_x")
    if y2 < y1:
        y1, y2 = y2, y1
        repairs.append("swapped_y")
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return ParsedBox(None, repairs, reason="box lies outside the image", raw=raw)
    clamped = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
    if clamped != (x1, y1, x2, y2):
        repairs.append("clamped")
    box = Box(*clamped)
    if box.width == 0 or box.height == 0:
        repairs.append("degenerate")
    return ParsedBox(box, repairs, raw=raw)


# ---------------------------------------------------------------------------------------------------------
# Overlap and crops


def iou(a: Box, b: Box) -> float:
    """Intersection over union with continuous areas (w*h, no +1), as pycocotools computes it."""
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def crop_region(box: Box, image_size: ImageSize, min_side: int = 224) -> Box:
    """The pixel region to crop for a focus box (Visual-CoT's rule).

    Each side is grown to at least `min_side` pixels around the box centre (capped at the image), the region
    is shifted back inside the image rather than cut, and the result has integer corners and is never empty,
    whatever the box (degenerate, outside, swapped).
    """
    w, h = image_size
    if w < 1 or h < 1:
        raise ValueError(f"image size must be at least 1x1, got {image_size!r}")

    def span(lo: float, hi: float, limit: int) -> tuple[int, int]:
        lo, hi = (lo, hi) if lo <= hi else (hi, lo)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, float(limit)
        lo, hi = min(max(lo, 0.0), limit), min(max(hi, 0.0), limit)
        start, end = math.floor(lo), math.ceil(hi)
        if end - start >= max(min_side, 1):
            return start, end
        size = min(limit, max(min_side, 1))
        start = min(max(math.floor((lo + hi) / 2 - size / 2), 0), limit - size)
        return start, start + size

    x1, x2 = span(box.x1, box.x2, int(w))
    y1, y2 = span(box.y1, box.y2, int(h))
    return Box(float(x1), float(y1), float(x2), float(y2))
