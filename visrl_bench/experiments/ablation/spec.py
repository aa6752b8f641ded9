"""The grid's specification: its rows (what each configuration trains), presets, the config and its loader."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.errors import Bounded, Bounds, VisrlError
from visrl_bench.core.rundir import weights_fingerprint

CELL_FILE = "cell.json"
ERROR_FILE = "error.json"
CONFIG_FILE = "ablation.json"


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    start: str = "sft"  # "base" | "sft" | "sft_more"
    mode: str = "cot"
    trainer: str | None = None  # None: no RL rounds; "step_dpo" | "dpo" (rounds of pairs) | "grpo"
    generate: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    # the row needs a base whose adapter passes images through TRL's tool loop (`tool_images`); on other
    # bases the grid has no such cell
    tool_images: bool = False

    def applies_to(self, base_path: str) -> bool:
        return not self.tool_images or _takes_tool_images(base_path)


@cache
def _takes_tool_images(base_path: str) -> bool:
    from visrl_bench.core.registry import MODELS
    from visrl_bench.models import read_arch

    try:
        arch = read_arch(base_path)
    except VisrlError:  # no readable checkpoint: keep the cell, whose run then says what is wrong
        return True
    return bool(getattr(MODELS.load(arch), "tool_images", False))


ROWS: tuple[Row, ...] = (
    Row("base_direct", "the base model answering directly (one turn, no box)", start="base", mode="direct"),
    Row("sft", "SFT warm-up on the few box-annotated questions (`sft` split), visual CoT"),
    Row(
        "sft_more_data",
        "SFT warm-up on more annotated data: the `sft` split plus the RL questions WITH their gold boxes, "
        "same number of steps",
        start="sft_more",
    ),
    Row(
        "trajectory_dpo",
        "trajectory-level DPO on self-generated pairs, no diversity controller, no difficulty filter",
        trainer="dpo",
        generate={"diversity": False, "filter": False},
    ),
    Row(
        "visrl",
        "full VisRL: step-level DPO, diversity controller on, difficulty filter on",
        trainer="step_dpo",
    ),
    Row("wo_step_level", "w/o step-level: trajectory-level DPO on the full method's pairs", trainer="dpo"),
    Row("wo_diversity", "w/o diversity controller", trainer="step_dpo", generate={"diversity": False}),
    Row("wo_filter", "w/o difficulty filter", trainer="step_dpo", generate={"filter": False}),
    Row(
        "swapped_labels",
        "control: the full method with each pair's chosen/rejected swapped by a seeded coin "
        "(must NOT improve)",
        trainer="step_dpo",
        dpo={"swap_labels": True},
    ),
)
# the GRPO family: not in the default rows (the quick preset stays within its 10 minutes); `full` runs them
GRPO_ROWS: tuple[Row, ...] = (
    Row(
        "grpo",
        "GRPO on the box step from the SFT warm-up: reward = the task's metric on the crop's answer",
        trainer="grpo",
    ),
    Row(
        "grpo_zoom",
        "GRPO on whole multi-turn zoom trajectories (up to 3 crops, TRL's tool loop), evaluated in zoom "
        "mode; Qwen-style processors only (no cell on other bases)",
        mode="zoom",
        trainer="grpo",
        grpo={"rollout": "zoom"},
        tool_images=True,
    ),
    Row(
        "grpo_permuted_rewards",
        "control: GRPO with each group's rewards shuffled among its completions (must NOT improve)",
        trainer="grpo",
        grpo={"permute_rewards": True},
    ),
)
ROW_BY_NAME = {r.name: r for r in (*ROWS, *GRPO_ROWS)}
REFERENCE_ROW = "visrl"

# (claim, the row the full method is compared with, the direction the paper reports)
FINDINGS = (
    ("step-level DPO beats trajectory-level DPO", "wo_step_level", +1),
    ("the diversity controller helps", "wo_diversity", +1),
    ("the difficulty filter helps", "wo_filter", +1),
    ("RL beats SFT with more annotated data", "sft_more_data", +1),
    ("RL improves on its SFT warm-up", "sft", +1),
    ("the gain comes from the reward (full method beats the swapped-label control)", "swapped_labels", +1),
)

# the GRPO family against the rest, each (claim, row a, row b) judged by a − b paired over the questions, per
# base; the last is the control: a must not be above b
GRPO_FINDINGS = (
    ("box-step GRPO against step-DPO (`visrl`) at the same sampled boxes", "grpo", "visrl"),
    ("box-step GRPO against its SFT warm-up", "grpo", "sft"),
    ("multi-turn zoom GRPO against box-step GRPO", "grpo_zoom", "grpo"),
    ("control: GRPO with permuted rewards against SFT", "grpo_permuted_rewards", "sft"),
)

PRESETS: dict[str, dict[str, Any]] = {
    # both tiny architectures, every row, one seed, one round: the <= 10 min CPU smoke of the whole table.
    # DPO's NLL term on the chosen replies at weight 1 (RPO-style): at 0.1, step-DPO on the calibrated LLaVA
    # base broke 58.6% of its boxes into answer words (docs/zoomworld.md). One round does not move greedy
    # boxes (full's settings here took 15 min and did not either, at this preset's 160 questions)
    "quick": {
        "seeds": [0],
        "rounds": 1,
        "sft": {"lora": False, "lr": 1e-3, "max_steps": 80, "batch_size": 32, "logging_steps": 20},
        "generate": {"k": 6, "limit": 160, "batch_size": 96},
        "dpo": {"lora": False, "lr": 3e-4, "beta": 0.1, "nll_weight": 1.0, "batch_size": 16, "epochs": 1},
    },
    # more rounds, more data, 3 seeds. Two rounds of three passes: one round, however many passes, never
    # moved greedy boxes. A box is "right" only when every sampled answer from its crop is: once round 1
    # teaches the answer step to guess where its crop missed (right a quarter of the time), a missed box
    # would otherwise count as right and round 2's pairs lose their direction. 600 RL questions: at 200 the
    # same two rounds lifted focus by +1.2 (CI across 0), at 600 by +5.4 (docs/zoomworld.md: H3, I10, K1, K3)
    "full": {
        "seeds": [0, 1, 2],
        "rounds": 2,
        "sft": {"lora": False, "lr": 1e-3, "max_steps": 150, "batch_size": 32, "logging_steps": 25},
        "generate": {"k": 8, "limit": 600, "batch_size": 96, "right_threshold": 1.0},
        "dpo": {"lora": False, "lr": 3e-4, "beta": 0.1, "nll_weight": 1.0, "batch_size": 16, "epochs": 3},
        "rows": [r.name for r in (*ROWS, *GRPO_ROWS)],
        # about the sampling budget of the DPO rows' rounds (600 questions x 8 boxes, twice)
        "grpo": {
            "lora": False,
            "lr": 1e-4,
            "num_generations": 8,
            "batch_size": 32,
            "limit": 600,
            "epochs": 2,
        },
    },
}


@dataclass
class AblationConfig(Bounded):
    task: str = "zoomworld"
    data: str = ""
    zoomworld_seed: int | None = None  # generate ZoomWorld into `data` first when it is not there
    task_options: dict[str, Any] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)  # name -> local checkpoint dir
    rows: list[str] = field(default_factory=lambda: [r.name for r in ROWS])
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "runs/ablation"
    sft_split: str = "sft"
    more_data_splits: list[str] = field(default_factory=lambda: ["rl"])  # annotated extra for sft_more_data
    rl_split: str = "rl"
    eval_split: str = "test"
    rounds: int = 1
    reference: str = "sft"  # each DPO round's reference model: "sft" | "previous"
    sft: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval_limit: int | None = None
    eval_batch_size: int = 64
    # each cell's final model also answers the eval questions from the gold box's crop (gt_box): a trained
    # model that learned where to look but forgot how to read shows here, not as a mystery in the table
    gold_check: bool = True
    max_new_tokens: int = 32
    leaderboard: str | None = None  # OUT (no suffix): OUT.csv/.md/.png once the grid is complete
    title: str = "Ablation"
    device: str = "auto"

    BOUNDS: ClassVar[Bounds] = {
        "zoomworld_seed": (0, None),
        "rounds": (1, None),
        "eval_limit": (1, None),
        "eval_batch_size": (1, None),
        "max_new_tokens": (1, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise VisrlError(f"option seeds must be whole numbers >= 0, got {self.seeds!r}")

    def cells(self) -> list[tuple[Row, str, int]]:
        """The grid in run order: lanes (base, seed) outermost so a lane's shared work is reused at once.
        A row that does not apply to a base (`Row.applies_to`) has no cell there."""
        return [(ROW_BY_NAME[r], b, s) for b in self.bases for s in self.seeds for r in self.lane_rows(b)]

    def lane_rows(self, base: str) -> list[str]:
        """The rows a lane of `base` runs, in table order."""
        return [r for r in self.rows if ROW_BY_NAME[r].applies_to(self.bases[base])]

    def cell_dir(self, row: str, base: str, seed: int) -> Path:
        return Path(self.out) / "cells" / row / base / f"seed{seed}"

    def identity(self) -> dict[str, Any]:
        """What a finished cell's meaning depends on: the grid's extent (rows, bases, seeds) may grow."""
        d = asdict(self)
        for k in ("rows", "bases", "seeds", "leaderboard", "title", "device", "out"):
            d.pop(k)
        if not d["grpo"]:  # grids without GRPO rows keep the identity they had before the GRPO family
            d.pop("grpo")
        d["bases_resolved"] = {b: str(Path(p).resolve()) for b, p in self.bases.items()}
        d["weights"] = {b: weights_fingerprint(p) for b, p in self.bases.items()}  # a base retrained in place
        return d


def load_ablation_config(
    path: str | Path | None, preset: str | None = None, overrides: list[str] | None = None
) -> AblationConfig:
    """Defaults < preset < YAML file < key=value overrides (`sft.lr=1e-4` reaches into a stage). Every key,
    the stages' included, is checked here: a typo must fail before the first cell, not an hour in."""
    from visrl_bench.core.config import load_config
    from visrl_bench.datagen.pairs import GenerateConfig
    from visrl_bench.trainers.grpo import GRPOConfig
    from visrl_bench.trainers.sft import SFTConfig
    from visrl_bench.trainers.step_dpo import StepDPOConfig

    if preset is not None and preset not in PRESETS:
        raise VisrlError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    where = " and ".join(([str(path)] if path else []) + (["the command line"] if overrides else []))
    where = where or "ablation config"
    cfg = load_config(AblationConfig, path, overrides, base=PRESETS.get(preset or ""), source=where)
    bad = [r for r in cfg.rows if r not in ROW_BY_NAME]
    if bad:
        raise VisrlError(f"unknown row(s) {', '.join(bad)}; rows: {', '.join(ROW_BY_NAME)}")
    if not cfg.bases:
        raise VisrlError(f"{where}: `bases` names no base model")
    if not cfg.data:
        raise VisrlError(f"{where}: `data` is empty")
    from visrl_bench.core.registry import TASKS
    from visrl_bench.task import check_task_options, check_training_split

    # the stages read their own values ("1e-4" -> float) when they run; here they are only checked
    stages = (("sft", SFTConfig), ("generate", GenerateConfig), ("dpo", StepDPOConfig), ("grpo", GRPOConfig))
    loaded = {
        stage: load_config(config_class, source=where, prefix=f"{stage}.", **getattr(cfg, stage))
        for stage, config_class in stages
    }
    rows = [ROW_BY_NAME[r] for r in cfg.rows]
    # the splits the selected rows train on, each under the flag of the stage that reads it
    uses = [
        ("sft_split", [cfg.sft_split], "sft", any(r.start in ("sft", "sft_more") for r in rows)),
        ("more_data_splits", cfg.more_data_splits, "sft", any(r.start == "sft_more" for r in rows)),
        ("rl_split", [cfg.rl_split], "generate", any(r.trainer in ("dpo", "step_dpo") for r in rows)),
        ("rl_split", [cfg.rl_split], "grpo", any(r.trainer == "grpo" for r in rows)),
    ]
    try:  # the task, its options and the splits trained on, before any cell (each would fail alike)
        TASKS.check_options(cfg.task, cfg.task_options, prefix="task_options.")
        check_task_options(cfg.task_options)
        for name, splits, stage, used in uses:
            for split in splits if used else []:
                check_training_split(cfg.task, split, loaded[stage].train_on_eval_split, f"option {name}")
    except VisrlError as exc:
        raise VisrlError(f"{where}: {exc}") from None
    return cfg
