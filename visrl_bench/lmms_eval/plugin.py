"""lmms-eval's entry point (group `lmms_eval.models`): registers `visrl_cot` without importing any model code.

lmms-eval 0.7 loads every manifest of the group at start-up and one failing import drops them all, so this
module imports nothing but lmms-eval's manifest class, and only when lmms-eval asks.
"""

from __future__ import annotations

MODEL_ID = "visrl_cot"
CLASS_PATH = "visrl_bench.lmms_eval.model.VisrlCoT"


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("visrl_bench",))
