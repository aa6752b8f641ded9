import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask

from visrl_bench.core.boxes import (
    CONVENTIONS,
    Box,
    BoxConvention,
    convert,
    crop_region,
    format_box,
    from_convention,
    iou,
    parse_box,
    to_convention,
)

SIZES = [(640, 640), (1024, 512), (300, 900)]  # square, wide, tall
RESIZED = {(640, 640): (448, 448), (1024, 512): (1036, 518), (300, 900): (308, 924)}
BOX = Box(30.0, 40.0, 200.0, 250.0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("src", "dst"), list(itertools.product(CONVENTIONS, CONVENTIONS)))
def test_round_trip_between_every_pair(size, src, dst):
    resized = RESIZED[size]
    box = Box(BOX.x1 * size[0] / 640, BOX.y1 * size[1] / 640, BOX.x2 * size[0] / 640, BOX.y2 * size[1] / 640)
    written = to_convention(box, src, size, resized)
    there = convert(written, src, dst, size, resized)
    back = convert(there, dst, src, size, resized)
    assert back == pytest.approx(written, abs=1e-9)
    assert from_convention(there, dst, size, resized).as_list() == pytest.approx(box.as_list(), abs=1e-9)


def test_conventions_by_hand():
    size = (200, 100)  # wide: padded to 200x200 with 50 px above and below
    box = Box(20, 10, 120, 60)
    assert to_convention(box, "norm", size) == pytest.approx((0.1, 0.1, 0.6, 0.6))
    assert to_convention(box, "norm1000", size) == pytest.approx((100, 100, 600, 600))
    assert to_convention(box, "square_norm", size) == pytest.approx((0.1, 0.3, 0.6, 0.55))
    assert to_convention(box, "coco_xywh", size) == pytest.approx((20, 10, 100, 50))
    assert to_convention(box, "resized_pixel", size, (400, 50)) == pytest.approx((40, 5, 240, 30))
    tall = (100, 200)  # padded left and right by 50
    assert to_convention(Box(0, 0, 100, 200), "square_norm", tall) == pytest.approx((0.25, 0, 0.75, 1))


def test_resized_pixel_needs_the_resize_size():
    with pytest.raises(ValueError, match="resized_size"):
        to_convention(BOX, "resized_pixel", (100, 100))
    with pytest.raises(ValueError, match="unknown box convention"):
        to_convention(BOX, "xyxy", (100, 100))


@pytest.mark.parametrize("conv", CONVENTIONS)
def test_format_then_parse(conv):
    size = (1024, 512)
    text = format_box(BOX, conv, size, RESIZED[size], decimals=6)
    if conv == "coco_xywh":  # the text holds x, y, w, h
        assert text.startswith("[30.000000, 40.000000, 170.000000")
    parsed = parse_box(text, conv, size, RESIZED[size])
    assert parsed.ok and parsed.repairs == []
    assert parsed.box.as_list() == pytest.approx(BOX.as_list(), abs=1e-3)


@pytest.mark.parametrize(
    ("text", "expected", "repairs"),
    [
        ("[0.1, 0.2, 0.5, 0.6]", [10, 20, 50, 60], []),
        ("The region is (0.1 0.2 0.5 0.6).", [10, 20, 50, 60], []),
        ("[0.5, 0.6, 0.1, 0.2]", [10, 20, 50, 60], ["swapped_x", "swapped_y"]),
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "label": "cat"}', [10, 20, 50, 60], []),
        ('{"x1": 0.1, "y1": 0.2, "x2": 0.5, "y2": 0.6}', [10, 20, 50, 60], ["keyed_corners"]),
        ("[0.1, 0.2, 0.5, 1.7]", [10, 20, 50, 100], ["clamped"]),
        ("first [0.1,0.2,0.3,0.4] then [0.5,0.5,0.9,0.9]", [10, 20, 30, 40], ["extra_boxes_ignored"]),
        ("0.1, 0.2, 0.5, 0.6", [10, 20, 50, 60], ["no_brackets"]),
        ("[.1, .2, .5, .6]", [10, 20, 50, 60], []),
    ],
)
def test_parse_box_forms(text, expected, repairs):
    parsed = parse_box(text, "norm", (100, 100))
    assert parsed.ok, parsed.reason
    assert parsed.box.as_list() == pytest.approx(expected)
    assert parsed.repairs == repairs


def test_parse_qwen2_vl_point_pairs():
    parsed = parse_box("<|box_start|>(100,200),(500,1000)<|box_end|>", "norm1000", (640, 480))
    assert parsed.ok
    assert parsed.box.as_list() == pytest.approx([64, 96, 320, 480])
    assert "point_pair_format" in parsed.repairs


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no box here", "no box"),
        ("[nan, 0.1, 0.2, 0.3]", "non-finite"),
        ("[0.1, inf, 0.2, 0.3]", "non-finite"),
        ("[1e999, 0.1, 0.2, 0.3]", "non-finite"),
        ("[1.5, 1.5, 2.0, 2.0]", "outside"),
        ("[0.1, 0.2]", "no box"),
        ("", "no box"),
    ],
)
def test_parse_box_rejects_with_reason(text, reason):
    parsed = parse_box(text, "norm", (100, 100))
    assert parsed.box is None and reason in parsed.reason


def test_parse_box_never_raises_on_non_text():
    assert parse_box(None, "norm", (10, 10)).reason.startswith("prediction is NoneType")
    assert parse_box(b"[0,0,1,1]", "norm", (10, 10)).box is None


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=80),
    conv=st.sampled_from(CONVENTIONS),
    w=st.integers(1, 5000),
    h=st.integers(1, 5000),
)
def test_parse_box_never_raises_and_stays_inside(text, conv, w, h):
    parsed = parse_box(text, conv, (w, h), (max(1, w // 2), max(1, h // 2)))
    if parsed.box is not None:
        b = parsed.box
        assert 0 <= b.x1 <= b.x2 <= w and 0 <= b.y1 <= b.y2 <= h


_num = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(10**6), 10**6))


@settings(max_examples=300, deadline=None)
@given(
    nums=st.lists(_num, min_size=4, max_size=4),
    conv=st.sampled_from(CONVENTIONS),
    w=st.integers(1, 4000),
    h=st.integers(1, 4000),
    style=st.sampled_from(["[{}]", "({})", "{}", "bbox: [{}]"]),
    sep=st.sampled_from([", ", " ", ",", " ,  "]),
)
def test_parse_box_numbers_inside_image(nums, conv, w, h, style, sep):
    text = style.format(sep.join(str(n) for n in nums))
    parsed = parse_box(text, conv, (w, h), (w, h))
    if parsed.box is not None:
        b = parsed.box
        assert all(math.isfinite(v) for v in b.as_list())
        assert 0 <= b.x1 <= b.x2 <= w and 0 <= b.y1 <= b.y2 <= h
    else:
        assert parsed.reason


_coord = st.floats(0, 500, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(_coord, _coord, st.floats(0.1, 300), st.floats(0.1, 300)),
    b=st.tuples(_coord, _coord, st.floats(0.1, 300), st.floats(0.1, 300)),
)
def test_iou_matches_pycocotools(a, b):
    expected = cocomask.iou(np.array([a], dtype=float), np.array([b], dtype=float), [0])[0][0]
    assert iou(Box.from_xywh(*a), Box.from_xywh(*b)) == pytest.approx(expected, abs=1e-9)


def test_iou_by_hand():
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 10, 10), Box(10, 10, 20, 20)) == 0.0
    assert iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0.0


def test_crop_region_visual_cot_rule():
    # a small box in a large image grows to a 224 px square around its centre
    region = crop_region(Box(500, 400, 520, 410), (1000, 800))
    assert (region.width, region.height) == (224, 224)
    assert region.center == pytest.approx((510, 405), abs=1)
    # near a corner it is shifted inside, not cut
    region = crop_region(Box(0, 0, 5, 5), (1000, 800))
    assert region.as_list() == [0, 0, 224, 224]
    region = crop_region(Box(995, 795, 1000, 800), (1000, 800))
    assert region.as_list() == [776, 576, 1000, 800]
    # a large box is kept whole
    assert crop_region(Box(10.5, 20.2, 600.7, 700.1), (1000, 800)).as_list() == [10, 20, 601, 701]
    # an image smaller than min_side gives the whole image along that side
    assert crop_region(Box(1, 1, 2, 2), (100, 300)).as_list() == [0, 0, 100, 224]


@settings(max_examples=400, deadline=None)
@given(
    x1=st.floats(-1e4, 1e4),
    y1=st.floats(-1e4, 1e4),
    x2=st.floats(-1e4, 1e4),
    y2=st.floats(-1e4, 1e4),
    w=st.integers(1, 3000),
    h=st.integers(1, 3000),
    min_side=st.integers(0, 512),
)
def test_crop_region_never_empty_and_inside(x1, y1, x2, y2, w, h, min_side):
    r = crop_region(Box(x1, y1, x2, y2), (w, h), min_side=min_side)
    assert 0 <= r.x1 < r.x2 <= w and 0 <= r.y1 < r.y2 <= h
    assert r.width >= min(min_side, w) and r.height >= min(min_side, h)
    assert all(float(v).is_integer() for v in r.as_list())
    inside = min(x1, x2) >= 0 and max(x1, x2) <= w and min(y1, y2) >= 0 and max(y1, y2) <= h
    if inside:  # a box inside the image is always fully inside its crop
        assert r.x1 <= min(x1, x2) and max(x1, x2) <= r.x2 and r.y1 <= min(y1, y2) and max(y1, y2) <= r.y2


def test_box_convention_enum_is_the_list():
    assert [c.value for c in BoxConvention] == list(CONVENTIONS)


# Model output is untrusted: these shapes made the old patterns backtrack quadratically or scan for seconds.
_HOSTILE_UNITS = [
    "(1,2)",
    " ",
    "\n",
    "(",
    "[",
    "1",
    "1.",
    ",",
    ", ",
    "(1, ",
    "[1 2 ",
    "x1 ",
    "nan ",
    "-",
    "e",
]


def _time_parse(text: str) -> float:
    import time

    start = time.perf_counter()
    parse_box(text, "norm1000", (640, 480))
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "text",
    [
        "(1,2)" + " " * 10_000_000 + "x",
        "(1, " * 2_500_000,
        "[1 2 " * 2_000_000,
        "[" + "1" * 10_000_000,
        "(" * 10_000_000,
        "a b c " * 1_700_000,
    ],
    ids=["point-then-spaces", "open-points", "open-brackets", "one-long-number", "parens", "prose"],
)
def test_parse_box_is_fast_on_10_mb_predictions(text):
    # a generous bound (measured: < 0.1 s each); before the fix the first shape never finished
    assert _time_parse(text) < 1.0


@settings(max_examples=60, deadline=None)
@given(
    units=st.lists(st.sampled_from(_HOSTILE_UNITS), min_size=1, max_size=6), repeat=st.integers(1, 200_000)
)
def test_parse_box_time_is_bounded_on_adversarial_repetitions(units, repeat):
    text = "".join(units) * repeat
    assert _time_parse(text) < 1.0


def test_parse_box_reads_a_bounded_head_and_says_so():
    from visrl_bench.core.boxes import SCAN_CHARS

    parsed = parse_box("[10, 20, 30, 40]" + "z" * SCAN_CHARS, "pixel", (100, 100))
    assert parsed.box == Box(10, 20, 30, 40)
    assert f"text_beyond_{SCAN_CHARS}_chars_not_read" in parsed.repairs
    late = parse_box("z" * SCAN_CHARS + "[10, 20, 30, 40]", "pixel", (100, 100))
    assert late.box is None and f"first {SCAN_CHARS} characters" in late.reason
    # whitespace is collapsed before the bound: a long blank stretch does not hide a box behind it
    assert parse_box(" \n" * 200_000 + "(10,20),(30,40)", "pixel", (100, 100)).box == Box(10, 20, 30, 40)
