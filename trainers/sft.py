"""`sft`: the warm-up that teaches the look-then-answer format from a few box-annotated samples.

Each annotated sample gives two supervised steps, in exactly the dialogue `eval --mode cot` uses:
question -> the gold box written in the model's own convention; image + crop of the gold box + question ->
the gold answer. TRL's SFTTrainer runs the loop (loss on the reply tokens only); LoRA on the language model,
or full fine-tuning, with the vision tower frozen unless `train_vision`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from visrl_bench.trainers.common import Recipe, TrainConfig, fit, load_policy, trl_arguments

from visrl_bench.core.errors import Bounds
from visrl_bench.task import TaskData
from visrl_bench.train.collate import Completion, VisionBatcher, sft_completions


@dataclass
class SFTConfig(TaskData, TrainConfig):
    split: str | None = "sft"  # `limit`: the first N annotated samples of it ("a few")
    extra_splits: tuple[str, ...] = ()  # more annotated data: every sample of these splits too
    steps: tuple[str, ...] = ("box", "answer")  # which supervised steps to train
    lr: float = 2e-4
    epochs: float = 3.0

    BOUNDS: ClassVar[Bounds] = {**TrainConfig.BOUNDS, **TaskData.BOUNDS}
    TRAINING_SPLITS: ClassVar[tuple[str, ...]] = ("split", "extra_splits")


def build_rows(cfg: SFTConfig, adapter) -> tuple[list[dict], dict[str, Completion]]:
    """Dataset rows (ids only: Arrow cannot hold PIL images in chat messages) and the completions by id."""
    from visrl_bench.core.registry import TASKS

    def annotated():
        for n, split in enumerate((cfg.split, *cfg.extra_splits)):
            task = TASKS.build(cfg.task, cfg.data, split, seed=cfg.seed, **cfg.task_options)
            for i, sample in enumerate(task.samples()):
                if n == 0 and cfg.limit is not None and i >= cfg.limit:
                    break
                yield task, sample

    rows, completions = [], {}
    for task, sample in annotated():
        box, answer = sft_completions(task, sample, adapter, cfg.crop_min_side)
        for step, completion in (("box", box), ("answer", answer)):
            if step in cfg.steps:
                key = f"{sample.id}#{step}"
                completions[key] = completion
                rows.append(
                    {"id": key, "step": step, "images": [f"{key}:{k}" for k in range(len(completion.images))]}
                )
    if not rows:
        raise ValueError(f"no SFT rows from {cfg.task} {cfg.data} split={cfg.split} {cfg.extra_splits}")
    return rows, completions


def train(cfg: SFTConfig) -> Path:
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = load_policy(cfg)
    from datasets import Dataset

    rows, completions = build_rows(cfg, adapter)
    batcher = VisionBatcher.for_adapter(adapter)
    args = trl_arguments(TRLSFTConfig, cfg, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    trainer = SFTTrainer(
        model=adapter.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=lambda items: batcher.sft([completions[it["id"]] for it in items]),
        processing_class=adapter.processor,
    )
    return fit(trainer, adapter, cfg, "sft", started, lambda: {"rows": len(rows)})


RECIPE = Recipe(
    "sft", SFTConfig, train, "warm-up: question -> gold box, image + crop -> answer (TRL SFTTrainer)"
)
