"""Visual Chain-of-Thought: the dialogue (`dialogue`), the focus step (`focus`) and the modes (`modes`)."""

from visrl_bench.reasoning.dialogue import (
    ANSWER_INSTRUCTION,
    BOX_INSTRUCTION,
    PROMPT_VERSION,
    ZOOM_INSTRUCTION,
    answer_step_messages,
    box_step_messages,
    crop_turn,
    direct_messages,
    turn_text,
    zoom_messages,
)
from visrl_bench.reasoning.focus import FocusStep, zoom_request
from visrl_bench.reasoning.modes import (
    BOX_NO_CROP,
    CENTER_BOX,
    COT,
    DIRECT,
    GT_BOX,
    RANDOM_BOX,
    ZOOM,
    Mode,
    center_box,
    random_box,
)

__all__ = [
    "ANSWER_INSTRUCTION",
    "BOX_INSTRUCTION",
    "BOX_NO_CROP",
    "CENTER_BOX",
    "COT",
    "DIRECT",
    "GT_BOX",
    "PROMPT_VERSION",
    "RANDOM_BOX",
    "ZOOM",
    "ZOOM_INSTRUCTION",
    "FocusStep",
    "Mode",
    "answer_step_messages",
    "box_step_messages",
    "center_box",
    "crop_turn",
    "direct_messages",
    "random_box",
    "turn_text",
    "zoom_messages",
    "zoom_request",
]
