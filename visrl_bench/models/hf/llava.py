"""LLaVA-1.5 in the llava-hf format: its adapter, its tiny model and its shrink rule.

Images are padded to a centred square with the mean colour before the CLIP processor, as LLaVA-1.5 and
Visual-CoT do, which is what makes its boxes `square_norm`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.core.boxes import BoxConvention
from visrl_bench.models.hf.base import HFAdapter, read_chat_template
from visrl_bench.models.tiny import TinySpec, text_dims

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    # plain-string content too: lmms-eval's llava_hf sends "<image>\n{question}" as one string
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def mean_fill(image_processor) -> tuple[int, ...]:
    return tuple(round(255 * m) for m in image_processor.image_mean)


def pad_to_square(image, fill: tuple[int, ...]):
    """Centre the image on a square canvas of its long side (LLaVA-1.5's "pad" preprocessing)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class LlavaAdapter(HFAdapter):
    arch = "llava"
    default_convention = BoxConvention.SQUARE_NORM
    model_class = "LlavaForConditionalGeneration"
    vision_module = "vision_tower"

    def load_processor(self, path: Path):
        from transformers.models.clip import CLIPImageProcessorPil
        from transformers.models.llava import LlavaProcessor

        tokenizer = self.load_tokenizer(path)
        image_processor = CLIPImageProcessorPil.from_pretrained(path, local_files_only=True)
        cfg_path = path / "processor_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        mcfg = self.model.config
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=cfg.get("patch_size", mcfg.vision_config.patch_size),
            vision_feature_select_strategy=cfg.get(
                "vision_feature_select_strategy", mcfg.vision_feature_select_strategy
            ),
            num_additional_image_tokens=cfg.get("num_additional_image_tokens", 1),
            chat_template=read_chat_template(path, tokenizer),
        )

    @classmethod
    def image_preparation(cls, processor):
        fill = mean_fill(processor.image_processor)
        return (lambda image: pad_to_square(image, fill)), (lambda image: None)

    # --- tiny model and shrink rule ------------------------------------------------------------------------
    tiny_specials = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
    tiny_chat_template = CHAT_TEMPLATE
    # LLaVA keeps two vision layers: it reads the features of the second-to-last one (vision_feature_layer -2)
    shrink_rule: ClassVar[dict[str, Any]] = {
        "text_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 32,
        },
    }

    @classmethod
    def tiny_tokenizer(cls, backend):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
            chat_template=CHAT_TEMPLATE,
        )

    @classmethod
    def build_tiny(cls, tokenizer, spec: TinySpec):
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
        from transformers.models.clip import CLIPImageProcessorPil
        from transformers.models.llava import LlavaProcessor

        vision = CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            projection_dim=spec.vision_hidden,
        )
        text = LlamaConfig(
            **text_dims(tokenizer, spec),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        config = LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=(spec.image_size // spec.patch_size) ** 2,
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
        )
        model = LlavaForConditionalGeneration(config)
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": spec.image_size},
            crop_size={"height": spec.image_size, "width": spec.image_size},
            do_center_crop=True,
            resample=spec.resample,
            image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711],
        )
        # the processor's token count must match the model's: CLS is dropped ("default") but counted here
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=spec.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
        return model, processor
