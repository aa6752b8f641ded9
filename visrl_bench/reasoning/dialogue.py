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


def turn_text(messages: list[dict], turn: int) -> str:
    """The text of one message (0 = the first user turn, -1 = the last), as the records show each prompt."""
    return "".join(item["text"] for item in messages[turn]["content"] if item["type"] == "text")
