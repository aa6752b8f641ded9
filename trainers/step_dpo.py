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

from visrl_bench.core.errors import Bounds

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

    def collate(self, rows: list[dict]) -> dict:
        out = {}
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


def train(cfg: StepDPOConfig) -> Path:
    weights = {"box": cfg.box_weight, "answer": cfg.answer_weight}
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
