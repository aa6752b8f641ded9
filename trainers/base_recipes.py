"""The stage recipes of the committed ZoomWorld base models: PretrainConfig settings per stage and, per
architecture, the stages `zoomworld baselines --from-scratch` trains in order (docs/zoomworld.md)."""

from __future__ import annotations

from typing import Any

# The committed ZoomWorld bases are trained in stages (BASE_RECIPES, docs/zoomworld.md). LLaVA's stage 1,
# grounding FROM SCRATCH with sin-cos positions: a perception-trained vision tower never needed spatial
# position embeddings, and grounding continued from one did not leave the box prior (v1: held-out IoU 0.005).
# One-object scenes for the first 40% of the steps (the screen: 0.46 IoU after 600 such steps), then 1-2, then
# all sizes.
GROUNDING_STAGE: dict[str, Any] = {
    "steps": 1500,
    "ground_fraction": 1.0,
    "ground_curriculum": (0.4, 0.6),
    "positive_only_fraction": 0.0,
    "sincos_init": True,
    "log_every": 50,
}
# Stage 2, perception continuing from stage 1 (`init`), grounding replayed in a quarter of every batch (all
# scene sizes) so that learning to read does not wash out where things are.
PERCEPTION_STAGE: dict[str, Any] = {
    "steps": 1500,
    "ground_fraction": 0.25,
    "ground_curriculum": (0.0, 0.0),
    "positive_only_fraction": 0.25,
    "log_every": 50,
}

# Stage 3, calibration: the same mixture with "none" at 40% of the crop examples instead of the split's 60%,
# at a lower rate. After stage 2 the LLaVA base answered "none" for 18% of the GOLD crops (every other answer
# right: it reads, but under doubt calls the crop someone else's); 300 such steps took gt_box from 81.9% to
# 99.5% with random crops still "none" (docs/zoomworld.md).
CALIBRATION_STAGE: dict[str, Any] = {
    "steps": 300,
    "lr": 3e-4,
    "ground_fraction": 0.25,
    "ground_curriculum": (0.0, 0.0),
    "positive_only_fraction": 0.0,
    "none_share": 0.4,
    # half of the replayed grounding asked as the box step: the SFT warm-up then starts from a base that
    # boxes objects for the task's question
    "box_step_share": 0.5,
    "log_every": 50,
}
# Stage 4, the box step: the same calibrated mixture, half of every batch grounding asked as Visual CoT's box
# step. Half the calibration stage's replay asked so (1,200 examples) left the box step far behind the
# referring prompt (1-object IoU 0.17 vs 0.75); 300 steps of this took it to 0.70 (docs/zoomworld.md).
BOX_STEP_STAGE: dict[str, Any] = {**CALIBRATION_STAGE, "ground_fraction": 0.5, "box_step_share": 1.0}
# Qwen2-VL's tiny base learns no position in any screened geometry (its vision tower has only relative
# positions; docs/zoomworld.md), and a grounding stage stuck at the box prior is a bad start for reading
# (gt_box 11.4%). So it reads first, from scratch, then learns the box format (its grounding is the prior)
# in a stage that also calibrates "none".
QWEN_PERCEPTION_STAGE: dict[str, Any] = {
    "steps": 1200,
    "ground_fraction": 0.0,
    "positive_only_fraction": 0.25,
    "log_every": 50,
}
QWEN_BOX_STAGE: dict[str, Any] = {
    "steps": 400,
    "ground_fraction": 0.5,
    "ground_curriculum": (0.0, 0.0),
    "positive_only_fraction": 0.0,
    "none_share": 0.4,
    "sincos_init": True,  # continuing a base that never grounded: re-initialises the coordinate outputs only
    "log_every": 50,
}

# The third recipe: grounding, perception, calibration, the box step. The committed Qwen3-VL base's.
THIRD_RECIPE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("grounding", GROUNDING_STAGE),
    ("perception", PERCEPTION_STAGE),
    ("calibration", CALIBRATION_STAGE),
    ("box_step", BOX_STEP_STAGE),
)

# The fifth recipe (LLaVA): colour first, then binding. Of two objects, the third recipe's base boxed one at
# random (selection 0.50), and no grounding variant changed that: its image tokens carried no usable colour
# (asked for one, it answered "pink" for every object). Colour is learnable from the view when the colour
# question ("What colour is the object in the region [box]?") is the whole batch: the loss sits at the prior
# for ~300 steps, then falls (lone objects named right 36% after 400 steps, 67% after 600 more on 1-2
# objects). Grounding then, with a quarter of its examples still the colour question (93% of lone objects
# named right, selection still 0.54), and a long phase on 1-2-object scenes: selection 0.57 after 1,000
# steps, 0.68 after 1,500 more, the loss still falling — the first base that picks the named object. These
# five stages are the screens X1, X2, X3, Y2, Y3 of docs/zoomworld.md, setting for setting.
COLOUR_FIRST_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "colour",
        {**GROUNDING_STAGE, "steps": 400, "colour_share": 1.0, "ground_curriculum": (1.0, 1.0)},
    ),
    (
        "colour_two",
        {
            **GROUNDING_STAGE,
            "steps": 600,
            "colour_share": 1.0,
            "ground_curriculum": (0.5, 1.0),
            "warmup_steps": 20,
            "sincos_init": False,  # the colour stage set them; its coordinate outputs were never trained
        },
    ),
    ("grounding", {**GROUNDING_STAGE, "colour_share": 0.25, "sincos_init": False}),
    (
        "binding",
        {
            **GROUNDING_STAGE,
            "steps": 1000,
            "colour_share": 0.25,
            "ground_curriculum": (0.0, 1.0),  # 1-2-object scenes only
            "warmup_steps": 20,
            "sincos_init": False,
        },
    ),
)
BINDING_MORE_STAGE: dict[str, Any] = {**COLOUR_FIRST_STAGES[-1][1], "steps": 1500}
# the binding stages see 1-2-object scenes only: a base without this stage boxed no object at all for about
# half of the 3-5-object test questions (its held-out 3-5-object IoU 0.21), and RL can only teach which
# object to pick among the ones a model boxes. 1,500 steps on every scene size took the 3-5-object IoU from
# 0.105 to 0.446 and 2-object selection from 0.685 to 0.914 (screen J1, docs/zoomworld.md)
CROWDED_STAGE: dict[str, Any] = {**BINDING_MORE_STAGE, "ground_curriculum": (0.0, 0.0)}

LLAVA_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    *COLOUR_FIRST_STAGES,
    ("binding_more", BINDING_MORE_STAGE),
    ("crowded", CROWDED_STAGE),
    *THIRD_RECIPE[1:],
)

# What `zoomworld baselines --from-scratch` trains, per architecture: (stage name, settings) in order, each
# stage continuing from the one before; the last writes the committed base.
BASE_RECIPES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "llava": LLAVA_STAGES,
    "qwen2_vl": (("perception", QWEN_PERCEPTION_STAGE), ("boxes", QWEN_BOX_STAGE)),
    # Qwen3-VL's vision tower, like LLaVA's, adds learned positions to its patches (a grid stretched over
    # each image: fractional positions), sin-cos initialised. LLaVA's stages with soft coordinate targets:
    # one-hot over Qwen's 1001 values, grounding stayed at the box prior; with sigma 1 (ten of Qwen's values,
    # one of LLaVA's) it left it within 600 steps (docs/zoomworld.md, D_qwen3_sigma1)
    "qwen3_vl": tuple((name, {**stage, "coord_sigma": 1.0}) for name, stage in THIRD_RECIPE),
}
