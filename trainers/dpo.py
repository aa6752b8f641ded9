"""`dpo`: trajectory-level DPO — one preference per question over the whole box -> crop -> answer trajectory.

A trajectory's log-probability is that of its box turn plus that of its answer given its own crop (the two
reply spans of one dialogue), so this is the ablation of step-DPO that does not tell the steps apart.

`VisionDPOTrainer` is TRL's DPOTrainer with two changes, both about data, none about the loss:
- batches come from our collator (`visrl_bench.train.collate`): the same rendering and image
  preparation as eval;
- the reference log-probs are computed once, before training, and carried as columns. TRL refuses
  `precompute_ref_log_probs` for vision data; recomputing them every step would double the cost
  and, with LoRA, tie the reference to the adapter-disabled model whatever the config says.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from trl import DPOConfig, DPOTrainer
from visrl_bench.trainers.common import Recipe, TrainConfig, fit, load_policy, trl_arguments

from visrl_bench.core.errors import Bounds, DataError
from visrl_bench.core.io import iter_jsonl
from visrl_bench.train.collate import ImageStore, StepPreferencePair, VisionBatcher, step_pair_from_row

PAIRS_FILE = "pairs.jsonl"


@dataclass
class DPOTrainConfig(TrainConfig):
    pairs: str = ""  # a `visrl-bench generate` output dir
    reference: str = "self"  # "self": the model as loaded (the previous round's); or a checkpoint dir
    beta: float = 0.1
    nll_weight: float = 0.0  # NLL on the chosen reply (TRL's "sft" loss term), keeps chosen likely
    lr: float = 5e-5
    epochs: float = 1.0
    # the control no peer reports: each pair's preference flipped by a seeded coin. The gain must vanish;
    # if it does not, it never came from the reward
    swap_labels: bool = False

    BOUNDS: ClassVar[Bounds] = {**TrainConfig.BOUNDS, "beta": (1e-12, None), "nll_weight": (0, None)}


# what "flipping the preference" exchanges, per step: the context a pair is scored in stays as it was (an
# answer pair's two answers were both given the chosen box's crop, and keep it)
SWAP_FIELDS = {
    "box": ("box", "crop", "answer", "score", "iou"),
    "answer": ("answer",),
    "trajectory": ("box", "crop", "answer", "score", "iou"),
}


def swap_labels(rows: list[dict], seed: int) -> list[dict]:
    """Each pair's chosen and rejected exchanged with probability 1/2, by a coin seeded per pair id (the
    same pairs flip in every run with this seed); every row carries `labels_swapped`."""
    out = []
    for row in rows:
        digest = hashlib.sha256(f"swap:{seed}:{row.get('id', '')}:{row['step']}".encode()).digest()
        row = dict(row)
        row["labels_swapped"] = bool(digest[0] & 1)
        if row["labels_swapped"]:
            for name in SWAP_FIELDS[row["step"]]:
                c, r = f"chosen_{name}", f"rejected_{name}"
                if c in row or r in row:
                    row[c], row[r] = row.get(r), row.get(c)
        out.append(row)
    return out


def read_pairs(pairs_dir: str | Path, steps: tuple[str, ...]) -> list[dict]:
    path = Path(pairs_dir) / PAIRS_FILE
    rows = []
    for lineno, row in iter_jsonl(path, "preference pairs"):
        missing = [k for k in ("step", "image", "question", "prompt") if k not in row]
        if missing:
            raise DataError(path, f"pair lacks {', '.join(missing)}", line=lineno)
        if row["step"] in steps:
            rows.append(row)
    if not rows:
        raise DataError(path, f"no pairs for step(s) {', '.join(steps)}")
    return rows


class VisionDPOTrainer(DPOTrainer):
    def __init__(self, *, batcher: VisionBatcher, images: ImageStore, ref_model=None, **kwargs: Any):
        self.batcher, self.images = batcher, images
        kwargs.setdefault("data_collator", self.collate)
        super().__init__(ref_model=ref_model, **kwargs)
        self.train_dataset = self.with_reference_logps(self.train_dataset)
        self.precompute_ref_logps = True  # _compute_loss now reads the columns
        self.ref_model = None  # not needed any more: free it

    def pairs(self, rows: list[dict]) -> list[StepPreferencePair]:
        return [step_pair_from_row(r, self.images) for r in rows]

    def collate(self, rows: list[dict]) -> dict:
        return self.batcher.preference(self.pairs(rows))

    def with_reference_logps(self, dataset):
        """The reference log-probs of every pair, as two columns. With several processes the main one
        computes them, once, into OUT/reference_logps.json, and every rank reads that file."""
        from visrl_bench.core.distributed import barrier, ranks

        path = Path(self.args.output_dir) / "reference_logps.json"
        if ranks().main:
            chosen, rejected = self.reference_logps(dataset)
            path.write_text(json.dumps({"chosen": chosen, "rejected": rejected}))
        barrier()
        if not ranks().main:
            saved = json.loads(path.read_text())
            chosen, rejected = saved["chosen"], saved["rejected"]
        return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

    def reference_logps(self, dataset) -> tuple[list[float], list[float]]:
        import torch

        # unwrapped: a DDP-wrapped reference would broadcast its buffers at every forward, a collective the
        # other ranks (waiting for this file) are not in
        model = self.accelerator.unwrap_model(self.ref_model if self.ref_model is not None else self.model)
        was_training = model.training
        model.eval()
        chosen, rejected = [], []
        size = self.args.per_device_train_batch_size
        for start in range(0, len(dataset), size):
            rows = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
            batch = self.batcher.preference(self.pairs(rows))
            batch = {
                k: v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            c, r = self.compute_ref_log_probs(model, batch)
            chosen += c.float().cpu().tolist()
            rejected += r.float().cpu().tolist()
        model.train(was_training)
        return chosen, rejected


def reference_model(cfg: DPOTrainConfig, adapter):
    """None with LoRA and reference "self" (TRL disables the adapter: the model as loaded), else a model."""
    if cfg.reference == "self":
        if cfg.lora:
            return None
        return copy.deepcopy(adapter.model).eval()
    from visrl_bench.models import load_model

    return load_model(cfg.reference, cfg.arch, device=cfg.device).model.eval()


def build_trainer(cfg: DPOTrainConfig, steps: tuple[str, ...], trainer_class, **trainer_kwargs: Any):
    """(trainer, rows, adapter): the policy loaded, the reference log-probs already computed."""
    from datasets import Dataset

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_pairs(cfg.pairs, steps)
    if cfg.swap_labels:
        rows = swap_labels(rows, cfg.seed)
    adapter = load_policy(cfg)
    loss_type = ["sigmoid", "sft"] if cfg.nll_weight > 0 else ["sigmoid"]
    args = trl_arguments(
        DPOConfig,
        cfg,
        beta=cfg.beta,
        loss_type=loss_type,
        loss_weights=[1.0, cfg.nll_weight] if cfg.nll_weight > 0 else None,
        max_length=None,
        precompute_ref_log_probs=False,
    )
    trainer = trainer_class(
        model=adapter.model,
        ref_model=reference_model(cfg, adapter),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=adapter.processor,
        batcher=VisionBatcher.for_adapter(adapter),
        images=ImageStore(cfg.pairs),
        **trainer_kwargs,
    )
    return trainer, rows, adapter


def run_dpo(
    cfg: DPOTrainConfig, steps: tuple[str, ...], trainer_class, name: str, **trainer_kwargs: Any
) -> Path:
    started = time.perf_counter()
    trainer, rows, adapter = build_trainer(cfg, steps, trainer_class, **trainer_kwargs)
    return fit(
        trainer,
        adapter,
        cfg,
        name,
        started,
        lambda: {
            "pairs": len(rows),
            "labels_swapped": sum(1 for r in rows if r.get("labels_swapped")),
            "by_step": {s: sum(1 for r in rows if r["step"] == s) for s in steps},
            "log": [h for h in trainer.state.log_history if "loss" in h],
        },
    )


def train(cfg: DPOTrainConfig) -> Path:
    return run_dpo(cfg, ("trajectory",), VisionDPOTrainer, "dpo")


RECIPE = Recipe("dpo", DPOTrainConfig, train, "trajectory-level DPO on `generate` pairs (TRL DPOTrainer)")
