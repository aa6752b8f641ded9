"""What every trainer shares: training rows -> model inputs, through the very chat rendering and image
preparation `eval` uses, so a trained model is asked at test time exactly what it was trained on.

A training sequence is a `Completion`: a dialogue built by `visrl_bench.reasoning` (the box step or the answer
step), its images, and the assistant text to learn. The text is appended to the rendered generation prompt
followed by EOS — what generation produces — and only its tokens are scored. A trajectory (box + crop +
answer) scores two spans: the box turn inside the dialogue and the final answer.

Preference rows come from `visrl-bench generate` (one JSON object per pair, see `visrl_bench.datagen.pairs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visrl_bench.core.errors import DataError, VisrlError
from visrl_bench.reasoning import FocusStep, answer_step_messages, box_step_messages

STEPS = ("box", "answer", "trajectory")


@dataclass
class Completion:
    messages: list[dict]  # up to the last user turn
    images: list[Any]  # PIL images filling the {"type": "image"} items in order
    target: str  # the final assistant reply
    inner: tuple[str, ...] = ()  # earlier assistant turns that are scored too (a trajectory's box)


@dataclass
class StepPreferencePair:
    """One preference at one step of the visual CoT: the same prompt, a chosen and a rejected continuation."""

    step: str  # box | answer | trajectory
    chosen: Completion
    rejected: Completion
    ref_chosen_logps: float | None = None
    ref_rejected_logps: float | None = None


class ImageStore:
    """Images referenced by path from a dataset dir, decoded once (a question's image serves many pairs)."""

    def __init__(self, root: str | Path, cache: int = 256):
        self.root = Path(root)
        self._load = functools.lru_cache(maxsize=cache)(self._open)

    def _open(self, rel: str):
        from PIL import Image

        path = self.root / rel
        if not path.is_file():
            raise DataError(path, "image file not found")
        with Image.open(path) as im:
            return im.convert("RGB")

    def __call__(self, rel: str):
        return self._load(rel)


def step_pair_from_row(row: dict, images: ImageStore) -> StepPreferencePair:
    """A `generate` pair row -> the two completions the DPO loss compares."""
    step = row["step"]
    image = images(row["image"])
    question, prompt = row["question"], row["prompt"]
    if step == "box":
        messages = box_step_messages(question)
        chosen = Completion(messages, [image], row["chosen_box"])
        rejected = Completion(messages, [image], row["rejected_box"])
    elif step == "answer":
        # both answers were given the chosen box's crop: the step isolates "how to answer"
        messages = answer_step_messages(question, row["chosen_box"], prompt)
        crop = images(row["chosen_crop"])
        chosen = Completion(messages, [image, crop], row["chosen_answer"])
        rejected = Completion(messages, [image, crop], row["rejected_answer"])
    elif step == "trajectory":
        chosen = Completion(
            answer_step_messages(question, row["chosen_box"], prompt),
            [image, images(row["chosen_crop"])],
            row["chosen_answer"],
            (row["chosen_box"],),
        )
        rejected = Completion(
            answer_step_messages(question, row["rejected_box"], prompt),
            [image, images(row["rejected_crop"])],
            row["rejected_answer"],
            (row["rejected_box"],),
        )
    else:
        raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")
    return StepPreferencePair(
        step,
        chosen,
        rejected,
        row.get("ref_chosen_logps"),
        row.get("ref_rejected_logps"),
    )


def sft_completions(task, sample, adapter, crop_min_side: int | None = None) -> list[Completion]:
    """The warm-up's two supervised steps for one box-annotated sample: question -> gold box text (in the
    model's convention); image + crop of the gold box + question -> the gold answer."""
    if sample.error:
        raise VisrlError(sample.error)
    if not sample.gold_boxes:
        raise DataError(task.name, f"sample {sample.id} has no gold box: SFT needs box-annotated data")
    image = sample.load_image()
    step = FocusStep.from_box(
        sample.gold_boxes[0],
        image,
        adapter.box_convention,
        adapter.input_size(image),
        crop_min_side or task.default_crop_min_side,
    )
    answer = step.request(sample.question, task.prompt(sample), image)
    return [
        Completion(box_step_messages(sample.question), [image], step.text),
        Completion(answer.messages, answer.images, str(task.oracle_prediction(sample))),
    ]


def _expanded_positions(plain: list[int], expanded: list[int], image_id: int) -> list[int] | None:
    """Where each token of the text's own tokenization sits in the processor's, which repeats each image
    token once per image patch; None when they disagree otherwise."""
    positions, j = [], 0
    for token in plain:
        if j >= len(expanded) or expanded[j] != token:
            return None
        positions.append(j)
        j += 1
        if token == image_id:
            while j < len(expanded) and expanded[j] == image_id:
                j += 1
    return positions if j == len(expanded) else None


class VisionBatcher:
    """Completions -> padded model inputs with a `completion_mask` (TRL's convention: 1 on the tokens whose
    log-probability is trained), built with the adapter's processor and image preparation. The one
    label-masking collator: SFT, DPO, step-DPO and pretraining batch through it. Right padding is TRL's;
    pretraining pads on the left, as the committed ZoomWorld bases were trained."""

    def __init__(
        self, processor, prepare_image: Callable, eos: str | None = None, padding_side: str = "right"
    ):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        self.padding_side = padding_side
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prepare_image = prepare_image
        self.eos = eos if eos is not None else self.tokenizer.eos_token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def for_adapter(cls, adapter) -> VisionBatcher:
        return cls(adapter.processor, adapter.prepare_image)

    def encode(self, completions: Sequence[Completion]) -> dict:
        import torch

        texts = [
            self.processor.apply_chat_template(c.messages, add_generation_prompt=True, tokenize=False)
            + c.target
            + self.eos
            for c in completions
        ]
        images = [self.prepare_image(im) for c in completions for im in c.images]
        batch = self.processor(
            text=texts,
            images=images or None,
            padding=True,
            padding_side=self.padding_side,
            return_tensors="pt",
        )
        ids = batch["input_ids"]
        mask = torch.zeros_like(ids)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        image_id = getattr(self.processor, "image_token_id", None)
        for i, (text, c) in enumerate(zip(texts, completions, strict=True)):
            start = ids.shape[1] - int(lengths[i]) if self.padding_side == "left" else 0
            # scored = the tokens covering the reply's characters (and the earlier replies'): robust to a
            # tokenizer that merges a reply's first character with the template text before it
            enc = self.tokenizer(text, return_offsets_mapping=True)
            real = ids[i, start : start + int(lengths[i])].tolist()
            positions = _expanded_positions(enc["input_ids"], real, image_id)
            if positions is None:
                raise ValueError(
                    "the processor's tokens disagree with the tokenizer's on a rendered dialogue"
                )
            end = len(text)
            spans = [(end - len(c.target) - len(self.eos), end)]
            for inner in c.inner:
                at = text.rfind(inner, 0, spans[0][0])
                if at < 0:
                    raise ValueError(f"the earlier reply {inner!r} was not found in the rendered dialogue")
                spans.append((at, at + len(inner)))
            for k, (a, b) in enumerate(enc["offset_mapping"]):
                if b > a and any(a < hi and b > lo for lo, hi in spans):
                    mask[i, start + positions[k]] = 1
        batch["completion_mask"] = mask
        return dict(batch)

    def sft(self, completions: Sequence[Completion]) -> dict:
        batch = self.encode(completions)
        batch["labels"] = batch["input_ids"].masked_fill(batch.pop("completion_mask") == 0, -100)
        return batch

    def preference(self, pairs: Sequence[StepPreferencePair]) -> dict:
        """TRL DPOTrainer's batch layout: the chosen rows, then the rejected rows."""
        import torch

        batch = self.encode([p.chosen for p in pairs] + [p.rejected for p in pairs])
        if pairs and all(p.ref_chosen_logps is not None for p in pairs):
            batch["ref_chosen_logps"] = torch.tensor([p.ref_chosen_logps for p in pairs])
            batch["ref_rejected_logps"] = torch.tensor([p.ref_rejected_logps for p in pairs])
        return batch
