"""The visual-CoT dialogue: the box turn, the answer turn and the one-turn question, as chat messages.

Every path that asks a model something (eval, data generation, the lmms-eval plug-in) and every path that
trains one (SFT, DPO, pretraining) builds its messages here, so a model is trained on the dialogue it is
evaluated with. Images are {"type": "image"} items, filled in order by a request's images.
"""

from __future__ import annotations

PROMPT_VERSION = "1"
BOX_INSTRUCTION = (
    "Please provide the bounding box coordinate of the region that can help you answer the question better."
)
ANSWER_INSTRUCTION = "Please answer the question based on the original image and local detail image."
# multi-turn zoom, after a crop while more are allowed: answer, or ask for one more region
ZOOM_INSTRUCTION = (
    "Please answer the question based on the original image and local detail images, or, if another region "
    "would help more, provide only its bounding box coordinate."
)


def box_step_messages(question: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": f"{question} {BOX_INSTRUCTION}"}],
        }
    ]


def answer_step_messages(question: str, box_text: str, task_prompt: str) -> list[dict]:
    """Visual CoT's answer turn: the box turn, the box, then the crop and the task's prompt."""
    return zoom_messages(question, [box_text], task_prompt, final=True)


def zoom_messages(question: str, box_texts: list[str], task_prompt: str, final: bool) -> list[dict]:
    """The dialogue after the box turns `box_texts`: each box reply is followed by a user turn holding its
    crop. The earlier of those offered to answer or zoom again (the model zoomed); the last asks for the
    answer when `final` (no crop left), else offers both. One box, final: visual CoT's answer turn."""
    messages = box_step_messages(question)
    for n, text in enumerate(box_texts, start=1):
        messages += [
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
            {"role": "user", "content": crop_turn(task_prompt, final and n == len(box_texts))},
        ]
    return messages


def crop_turn(task_prompt: str, final: bool) -> list[dict]:
    """The content of the turn that shows a crop: the crop, then the answer instruction (`final`: no crop
    left) or the offer to answer or zoom again. GRPO's zoom tool returns exactly this, its image filled in."""
    instruction = ANSWER_INSTRUCTION if final else ZOOM_INSTRUCTION
    return [{"type": "image"}, {"type": "text", "text": f"{instruction} {task_prompt}"}]


def direct_messages(task_prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": task_prompt}]}]


def turn_text(messages: list[dict], turn: int) -> str:
    """The text of one message (0 = the first user turn, -1 = the last), as the records show each prompt."""
    return "".join(item["text"] for item in messages[turn]["content"] if item["type"] == "text")
