"""The focus step, the method's central step, built once: a box in the dialogue -> the crop region -> the
second image -> the answer turn.

Eval (`cot` and every control), self-evolution data generation, the SFT warm-up and pretraining all take it
from here; if any of them built its own, a model could be trained on one crop rule or image order and
evaluated on another, silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visrl_bench.core.boxes import (
    Box,
    BoxConvention,
    ImageSize,
    ParsedBox,
    crop_region,
    format_box,
    parse_box,
)
from visrl_bench.models import ChatRequest
from visrl_bench.reasoning.dialogue import zoom_messages


@dataclass
class FocusStep:
    text: str  # the box as the dialogue holds it: the model's own text, or ours in its convention
    parsed: ParsedBox  # the box the text stands for; no box (unparsable): the full image is shown again
    region: Box | None  # the crop region around the box (Visual-CoT's rule: a square of >= min_side)
    crop: bool  # False: the box stays in the dialogue but the second image is the full image (a control)
    second: Any  # the answer turn's second image

    @property
    def box(self) -> Box | None:
        return self.parsed.box

    @property
    def crop_box(self) -> Box | None:
        """The region actually cut out, if any."""
        return self.region if self.crop else None

    @classmethod
    def of(cls, text: str, parsed: ParsedBox, image, min_side: int, crop: bool = True) -> FocusStep:
        region = crop_region(parsed.box, image.size, min_side) if parsed.box is not None else None
        second = image.crop(tuple(int(v) for v in region.as_list())) if region is not None and crop else image
        return cls(text, parsed, region, crop, second)

    @classmethod
    def from_text(
        cls,
        text: str,
        image,
        convention: str | BoxConvention,
        resized: ImageSize | None,
        min_side: int,
        crop: bool = True,
    ) -> FocusStep:
        """A box the model wrote: parsed in its convention (repairs recorded), the crop of what it means."""
        return cls.of(text, parse_box(text, convention, image.size, resized), image, min_side, crop)

    @classmethod
    def from_box(
        cls,
        box: Box,
        image,
        convention: str | BoxConvention,
        resized: ImageSize | None,
        min_side: int,
        crop: bool = True,
    ) -> FocusStep:
        """A box we supply (the gold box, a control, a pretraining focus): written in the model's convention
        for the dialogue, and the EXACT box cropped, not its rounded text."""
        return cls.of(format_box(box, convention, image.size, resized), ParsedBox(box), image, min_side, crop)

    def request(self, question: str, task_prompt: str, image) -> ChatRequest:
        """The answer turn: the box turn, this box as the reply, then the image and the second image."""
        return zoom_request([self], question, task_prompt, image, final=True)


def zoom_request(steps: list[FocusStep], question: str, task_prompt: str, image, final: bool) -> ChatRequest:
    """The turn after the focus steps `steps` (one per box turn): the dialogue, then the image and every
    step's second image in order. `final`: it must answer (no crop left); else it may zoom again."""
    messages = zoom_messages(question, [s.text for s in steps], task_prompt, final)
    return ChatRequest(messages, [image, *(s.second for s in steps)])
