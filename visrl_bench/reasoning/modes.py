"""Reasoning modes: how a question becomes model turns (Visual Chain-of-Thought and its controls).

- `direct`: one turn, the image and the task's prompt.
- `zoom`: multi-turn visual CoT: after each crop the model answers or asks for one more box, up to
  `max_turns` crops (an eval option); the last allowed crop is followed by visual CoT's answer turn, so
  `max_turns=1` is `cot`. A reply after a crop that writes a box (four numbers in a box's shape) is a call
  for one more crop, and one whose box does not parse shows the full image, as turn 1 does; any other reply
  is the answer.
- `cot`: turn 1 asks for the box of the region that helps answer; the reply is parsed in the model's box
  convention; the crop of that region becomes the second image of turn 2, which asks the task's prompt with
  both images (Visual-CoT). An unparsable box: the full image is the second image and the failure recorded.
- controls, same two-turn dialogue with the box written in the model's convention by us instead of by the
  model: `gt_box` (the task's gold focus box), `random_box` (seeded per sample), `center_box` (the middle
  half), and `box_no_crop` (the model's own box, but the second image is the full image again).

A mode is one `Mode` object (a control carries the function that supplies its box) plus one registry line;
the focus step itself is `reasoning.focus.FocusStep`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visrl_bench.core.boxes import Box, ImageSize
from visrl_bench.core.seeding import seeded_random
from visrl_bench.reasoning.dialogue import (
    ANSWER_INSTRUCTION,
    BOX_INSTRUCTION,
    PROMPT_VERSION,
    ZOOM_INSTRUCTION,
)

if TYPE_CHECKING:
    from visrl_bench.task import Sample

# a control's box: (sample, image size, seed) -> the box we write into the dialogue
ControlBox = Callable[["Sample", ImageSize, int], Box]


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    box_source: str | None = None  # recorded per sample: None (no box step), "model", or the control's name
    crop: bool = True  # the second image is the crop of the box (False: the full image again)
    control_box: ControlBox | None = None  # who writes the box: the model when None
    zoom: bool = False  # the model may ask for more boxes, one per turn (eval's max_turns crops at most)

    version = PROMPT_VERSION

    def __post_init__(self) -> None:
        if self.box_source is not None and (self.box_source == "model") != (self.control_box is None):
            raise ValueError(f"mode {self.name}: a control_box, or box_source 'model', not both or neither")
        if self.zoom and self.box_source != "model":
            raise ValueError(f"mode {self.name}: only a model that writes its boxes can zoom")

    @property
    def two_turns(self) -> bool:
        return self.box_source is not None

    @property
    def model_writes_box(self) -> bool:
        return self.two_turns and self.control_box is None

    @property
    def prompt_sha256(self) -> str:
        text = (
            f"{PROMPT_VERSION}\n{BOX_INSTRUCTION}\n{ANSWER_INSTRUCTION}" if self.two_turns else PROMPT_VERSION
        )
        if self.zoom:
            text += f"\n{ZOOM_INSTRUCTION}"
        return hashlib.sha256(text.encode()).hexdigest()


def random_box(sample_id: str, image_size: ImageSize, seed: int) -> Box:
    """A box of 10-50% of each side at a uniform position, determined by (seed, sample id)."""
    rng = seeded_random("random_box", seed, sample_id)
    w, h = image_size
    bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
    x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return Box(x1, y1, x1 + bw, y1 + bh)


def center_box(image_size: ImageSize) -> Box:
    w, h = image_size
    return Box(0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h)


DIRECT = Mode("direct", "one turn: image + question")
COT = Mode("cot", "visual CoT: the model's box -> crop -> answer from image + crop", "model")
GT_BOX = Mode(
    "gt_box",
    "control: the gold focus box -> crop -> answer",
    "gold",
    control_box=lambda sample, size, seed: sample.gold_boxes[0],
)
RANDOM_BOX = Mode(
    "random_box",
    "control: a seeded random box -> crop -> answer",
    "random",
    control_box=lambda sample, size, seed: random_box(sample.id, size, seed),
)
CENTER_BOX = Mode(
    "center_box",
    "control: the centre box [0.25, 0.25, 0.75, 0.75] -> crop -> answer",
    "center",
    control_box=lambda sample, size, seed: center_box(size),
)
ZOOM = Mode(
    "zoom",
    "multi-turn visual CoT: box -> crop -> answer or one more box (up to max_turns crops)",
    "model",
    zoom=True,
)
BOX_NO_CROP = Mode(
    "box_no_crop",
    "control: the model's box stays in the dialogue, second image uncropped",
    "model",
    crop=False,
)
