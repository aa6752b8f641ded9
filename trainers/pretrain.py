"""Pretrain a tiny base LMM on ZoomWorld's `pretrain` split: the stand-in for "LLaVA-1.5 / Qwen-VL base".

A recipe, not a framework: build the model from config (random init, ~1M parameters, a tokenizer with one
token per box-coordinate value and per answer word), then teach it perception in exactly the dialogue format
`eval` uses: one image + question -> the tile (unreadable: it learns the prior), and the two-turn
visual-CoT dialogue (box text, then image + crop) -> what the crop shows (the tile, or "none").
And grounding, as real base LMMs learn it from RefCOCO-style data: "the orange circle" -> its box, in the
model's box convention, on a 1 -> 2 -> 3-5 object curriculum (the `ground` split). Grounding never uses the
benchmark's question or box instruction: turning a question into a box is what the SFT warm-up teaches.
The loss is on the answer tokens only, batched by the trainers' one collator and run by transformers'
Trainer. Writes a normal checkpoint dir, the Trainer's log (OUT/log.csv) and provenance, including the
grounding IoU on held-out ground scenes.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.trainers.common import progress_record, resume_state, route_logs
from visrl_bench.trainers.coordinates import SoftCoordinateLoss, sincos_init
from visrl_bench.trainers.grounding import (
    box_step_request,
    colour_request,
    ground_request,
    grounding_iou,
    held_out_ground,
    phrase_parts,
)

from visrl_bench.core.boxes import format_box, gold_box
from visrl_bench.core.config import read_scalars, validate
from visrl_bench.core.errors import Bounded, Bounds
from visrl_bench.core.io import iter_jsonl, read_json
from visrl_bench.datagen.zoomworld import ANSWERS, NONE, OBJECT_COLOURS, QUESTION, SHAPES, ZoomWorldConfig
from visrl_bench.models import ChatRequest
from visrl_bench.models.tiny import TinySpec, build_model, coordinate_tokens, save_checkpoint
from visrl_bench.reasoning import FocusStep, direct_messages
from visrl_bench.train.collate import Completion, VisionBatcher


def zoomworld_spec(arch: str) -> TinySpec:
    """~1M parameters; both views shrink the canvas exactly 16x with a BOX filter (see the generator), into
    4-px patches (Qwen2-VL: 2-px patches merged 2x2, so its language model also sees 4-px tokens): the
    geometry screened in docs/zoomworld.md. Qwen2-VL's language model gets rope_theta 10: at 10,000 its
    M-RoPE width section turns 0.02 rad across the whole image (Qwen3-VL interleaves the axes: at 10,000 its
    width's fastest pair turns 0.32 rad per column)."""
    corpus = tuple(QUESTION.format(colour=c, shape=s) for c in OBJECT_COLOURS for s in SHAPES)
    return TinySpec(
        text_hidden=128,
        text_layers=4,
        heads=4,
        vision_hidden=96,
        vision_layers=3,
        image_size=32,
        patch_size=4,
        qwen_patch=2,
        min_pixels=32 * 24,  # global view exactly 32 x 24; crops upscaled to about as many pixels
        max_pixels=32 * 24,
        rope_theta=10.0 if arch == "qwen2_vl" else 10000.0,
        resample=4,
        bpe_vocab=800,
        extra_tokens=coordinate_tokens(arch) + ANSWERS,
        corpus=corpus,
    )


@dataclass
class PretrainConfig(Bounded):
    arch: str = "llava"
    data: str = ""  # a ZoomWorld folder
    out: str = ""
    steps: int = 900
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    log_every: int = 25
    # perception first: reading a tile is learnable from positive crops alone, telling the target from other
    # objects ("none") only once tiles can be read
    positive_only_fraction: float = 0.25
    # after that, the share of "none" among the crop examples (None: as drawn, about 60% in ZoomWorld 2.0's
    # pretrain split): a base trained on mostly-"none" crops answers "none" for gold crops it is unsure of
    none_share: float | None = None
    # grounding: this share of every batch; 1-object scenes only until the first fraction of the steps,
    # 1-2 objects until the second, then all (in our trials, without a curriculum no grounding was learned).
    # The defaults are perception alone; trainers/base_recipes.py holds the committed bases' stages.
    ground_fraction: float = 0.0
    ground_curriculum: tuple[float, float] = (0.15, 0.3)
    ground_holdout: int = 200  # last rows of the ground split, never trained on: the grounding IoU
    # this share of the grounding examples asked as Visual CoT's box step ("What is the tile pattern on the
    # red square? Please provide the bounding box coordinate of the region that can help you answer the
    # question better.") instead of the referring prompt: a base that grounds only the referring phrasing
    # gave, after the SFT warm-up, boxes on no object for 72% of the test questions (the referring prompt
    # on the same objects: 29%), so RL had no object boxes to choose between (docs/zoomworld.md)
    box_step_share: float = 0.0
    # this share of the grounding examples asked the other way round, the box given and the object's colour
    # the answer ("What colour is the object in the region [0.12, ...]?"): LLaVA's recipe learns colour this
    # way before binding, which boxes alone never taught; drawn from its own RNG stream, so 0 keeps the draws
    colour_share: float = 0.0
    sincos_init: bool = False  # 2-D sin-cos vision positions and 1-D sin-cos coordinate tokens
    # continue from a checkpoint instead of random init (e.g. add a grounding stage to a perception-trained
    # base); with sincos_init only the coordinate tokens' OUTPUT rows are re-initialised: they were never
    # targets, while their input rows carry the box text of the answer-step dialogue
    init: str = ""
    spec: dict[str, Any] = field(default_factory=dict)  # TinySpec overrides (tests use a smaller model)
    # Gaussian soft targets over the box-coordinate tokens (sigma on the 0-100 scale of a box; 0 = the
    # model's own one-hot loss): with one token per value, a box one value off earns nothing under a one-hot
    # target, so a near miss teaches as little as a wild one
    coord_sigma: float = 0.0
    # the vision tower's learning rate as a multiple of `lr` (0 freezes it): a lever for a Qwen3-VL that
    # grounded first and then did not learn to read (5x did not unblock it: docs/zoomworld.md, Q4)
    vision_lr_scale: float = 1.0
    # a Trainer checkpoint (weights, optimizer, scheduler, RNG, data position) every save_every steps under
    # OUT/checkpoints; `resume` continues the newest one to the same weights an unbroken run ends with
    # (a run resumed after it finished, with the same settings, is left as it is)
    save_every: int = 100
    resume: bool = False

    BOUNDS: ClassVar[Bounds] = {
        "steps": (1, None),
        "batch_size": (1, None),
        "lr": (1e-12, None),
        "warmup_steps": (0, None),
        "min_lr_ratio": (0, 1),
        "weight_decay": (0, None),
        "seed": (0, None),
        "log_every": (1, None),
        "positive_only_fraction": (0, 1),
        "none_share": (0, 1),
        "ground_fraction": (0, 1),
        "box_step_share": (0, 1),
        "colour_share": (0, 1),
        "ground_holdout": (0, None),
        "coord_sigma": (0, None),
        "vision_lr_scale": (0, None),
        "save_every": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        # `spec.patch_size=4` arrives as text: read it as the TinySpec field it sets (train checks the rest)
        self.spec = read_scalars(dict(self.spec), TinySpec)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up from lr / warmup_steps, then cosine decay to min_lr_ratio x lr. transformers'
    `get_cosine_with_min_lr_schedule_with_warmup` is this curve one step later (it starts at 0); the
    committed bases were trained on this one, so it runs as a torch LambdaLR (bit-identical rates)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class PerceptionDraws:
    """Draws perception rows with a seeded RNG: from the positive ones (tile answers) only, or from all; with
    `none_share`, crop examples keep their share of the split and "none" gets none_share of them. Without
    it a draw is one `randrange` over the pool, as the committed bases were trained."""

    def __init__(self, rows: list[dict], none_share: float | None, rng: random.Random):
        self.rows, self.none_share, self.rng = rows, none_share, rng
        self.positives = [r for r in rows if r["answer"] != NONE]
        self.crops = [r for r in self.positives if r["kind"] == "crop"]
        self.nones = [r for r in rows if r["answer"] == NONE]
        self.others = [r for r in self.positives if r["kind"] != "crop"]
        self.crop_share = (len(self.crops) + len(self.nones)) / max(1, len(rows))
        if none_share is not None and not (self.crops and self.nones):
            raise ValueError(
                f"option none_share={none_share}: the pretrain split has {len(self.crops)} crop examples "
                f"with a tile answer and {len(self.nones)} with none; it needs both"
            )

    def _one(self, pool: list[dict]) -> dict:
        return pool[self.rng.randrange(len(pool))]

    def __call__(self, positive_only: bool) -> dict:
        if positive_only:
            return self._one(self.positives)
        if self.none_share is None:
            return self._one(self.rows)
        u = self.rng.random()
        if u >= self.crop_share and self.others:
            return self._one(self.others)
        return self._one(self.nones if u < self.crop_share * self.none_share else self.crops)


def build_example(row: dict, image, convention, input_size, crop_min_side: int, prompt: str):
    if row["kind"] == "ground":
        box = format_box(gold_box(row["bbox"], "xyxy"), convention, image.size, input_size(image))
        if row.get("colour"):
            return colour_request(box, image), phrase_parts(row["phrase"])[0]
        if row.get("box_step"):
            return box_step_request(row["phrase"], image), box
        return ground_request(row["phrase"], image), box
    if row["kind"] == "direct":
        return ChatRequest(direct_messages(prompt), [image]), row["answer"]
    focus = gold_box(row["focus"], "xyxy")
    step = FocusStep.from_box(focus, image, convention, input_size(image), crop_min_side)
    return step.request(row["question"], prompt, image), row["answer"]


def finished(cfg: PretrainConfig) -> bool:
    """OUT already holds the final weights of a run with exactly these settings (resume flag aside). A run
    made before an option existed ran with its default (new options default to the old behaviour)."""
    done = Path(cfg.out) / "provenance.json"
    if not done.is_file():
        return False
    defaults = json.loads(json.dumps(asdict(PretrainConfig())))
    ran = {**defaults, **json.loads(done.read_text()).get("config", {})}
    wanted = json.loads(json.dumps(asdict(cfg)))
    return {**ran, "resume": None} == {**wanted, "resume": None}


def train(cfg: PretrainConfig, progress: bool = True) -> Path:
    import torch

    from visrl_bench.core.registry import MODELS, TASKS

    if cfg.resume and finished(cfg):
        return Path(cfg.out)
    started = time.perf_counter()
    root = Path(cfg.data)
    world = read_json(root / "zoomworld.json", "ZoomWorld metadata (zoomworld.json)")
    crop_min_side = validate(ZoomWorldConfig, world["config"], str(root / "zoomworld.json")).crop_min_side
    rows = [r for _, r in iter_jsonl(root / "pretrain.jsonl", "ZoomWorld pretrain split")]
    ground = (
        [r for _, r in iter_jsonl(root / "ground.jsonl", "ZoomWorld ground split")]
        if cfg.ground_fraction > 0
        else []
    )
    holdout = held_out_ground(ground, cfg.ground_holdout)
    ground = ground[: len(ground) - len(holdout)]
    if cfg.ground_fraction > 0 and not ground:
        raise ValueError(f"{root / 'ground.jsonl'}: no grounding rows to train on (ground_fraction > 0)")
    prompt_template = TASKS.load("zoomworld").prompt_template

    # typed here, where TinySpec is known: `spec.patch_size=4` on the command line arrives as text
    spec = validate(
        TinySpec, {**asdict(zoomworld_spec(cfg.arch)), **cfg.spec}, "the pretraining config", "spec."
    )
    if cfg.init:
        from visrl_bench.models import load_model

        base = load_model(cfg.init, device="cpu")
        if base.arch != cfg.arch:
            raise ValueError(f"{cfg.init}: a {base.arch} checkpoint, not {cfg.arch}")
        model, processor = base.model, base.processor
        tiny = read_json(Path(cfg.init) / "visrl_tiny.json", "tiny model info")
        spec = TinySpec(**tiny["spec"])
        grounded = (tiny.get("config") or {}).get("ground_fraction") or 0
        if cfg.sincos_init and grounded > 0:  # the --grounding preset turns it on
            raise ValueError(
                f"{cfg.init} was already trained to ground (ground_fraction={grounded}): sincos_init would "
                "re-initialise its box-coordinate outputs; pass sincos_init=false to continue it"
            )
    else:
        model, processor = build_model(cfg.arch, spec, cfg.seed)
    if cfg.sincos_init:
        sincos_init(model, processor.tokenizer, cfg.arch, outputs_only=bool(cfg.init))
    # the eval adapter's own image preparation and box convention
    adapter_class = MODELS.load(cfg.arch)
    convention = adapter_class.default_convention
    prepare_image, input_size = adapter_class.image_preparation(processor)

    eos = processor.tokenizer.eos_token

    from PIL import Image

    @functools.lru_cache(maxsize=512)
    def image_of_path(path: str):
        return Image.open(root / path).convert("RGB")

    def image_of(row: dict):
        return image_of_path(row["image"])

    from torch.utils.data import IterableDataset
    from transformers import Trainer, TrainingArguments

    batcher = VisionBatcher(processor, prepare_image, eos, padding_side="left")

    def batches(start: int = 0):
        """One collated batch per step, its rows drawn by a seeded RNG: perception (positive crops only
        for the first positive_only_fraction of the steps), plus ground_fraction of grounding rows on the
        1 -> 2 -> all-objects curriculum. From `start` (a resumed run) the draws of the earlier steps are
        replayed without building their batches, so step k sees the same rows in every run."""
        rng = random.Random(cfg.seed)
        # its own stream: without box-step examples the draws are those of the runs that predate them
        phrasing = random.Random(f"box-step-{cfg.seed}")
        asking = random.Random(f"colour-{cfg.seed}")
        draw = PerceptionDraws(rows, cfg.none_share, rng)
        first, second = cfg.ground_curriculum
        ground_pools = [
            [r for r in ground if r["objects"] <= 1],
            [r for r in ground if r["objects"] <= 2],
            ground,
        ]
        n_ground = round(cfg.ground_fraction * cfg.batch_size)
        for step in range(cfg.steps):
            positive_only = step < cfg.positive_only_fraction * cfg.steps
            stage = 0 if step < first * cfg.steps else 1 if step < second * cfg.steps else 2
            gpool = ground_pools[stage] or ground
            batch_rows = [gpool[rng.randrange(len(gpool))] for _ in range(n_ground)]
            if cfg.box_step_share:
                batch_rows = [
                    {**r, "box_step": True} if phrasing.random() < cfg.box_step_share else r
                    for r in batch_rows
                ]
            if cfg.colour_share:
                batch_rows = [
                    {**r, "colour": True} if asking.random() < cfg.colour_share else r for r in batch_rows
                ]
            batch_rows += [draw(positive_only) for _ in range(cfg.batch_size - n_ground)]
            if step < start:
                continue
            pairs = [
                build_example(
                    r,
                    image_of(r),
                    convention,
                    input_size,
                    crop_min_side,
                    prompt_template.format(question=r.get("question", "")),
                )
                for r in batch_rows
            ]
            yield batcher.sft([Completion(r.messages, r.images, answer) for r, answer in pairs])

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    saves = out / "checkpoints"
    resume, so_far = resume_state(saves, model) if cfg.resume else (None, {})

    class Batches(IterableDataset):
        def __iter__(self):
            return batches(so_far.get("step", 0))

    # weight decay on every parameter (Trainer's default optimizer exempts biases and norms); the vision
    # tower (the adapter's `vision_module`) in a group of its own, at its own rate or frozen
    tower = f".{adapter_class.vision_module}."
    vision = [p for n, p in model.named_parameters() if tower in f".{n}"]
    rest = [p for n, p in model.named_parameters() if tower not in f".{n}"]
    for p in vision:
        p.requires_grad_(cfg.vision_lr_scale > 0)
    groups = [{"params": rest}]
    if vision and cfg.vision_lr_scale > 0:
        groups.append({"params": vision, "lr": cfg.lr * cfg.vision_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)
    args = TrainingArguments(
        max_steps=cfg.steps,
        per_device_train_batch_size=1,  # one item of the stream is one whole batch
        max_grad_norm=1.0,
        logging_steps=cfg.log_every,
        logging_first_step=True,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500,
        save_total_limit=1,
        ignore_data_skip=True,  # the stream itself starts at the checkpoint's step (see batches)
        output_dir=str(saves),
        report_to="none",
        seed=cfg.seed,
        remove_unused_columns=False,
        disable_tqdm=not progress,
        accelerator_config={"dispatch_batches": False},  # each item is a whole batch: never re-slice it
        use_cpu=True,  # the bases are ~1M parameters; on CPU every machine trains them bit for bit alike
    )
    trainer_class = Trainer
    if cfg.coord_sigma > 0:
        soft = SoftCoordinateLoss(processor.tokenizer, cfg.arch, len(processor.tokenizer), cfg.coord_sigma)

        class SoftTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs.pop("labels")
                outputs = model(**inputs)
                loss = soft(outputs.logits, labels)
                return (loss, outputs) if return_outputs else loss

        trainer_class = SoftTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Batches(),
        data_collator=lambda items: items[0],
        optimizers=(optimizer, scheduler),
    )
    trainer.model_accepts_loss_kwargs = False  # the model's own mean over answer tokens, as before
    route_logs(trainer, out, resumed_at=so_far.get("step"))
    trainer.add_callback(progress_record(so_far.get("sittings", []), started))
    trainer.train(resume_from_checkpoint=resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    sittings = [*so_far.get("sittings", []), round(time.perf_counter() - started, 1)]
    info = {
        "arch": cfg.arch,
        "trained_on": "zoomworld pretrain",
        "zoomworld_seed": world["seed"],
        "zoomworld_version": world["version"],
        "config": asdict(cfg),
        "spec": asdict(spec),
        "final_loss": losses[-1],  # Trainer's mean over the last logging window
        "first_loss": losses[0],  # the first step's
        "steps": trainer.state.global_step,
        "seconds": round(sum(sittings), 1),  # every sitting of a resumed run, each up to its last save
        "sittings": sittings,
        "resumed_from": resume,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    save_checkpoint(model, processor, out, info)
    provenance = out / "provenance.json"
    provenance.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")  # the run is finished
    if saves.is_dir():  # the final weights and provenance are written: the resume points are spent
        shutil.rmtree(saves)
    if holdout:
        info["ground_holdout"] = grounding_iou(out, root, holdout)
        provenance.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out
