"""Reasoning modes: how a question becomes model turns (Visual Chain-of-Thought and its controls).

- `direct`: one turn, the image and the task's prompt.
- `cot`: turn 1 asks for the box of the region that helps answer; the reply is parsed in the model's box
  convention; the crop of that region becomes the second image of turn 2, which asks the task's prompt with
  both images (Visual-CoT). An unparsable box: the full image is the second image and the failure recorded.
- controls, same two-turn dialogue with the box written in the model's convention by us instead of by the
  model: `gt_box` (the task's gold focus box), `random_box` (seeded per sample), `center_box` (the middle
  half), and `box_no_crop` (the model's own box, but the second image is the full image again).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from visrl_bench.boxes import Box, ImageSize

PROMPT_VERSION = "1"
BOX_INSTRUCTION = (
    "Please provide the bounding box coordinate of the region that can help you answer the question better."
)
ANSWER_INSTRUCTION = "Please answer the question based on the original image and local detail image."


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    box_source: str | None = None  # None: no box step; "model", "gold", "random" or "center"
    crop: bool = True  # the second image is the crop of the box (False: the full image again)

    version = PROMPT_VERSION

    @property
    def two_turns(self) -> bool:
        return self.box_source is not None

    @property
    def prompt_sha256(self) -> str:
        text = (
            f"{PROMPT_VERSION}\n{BOX_INSTRUCTION}\n{ANSWER_INSTRUCTION}" if self.two_turns else PROMPT_VERSION
        )
        return hashlib.sha256(text.encode()).hexdigest()


DIRECT = Mode("direct", "one turn: image + question")
COT = Mode("cot", "visual CoT: the model's box -> crop -> answer from image + crop", "model")
GT_BOX = Mode("gt_box", "control: the gold focus box -> crop -> answer", "gold")
RANDOM_BOX = Mode("random_box", "control: a seeded random box -> crop -> answer", "random")
CENTER_BOX = Mode(
    "center_box", "control: the centre box [0.25, 0.25, 0.75, 0.75] -> crop -> answer", "center"
)
BOX_NO_CROP = Mode(
    "box_no_crop",
    "control: the model's box stays in the dialogue, second image uncropped",
    "model",
    crop=False,
)


def box_step_messages(question: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": f"{question} {BOX_INSTRUCTION}"}],
        }
    ]


def answer_step_messages(question: str, box_text: str, task_prompt: str) -> list[dict]:
    return [
        *box_step_messages(question),
        {"role": "assistant", "content": [{"type": "text", "text": box_text}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": f"{ANSWER_INSTRUCTION} {task_prompt}"}],
        },
    ]


def direct_messages(task_prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": task_prompt}]}]


def random_box(sample_id: str, image_size: ImageSize, seed: int) -> Box:
    """A box of 10-50% of each side at a uniform position, determined by (seed, sample id)."""
    digest = hashlib.sha256(f"random_box:{seed}:{sample_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    w, h = image_size
    bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
    x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return Box(x1, y1, x1 + bw, y1 + bh)


def center_box(image_size: ImageSize) -> Box:
    w, h = image_size
    return Box(0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h)
