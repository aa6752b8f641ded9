"""Qwen2.5-VL: Qwen2-VL's processor and dialogue, a windowed-attention vision tower, and boxes in absolute
pixels of its resized input (resized_pixel)."""

from __future__ import annotations

from typing import Any, ClassVar

from visrl_bench.core.boxes import BoxConvention
from visrl_bench.models.hf.qwen2_vl import SHRUNK_TEXT, Qwen2VLAdapter
from visrl_bench.models.tiny import TinySpec


class Qwen25VLAdapter(Qwen2VLAdapter):
    arch = "qwen2_5_vl"
    default_convention = BoxConvention.RESIZED_PIXEL
    model_class = "Qwen2_5_VLForConditionalGeneration"

    shrink_rule: ClassVar[dict[str, Any]] = {
        **SHRUNK_TEXT,
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 128,
            "fullatt_block_indexes": [1],  # the real model's every-8th full-attention block, at depth 2
        },
    }

    @classmethod
    def tiny_model(cls, text: dict, spec: TinySpec, specials: dict[str, int]):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        patch, merge = spec.qwen_patch, spec.qwen_merge
        # window_size must be a multiple of patch x merge
        vision = dict(
            depth=spec.vision_layers + 1,
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_heads=spec.heads,
            out_hidden_size=spec.text_hidden,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
            window_size=patch * merge * 2,
            fullatt_block_indexes=[spec.vision_layers],
        )
        return Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **specials)
        )
