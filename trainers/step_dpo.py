"""`step_dpo`: VisRL's step-level DPO.

The loss of a batch is  w_box * DPO(box pairs) + w_answer * DPO(answer pairs)  — TRL's own DPO loss (sigmoid,
β, optional NLL on chosen) computed separately on the box-step pairs (chosen vs rejected box, given the image
and question) and on the answer-step pairs (chosen vs rejected answer, given the image, the question and the
crop of the chosen box). A batch holding one kind only contributes that term. Each step's rewards, margins and
accuracies are logged under `box/...` and `answer/...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.trainers.common import Recipe
from visrl_bench.trainers.dpo import DPOTrainConfig, VisionDPOTrainer, run_dpo

from visrl_bench.core.distributed import ranks
from visrl_bench.core.errors import Bounds, VisrlError
from visrl_bench.core.seeding import seeded_random

STEP_NAMES = ("box", "answer")
STEP_PREFIXES = tuple(f"{s}/" for s in STEP_NAMES)


@dataclass
class StepDPOConfig(DPOTrainConfig):
    box_weight: float = 0.5
    answer_weight: float = 0.5

    BOUNDS: ClassVar[Bounds] = {**DPOTrainConfig.BOUNDS, "box_weight": (0, None), "answer_weight": (0, None)}


class StepDPOTrainer(VisionDPOTrainer):
    def __init__(self, *, step_weights: dict[str, float] | None = None, **kwargs: Any):
        self.step_weights = step_weights or {"box": 0.5, "answer": 0.5}
        super().__init__(**kwargs)

    def _get_train_sampler(self, train_dataset=None):
        """Data parallel: TRL gathers each sub-loss's metrics across ranks (same shapes, same calls), so
        every rank's batch must hold as many pairs of each step as every other's: `StepBalancedSampler`.
        One process keeps Trainer's own shuffling."""
        if ranks().world == 1:
            return super()._get_train_sampler(train_dataset)
        steps = (self.train_dataset if train_dataset is None else train_dataset)["step"]
        return StepBalancedSampler(steps, self.args.per_device_train_batch_size, self.args.seed)

    def collate(self, rows: list[dict]) -> dict:
        out: dict[str, Any] = {}
        for step in STEP_NAMES:
            picked = [r for r in rows if r["step"] == step]
            if picked:
                out[step] = self.batcher.preference(self.pairs(picked))
        return out

    def _compute_loss(self, model, inputs, return_outputs=False):
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        total = None
        for step in STEP_NAMES:
            weight = self.step_weights.get(step, 0.0)
            if step not in inputs or weight == 0:
                continue
            marks = {k: len(v) for k, v in metrics.items()}
            loss = super()._compute_loss(model, inputs[step], False)
            # TRL appended this sub-batch's metrics to the shared keys: move them under the step's name
            for key in list(metrics):
                new = metrics[key][marks.get(key, 0) :]
                if key == "num_tokens" or key.startswith(STEP_PREFIXES) or not new:
                    continue
                del metrics[key][marks.get(key, 0) :]
                if not metrics[key]:
                    del metrics[key]
                metrics[f"{step}/{key}"].extend(new)
            metrics[f"{step}/loss"].append(loss.detach().item())
            total = weight * loss if total is None else total + weight * loss
        if total is None:
            raise ValueError("a step-DPO batch with no box or answer pairs (or both weights 0)")
        if return_outputs:
            return total, None
        return total


class StepBalancedSampler:
    """Indices in blocks of `batch_size` (one per-device batch) that each hold the same number of pairs of
    each step present: each step's pairs shuffled by a seeded RNG every epoch, the shorter lists cycled
    to the longest's length. A pair may so appear twice in an epoch; a batch never lacks a step."""

    def __init__(self, steps: list[str], batch_size: int, seed: int):
        self.by_step = [[i for i, s in enumerate(steps) if s == name] for name in STEP_NAMES]
        self.by_step = [ix for ix in self.by_step if ix]
        if batch_size % len(self.by_step):
            raise VisrlError(
                f"step-DPO on several processes puts {len(self.by_step)} steps in every batch: batch_size "
                f"({batch_size}) must be a multiple of {len(self.by_step)}"
            )
        self.share, self.seed, self.epoch = batch_size // len(self.by_step), seed, 0
        longest = max(len(ix) for ix in self.by_step)
        self.blocks = -(-longest // self.share)

    def __len__(self) -> int:
        return self.blocks * self.share * len(self.by_step)

    def set_epoch(self, epoch: int) -> None:
        """The order of epoch `epoch` (Trainer and accelerate call it; a resumed run gets its epoch's)."""
        self.epoch = epoch

    def __iter__(self):
        rng = seeded_random("step_balanced", self.seed, self.epoch)
        self.epoch += 1
        streams = []
        for ix in self.by_step:
            order = list(ix)
            rng.shuffle(order)
            need = self.blocks * self.share
            streams.append((order * (need // len(order) + 1))[:need])
        for b in range(self.blocks):
            for stream in streams:
                yield from stream[b * self.share : (b + 1) * self.share]


def train(cfg: StepDPOConfig) -> Path:
    weights = {"box": cfg.box_weight, "answer": cfg.answer_weight}
    trained = sum(1 for w in weights.values() if w > 0)
    if ranks().world > 1 and cfg.batch_size % max(trained, 1):
        # said before the reference pass, not after it (StepBalancedSampler needs whole shares)
        raise VisrlError(
            f"step-DPO on several processes puts {trained} steps in every batch: batch_size "
            f"({cfg.batch_size}) must be a multiple of {trained}"
        )
    return run_dpo(
        cfg,
        tuple(s for s in STEP_NAMES if weights[s] > 0),  # a zero-weight step's pairs would only cost time
        StepDPOTrainer,
        "step_dpo",
        step_weights=weights,
    )


RECIPE = Recipe(
    "step_dpo",
    StepDPOConfig,
    train,
    "VisRL step-level DPO: w_box * DPO(box pairs) + w_answer * DPO(answer pairs) (DPOTrainer subclass)",
)
