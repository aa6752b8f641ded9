"""The parts every recipe shares: configs as data, loading the policy through the eval adapter, LoRA on the
language model only, TRL arguments, a CSV log, resuming from a Trainer checkpoint, saving a checkpoint
`eval` loads, merging LoRA.

A recipe is a config dataclass plus a `run(cfg)`; `Recipe` binds them for the registry and the CLI.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.errors import Bounded, Bounds, DataError
from visrl_bench.core.io import read_json

# LoRA goes on the language model's projections only; VisRL kept the vision tower frozen, and a bare
# ["q_proj", ...] list would also hit LLaVA's CLIP layers
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
WEIGHT_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.pt",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
)


@dataclass
class TrainConfig(Bounded):
    """Options every recipe takes."""

    model: str = ""  # a local checkpoint dir (what `eval` loads)
    out: str = ""
    arch: str | None = None
    lora: bool = True  # False: full fine-tuning of the language model (+ projector)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = LM_LORA_TARGETS
    train_vision: bool = False
    lr: float = 2e-4
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 5
    save_steps: int = 0  # > 0: a resumable checkpoint every N steps
    resume: bool = False  # continue from the newest checkpoint in `out`
    activation_checkpointing: bool = False  # saves memory on big models; slower
    report_to: str = "none"  # "tensorboard" too, when installed; the CSV log is always written
    device: str = "auto"
    progress: bool = True

    BOUNDS: ClassVar[Bounds] = {
        "lora_r": (1, None),
        "lora_alpha": (0, None),
        "lora_dropout": (0, 1),
        "lr": (1e-12, None),
        "max_steps": (-1, None),
        "epochs": (1e-9, None),
        "batch_size": (1, None),
        "grad_accum": (1, None),
        "warmup_ratio": (0, 1),
        "weight_decay": (0, None),
        "max_grad_norm": (0, None),
        "seed": (0, None),
        "logging_steps": (1, None),
        "save_steps": (0, None),
    }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recipe:
    name: str
    config_class: type
    run: Callable[..., Path]
    description: str = ""


# --- the policy ------------------------------------------------------------------------------------------
def load_policy(cfg: TrainConfig, path: str | None = None):
    """The eval adapter for the checkpoint (its model, processor, image preparation and box convention),
    with the vision tower frozen and LoRA attached as configured."""
    from visrl_bench.core.distributed import device_for
    from visrl_bench.models import load_model

    adapter = load_model(path or cfg.model, cfg.arch, device=device_for(cfg.device))
    model = adapter.model
    model.train()
    if not cfg.train_vision:
        for name, param in model.named_parameters():
            if f".{adapter.vision_module}." in f".{name}":
                param.requires_grad_(False)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_targets,
            task_type="CAUSAL_LM",
        )
        adapter.model = get_peft_model(model, lora)
    return adapter


def trainable_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def trl_arguments(config_class, cfg: TrainConfig, **extra: Any):
    """TRL's config (SFTConfig / DPOConfig) from ours; data handling stays with our collators."""
    import torch

    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    return config_class(
        output_dir=cfg.out,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs,
        # transformers 5 reads a float < 1 here as a ratio (its warmup_ratio is deprecated)
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type="cosine",
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_only_model=False,  # optimizer + RNG states: a resumed run continues the same run
        report_to=[] if cfg.report_to in ("none", "") else [cfg.report_to],
        remove_unused_columns=False,
        use_cpu=on_cpu,
        bf16=not on_cpu and torch.cuda.is_bf16_supported(),
        activation_checkpointing=cfg.activation_checkpointing,
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        # data parallel: every trainable parameter takes part in each step (the frozen vision tower has no
        # gradient to reduce), so DDP need not walk the graph looking for unused ones
        ddp_find_unused_parameters=False,
        **extra,
    )


def route_logs(trainer, out: Path, resumed_at: int | None = None) -> None:
    """Every log event goes to OUT/log.csv; the terminal keeps a progress bar (with the last loss) or nothing.
    A run resumed at step `resumed_at` keeps the log's rows up to that step (later ones are logged again).

    transformers' Trainer prints each event's dict: through its progress bar's `write`, or, with the bar
    off, through PrinterCallback. In a grid of cells those dicts scroll over the grid's own progress bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly)
    trainer.add_callback(CSVLog(out / "log.csv", resumed_at))


class CSVLog:
    """A TrainerCallback writing every log event to DIR/log.csv (columns grow as new keys appear). A row
    with the known columns is appended; only a new column (an eval metric's first appearance, say) rewrites
    the file with the wider header, so a long run does not rewrite its whole log at every step."""

    def __new__(cls, path: Path, resumed_at: int | None = None):
        from transformers import TrainerCallback

        class _CSVLog(TrainerCallback):
            def __init__(self):
                self.path = path
                self.rows: list[dict] = []
                self.keys: list[str] = []
                if resumed_at is not None and path.is_file():
                    with path.open(newline="") as f:
                        reader = csv.DictReader(f)
                        self.keys = list(reader.fieldnames or [])
                        self.rows = [r for r in reader if int(r["step"]) <= resumed_at]
                    with path.open("w", newline="") as f:  # drop what the lost sitting logged after its save
                        writer = csv.DictWriter(f, fieldnames=self.keys)
                        writer.writeheader()
                        writer.writerows(self.rows)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or not state.is_world_process_zero:
                    return
                row = {"step": state.global_step, **{k: v for k, v in logs.items()}}
                self.rows.append(row)
                new = [k for k in row if k not in self.keys]
                if self.keys and not new:
                    with self.path.open("a", newline="") as f:
                        csv.DictWriter(f, fieldnames=self.keys).writerow(row)
                    return
                self.keys += new
                with self.path.open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.keys)
                    writer.writeheader()
                    writer.writerows(self.rows)

        return _CSVLog()


def resume_point(cfg: TrainConfig, model) -> str | None:
    """The newest checkpoint in `out` (with `resume`), its full-model weights already in `model`.

    Trainer's own resume reads model.safetensors with load_state_dict, but transformers saves LLaVA and
    Qwen-VL under their original checkpoint key names: every key misses and the run would silently restart
    from the base weights. `from_pretrained` applies the key mapping; a LoRA checkpoint (adapter only)
    is left to Trainer, whose adapter loading is unaffected."""
    return load_last_checkpoint(Path(cfg.out), model) if cfg.resume else None


def load_last_checkpoint(folder: Path, model) -> str | None:
    """The newest `checkpoint-N` in `folder` with its full-model weights loaded into `model` (see
    resume_point), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if checkpoint and not hasattr(model, "peft_config"):
        saved = type(model).from_pretrained(checkpoint, local_files_only=True, dtype=model.dtype)
        model.load_state_dict(saved.state_dict())
    return checkpoint


# a pretraining checkpoint's progress record: its step and the seconds of every sitting so far
PROGRESS = "visrl_progress.json"


def progress_record(earlier: list[float], started: float):
    """A TrainerCallback that writes, into each checkpoint it follows, the step and the seconds of every
    sitting so far: a resumed run's provenance then counts the whole run's time."""
    from transformers import TrainerCallback

    class ProgressRecord(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            now = round(time.perf_counter() - started, 1)
            record = {"step": state.global_step, "sittings": [*earlier, now]}
            (folder / PROGRESS).write_text(json.dumps(record) + "\n")

    return ProgressRecord()


def resume_state(saves: Path, model) -> tuple[str | None, dict[str, Any]]:
    """The newest checkpoint under `saves` (its weights loaded into `model`) and its progress record;
    (None, {}) when there is none: the run starts from step 0."""
    checkpoint = load_last_checkpoint(saves, model)
    if checkpoint is None:
        return None, {}
    return checkpoint, read_json(Path(checkpoint) / PROGRESS, "pretraining progress record")


def copy_processor_files(base: str | Path, out: str | Path) -> None:
    """Tokenizer, processor and chat-template files of the base checkpoint (not its weights)."""
    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skip = {p.name for pattern in WEIGHT_FILES for p in base.glob(pattern)}
    for f in base.iterdir():
        if f.is_file() and f.name not in skip and not f.name.startswith(("loss", "provenance", "log")):
            shutil.copy2(f, out / f.name)


def save_model(model, base: str | Path, out: str | Path, info: dict[str, Any]) -> Path:
    """A plain checkpoint `eval` loads: LoRA merged into the weights, the base's processor files. With
    several processes the main one merges and writes it, once; every rank returns when it is on disk
    (a next step loads it from there)."""
    from visrl_bench.core.distributed import barrier, ranks

    out = Path(out)
    if ranks().main:
        _write_model(model, base, out, info)
    barrier()
    return out


def _write_model(model, base: str | Path, out: Path, info: dict[str, Any]) -> None:
    from visrl_bench.models.tiny import clear_weights

    out.mkdir(parents=True, exist_ok=True)
    clear_weights(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    copy_processor_files(base, out)
    (out / "provenance.json").write_text(
        json.dumps(
            {**info, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
            indent=2,
            sort_keys=True,
            default=str,
        )
        + "\n"
    )


def export(adapter_dir: str | Path, base: str | Path, out: str | Path) -> Path:
    """Merge a saved LoRA adapter into its base checkpoint: a plain checkpoint for `eval`."""
    import transformers
    from peft import PeftModel

    from visrl_bench.core.registry import MODELS
    from visrl_bench.models import read_arch

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise DataError(adapter_dir, "no adapter_config.json: not a LoRA adapter directory")
    arch = read_arch(base)
    cls = getattr(transformers, MODELS.load(arch).model_class)
    model = cls.from_pretrained(base, local_files_only=True, use_safetensors=True)
    model = PeftModel.from_pretrained(model, adapter_dir)
    return save_model(model, base, out, {"exported_from": str(adapter_dir), "base": str(base)})


def fit(trainer, adapter, cfg: TrainConfig, name: str, started: float, facts: Callable[[], dict]) -> Path:
    """What every recipe does once its TRL trainer is built: train (from the newest checkpoint in `out`
    when resuming), save OUT/final as a checkpoint `eval` loads, and write train_summary.json with the
    fields every recipe records around the recipe's own `facts` (read after training). Log events go to
    OUT/log.csv (`route_logs`)."""
    out = Path(cfg.out)
    route_logs(trainer, out)
    resume = resume_point(cfg, adapter.model)
    result = trainer.train(resume_from_checkpoint=resume)
    trained, total = trainable_parameters(adapter.model)
    final = out / "final"
    save_model(adapter.model, cfg.model, final, {"trainer": name, "config": cfg.as_dict()})
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {"trainer": name, "model": str(final), **facts(), "steps": trainer.state.global_step}
    summary |= {"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}
    summary |= {
        "train_loss": result.training_loss,
        "trainable_parameters": trained,
        "parameters": total,
        "resumed_from": resume,
        "seconds": round(time.perf_counter() - started, 1),
        "config": cfg.as_dict(),
    }
    write_summary(out, summary)
    return final


def write_summary(out: Path, info: dict[str, Any]) -> None:
    from visrl_bench.core.distributed import execution, ranks

    if not ranks().main:
        return
    info = {**info, "execution": execution()}
    (out / "train_summary.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
