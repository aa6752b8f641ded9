"""GRPO's `zoom` rollout: a whole multi-turn Visual CoT trajectory through TRL's tool loop. The box reply
is a call of the `zoom` tool, which crops through `FocusStep` and returns the crop and the next instruction
(eval's own crop turn) as the next turn; the processor copy below renders that turn as eval does and reads a
reply as a call exactly when eval's zoom mode would. `trainers/grpo.py` says what is trained and rewarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visrl_bench.core.errors import VisrlError

if TYPE_CHECKING:
    from visrl_bench.trainers.grpo import GRPOConfig

# Put before the model's own chat template: a tool's reply (TRL's `tool` message) is rendered as the user
# turn eval shows a crop in, and an assistant turn that holds only a tool call (TRL renders such turns to
# check the template and to find where a tool's reply starts) as the call's JSON. Our trajectories' calls
# carry the model's own box text as their content and render as eval's dialogue; nothing else changes.
TOOL_TURN_AS_USER = (
    "{%- set ns = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'tool' -%}"
    "{%- set ns.messages = ns.messages + [{'role': 'user', 'content': m['content']}] -%}"
    "{%- elif m['role'] == 'assistant' and m['tool_calls'] is defined and m['tool_calls'] -%}"
    "{%- set words = m['content'] if m['content'] is string "
    "else (m['content'] or []) | map(attribute='text', default='') | join('') -%}"
    "{%- if words -%}{%- set ns.messages = ns.messages + [m] -%}"
    "{%- else -%}{%- set ns.messages = ns.messages + [{'role': 'assistant', 'content': [{'type': 'text', "
    "'text': m['tool_calls'] | map(attribute='function') | map('tojson') | join('')}]}] -%}"
    "{%- endif -%}"
    "{%- else -%}{%- set ns.messages = ns.messages + [m] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = ns.messages %}"
)


class ZoomWorld:
    """What every trajectory's environment shares: the questions, their opened images, the crop rule."""

    def __init__(self, task, samples: list, images: list, adapter, cfg: GRPOConfig):
        self.task, self.samples, self.images, self.adapter, self.cfg = task, samples, images, adapter, cfg
        self.min_side = cfg.crop_min_side or task.default_crop_min_side

    def environment(self) -> ZoomEnvironment:
        return ZoomEnvironment(self)

    def crop(self, env: ZoomEnvironment, text: str) -> list[dict]:
        from visrl_bench.reasoning import FocusStep, crop_turn

        sample, (image, resized) = self.samples[env.index], self.images[env.index]
        step = FocusStep.from_text(text, image, self.adapter.box_convention, resized, self.min_side)
        env.steps.append(step)
        content = crop_turn(self.task.prompt(sample), final=len(env.steps) >= self.cfg.max_turns)
        content[0] = {"type": "image", "image": self.adapter.prepare_image(step.second)}
        return content


class ZoomEnvironment:
    """One trajectory's tool. TRL calls `reset` with the question's dataset row, then `zoom` on each reply
    its parser reads as a call; the focus steps taken are kept for the reward and the summary."""

    def __init__(self, world: ZoomWorld):
        self.world = world
        self.index: int | None = None
        self.steps: list = []

    def reset(self, index: int, **row: Any) -> None:
        self.index, self.steps = index, []

    def zoom(self, box: str) -> list[dict]:
        """Show the crop of the image around a bounding box.

        Args:
            box: The bounding box of the region to look at, as the model wrote it.
        """
        return self.world.crop(self, box)


def zoom_processor(processor):
    """A copy of the processor for TRL's tool loop: its chat template renders the tool's turn as eval's crop
    turn, and its tokenizer's response parser reads a reply as a `zoom` call exactly when eval's zoom mode
    would. TRL passes the parser the dialogue so far (`prefix`); its last instruction says which turn this
    is: after the box turn's, every reply is the box (parsable or not, as eval); after a crop offered one
    more, a reply that writes a box; after the answer instruction, none."""
    import copy

    from visrl_bench.core.boxes import holds_box
    from visrl_bench.reasoning import ANSWER_INSTRUCTION, BOX_INSTRUCTION, ZOOM_INSTRUCTION

    processor = copy.deepcopy(processor)
    processor.chat_template = TOOL_TURN_AS_USER + processor.chat_template
    tokenizer = processor.tokenizer

    def parse_response(ids, schema=None, *, prefix=None, tools=None) -> dict:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        context = tokenizer.decode(prefix, skip_special_tokens=True) if prefix is not None else ""
        last = max((context.rfind(t), t) for t in (BOX_INSTRUCTION, ZOOM_INSTRUCTION, ANSWER_INSTRUCTION))
        call = last[0] >= 0 and (
            last[1] == BOX_INSTRUCTION or (last[1] == ZOOM_INSTRUCTION and holds_box(text))
        )
        message: dict = {"role": "assistant", "content": text}
        if call:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": "zoom", "arguments": {"box": text}}}
            ]
        return message

    tokenizer.parse_response = parse_response
    # TRL hands `prefix` to parsers set up as a response template; ours is the function above
    tokenizer.response_template = {"parser": "visrl_bench zoom calls"}
    return processor


def check_tool_images(adapter, image) -> None:
    """TRL's tool loop (1.16) feeds a tool's images to the model with Qwen-style inputs (image_grid_thw and
    mm_token_type_ids); for other processors it adds `token_type_ids`, which e.g. LLaVA's generate refuses.
    Say so before a run starts rather than after its first rollout."""
    if "image_grid_thw" not in adapter.processor.image_processor(images=[image], return_tensors="pt"):
        raise VisrlError(
            f"rollout zoom needs a processor with image_grid_thw (Qwen2-VL, Qwen2.5-VL); {adapter.arch}'s "
            "images reach TRL's tool loop with token_type_ids its model does not take"
        )


def placeholder_tokens(config) -> list[int]:
    """The ids that stand for image or video features in the model's input."""
    names = ("image_token_id", "image_token_index", "video_token_id")
    return sorted({getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)})


def zoom_completion_length(processor, dataset, cfg: GRPOConfig) -> int:
    """A zoom trajectory's token budget: `max_turns` replies and crop turns, then the answer. A crop
    turn is taken as long as the box turn (system prompt, image, question) of the question with the largest
    image, which no crop (never larger than its image) exceeds."""
    sizes = [image.width * image.height for image in dataset["image"]]
    row = dataset[max(range(len(sizes)), key=sizes.__getitem__)]
    messages = [dict(m) for m in row["prompt"]]
    content = [dict(item) for item in messages[0]["content"]]
    content[0] = {"type": "image", "image": row["image"]}
    messages[0]["content"] = content
    ids = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
    turn = len(ids["input_ids"][0])
    return cfg.max_turns * (cfg.reply_max_new_tokens + turn) + cfg.reply_max_new_tokens
