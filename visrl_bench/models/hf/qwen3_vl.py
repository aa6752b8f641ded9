"""Qwen3-VL: Qwen2-VL's processor, dialogue and 0-1000 boxes (norm1000), with a vision tower that adds
learned ABSOLUTE position embeddings to its patches (a square grid, resampled bilinearly to each image's patch
grid) and a language model whose M-RoPE interleaves time, height and width over the frequencies."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from visrl_bench.core.boxes import BoxConvention
from visrl_bench.models.hf.qwen2_vl import SHRUNK_TEXT, Qwen2VLAdapter
from visrl_bench.models.tiny import TinySpec


class Qwen3VLAdapter(Qwen2VLAdapter):
    arch = "qwen3_vl"
    default_convention = BoxConvention.NORM1000
    model_class = "Qwen3VLForConditionalGeneration"

    shrink_rule: ClassVar[dict[str, Any]] = {
        "text_config": {k: v for k, v in SHRUNK_TEXT.items() if k != "max_window_layers"} | {"head_dim": 128},
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 128,
            "deepstack_visual_indexes": [0],  # the real model taps three vision layers; one at depth 2
        },
    }

    @classmethod
    def tiny_model(cls, text: dict, spec: TinySpec, specials: dict[str, int]):
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        head_dim = spec.text_hidden // spec.heads
        half = head_dim // 2
        # the real checkpoints' [24, 20, 20] of 64 pairs, interleaved (t h w t h w ...): 5/16 each to h and w
        hw = half * 5 // 16
        section = list(spec.mrope_section) or [half - 2 * hw, hw, hw]
        # Qwen3-VL reads the three sizes as how many pairs each axis gets, interleaved from pair 0 on: height
        # takes pairs 1, 4, 7, ... and width 2, 5, 8, ..., so each needs 3 x its size pairs to exist
        if len(section) != 3 or sum(section) != half or 3 * max(section[1:]) > half or min(section) < 1:
            raise ValueError(
                f"option spec.mrope_section={section}: Qwen3-VL takes three positive sizes (time, height, "
                f"width) summing to half the head width ({half}), height and width at most {half // 3}"
            )
        # transformers always interleaves Qwen3-VL's axes; the key is what the real configs write
        rope = {**text["rope_parameters"], "mrope_section": section, "mrope_interleaved": True}
        patch, merge = spec.qwen_patch, spec.qwen_merge
        # the learned position grid (square) covers the longest side of any image within the pixel budget up
        # to a 2:1 aspect, so that no image is resampled from a coarser grid than its own patches
        side = max(2, math.ceil((2 * spec.max_pixels) ** 0.5 / patch))
        vision = dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_heads=spec.heads,
            out_hidden_size=spec.text_hidden,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
            num_position_embeddings=side * side,
            deepstack_visual_indexes=[],
        )
        return Qwen3VLForConditionalGeneration(
            Qwen3VLConfig(
                text_config={**text, "head_dim": head_dim, "rope_parameters": rope},
                vision_config=vision,
                **specials,
            )
        )
