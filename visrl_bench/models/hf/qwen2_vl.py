"""Qwen2-VL: its adapter, its tiny model and its shrink rule. Boxes on the 0-1000 grid (norm1000).

Qwen's processor resizes every image to multiples of patch x merge within a pixel budget, and its language
model places image tokens with M-RoPE (3-D positions), which the two-turn KV-cache reuse must recompute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from visrl_bench.core.boxes import BoxConvention
from visrl_bench.models.hf.base import HFAdapter, read_chat_template
from visrl_bench.models.tiny import TinySpec, text_dims

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen keeps its 128-wide attention heads when shrunk: M-RoPE's mrope_section [16, 24, 24] is written for
# head_dim 128, so the heads get fewer, not narrower
SHRUNK_TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
}


class ImageOnlyQwenProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor (which needs torchvision); images only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def qwen_input_size(image_processor, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) Qwen's processor resizes to: multiples of patch x merge within its pixel budget."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    w, h = size
    rh, rw = smart_resize(
        h,
        w,
        factor=image_processor.patch_size * image_processor.merge_size,
        min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )
    return (rw, rh)


class Qwen2VLAdapter(HFAdapter):
    arch = "qwen2_vl"
    default_convention = BoxConvention.NORM1000
    model_class = "Qwen2VLForConditionalGeneration"
    vision_module = "visual"
    tool_images = True

    def load_processor(self, path: Path):
        tokenizer = self.load_tokenizer(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
        return ImageOnlyQwenProcessor(image_processor, tokenizer, read_chat_template(path, tokenizer))

    @classmethod
    def image_preparation(cls, processor):
        def input_size(image) -> tuple[int, int]:
            return qwen_input_size(processor.image_processor, image.size)

        return (lambda image: image.convert("RGB")), input_size

    def _positions(self, full: dict, inputs2) -> torch.Tensor:
        """M-RoPE positions of the whole two-turn sequence (both turns' images); the offsets for decoding
        are left where `generate` reads them."""
        positions, deltas = self.model.model.get_rope_index(
            full["input_ids"],
            mm_token_type_ids=full["mm_token_type_ids"],
            image_grid_thw=inputs2["image_grid_thw"],
            attention_mask=full["attention_mask"],
        )
        self.model.model.rope_deltas = deltas
        return positions

    def _new_image_inputs(self, inputs2, new_images: list[int]) -> dict[str, torch.Tensor]:
        # pixel_values holds every image's patches end to end; image_grid_thw says how many are whose
        grids = inputs2["image_grid_thw"]
        ends = grids.prod(-1).cumsum(0).tolist()
        starts = [0, *ends[:-1]]
        if not new_images:
            return {}
        patches = torch.cat([inputs2["pixel_values"][starts[i] : ends[i]] for i in new_images])
        return {"pixel_values": patches, "image_grid_thw": grids[new_images]}

    # --- tiny model and shrink rule ------------------------------------------------------------------------
    tiny_specials = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
    tiny_chat_template = CHAT_TEMPLATE
    shrink_rule: ClassVar[dict[str, Any]] = {
        **SHRUNK_TEXT,
        "vision_config": {"depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 128},
    }

    @classmethod
    def tiny_tokenizer(cls, backend):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            extra_special_tokens={
                "image_token": "<|image_pad|>",
                "video_token": "<|video_pad|>",
                "vision_bos_token": "<|vision_start|>",
                "vision_eos_token": "<|vision_end|>",
            },
            padding_side="left",
            chat_template=CHAT_TEMPLATE,
        )

    @classmethod
    def tiny_model(cls, text: dict, spec: TinySpec, specials: dict[str, int]):
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.text_hidden,
            num_heads=spec.heads,
            mlp_ratio=2,
            patch_size=spec.qwen_patch,
            spatial_merge_size=spec.qwen_merge,
            temporal_patch_size=2,
        )
        return Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=text, vision_config=vision, **specials)
        )

    @classmethod
    def build_tiny(cls, tokenizer, spec: TinySpec):
        specials = {
            name: tokenizer.convert_tokens_to_ids(tok)
            for name, tok in (
                ("image_token_id", "<|image_pad|>"),
                ("video_token_id", "<|video_pad|>"),
                ("vision_start_token_id", "<|vision_start|>"),
                ("vision_end_token_id", "<|vision_end|>"),
            )
        }
        half = spec.text_hidden // spec.heads // 2  # mrope_section must sum to head_dim / 2
        section = list(spec.mrope_section) or [
            half // 4,
            (half - half // 4) // 2,
            half - half // 4 - (half - half // 4) // 2,
        ]
        if len(section) < 3 or sum(section) != half or min(section) < 1:
            raise ValueError(
                f"option spec.mrope_section={section}: at least three positive sizes (time, height, width, "
                f"time, ...) summing to half the head width ({half})"
            )
        rope = {"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": section}
        text = dict(
            **{**text_dims(tokenizer, spec), "rope_parameters": rope},
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.pad_token_id,
        )
        model = cls.tiny_model(text, spec, specials)
        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=spec.min_pixels,
            max_pixels=spec.max_pixels,
            patch_size=spec.qwen_patch,
            merge_size=spec.qwen_merge,
            temporal_patch_size=2,
            resample=spec.resample,
        )
        return model, ImageOnlyQwenProcessor(image_processor, tokenizer, CHAT_TEMPLATE)
