"""Tiny random-init LMMs (LLaVA, Qwen2-VL, Qwen2.5-VL) built from config, fully offline.

Each is saved as a normal checkpoint directory (config.json, model.safetensors, tokenizer, processor, chat
template), so everything that loads a real checkpoint loads these the same way. They are < 1 MB and build in
well under a second; tests and the ZoomWorld models use them.

    python -m visrl_bench.models.tiny --arch qwen2_vl --out /tmp/tiny-qwen2-vl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARCHS = ("llava", "qwen2_vl", "qwen2_5_vl")

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

QWEN_CHAT_TEMPLATE = (
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

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _corpus() -> list[str]:
    """What the tiny BPE is trained on: prompt words, box text and numbers, so they are few tokens."""
    words = (
        "what is the color of material where is left right top bottom answer question option letter "
        "choices directly please provide bounding box coordinate region that can help you better based "
        "on original image and local detail single word or phrase this sentence describes none red green "
        "blue yellow cyan magenta black white gray square circle triangle USER ASSISTANT system user "
        "assistant helpful"
    ).split()
    lines = [" ".join(words[i : i + 7]) for i in range(0, len(words), 7)]
    lines += [
        f"[{i / 100:.2f}, {j / 100:.2f}, {(i + 5) / 100:.2f}, {(j + 7) / 100:.2f}]"
        for i in range(0, 95, 3)
        for j in range(0, 90, 11)
    ]
    lines += [
        f"({i},{j}),({i + 50},{j + 80}) [{i}, {j}, {i + 9}, {j + 4}]"
        for i in range(0, 1000, 37)
        for j in range(0, 900, 91)
    ]
    lines += ["A. B. C. D. (A) (B) (C) (D) The answer is A B C D"]
    return lines


def build_tokenizer(arch: str, vocab_size: int = 600):
    """A byte-level BPE (any text encodes, nothing is <unk>) with the architecture's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = LLAVA_SPECIALS if arch == "llava" else QWEN_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if arch == "llava":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
            chat_template=LLAVA_CHAT_TEMPLATE,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        padding_side="left",
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def _text_dims(tokenizer, hidden: int) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )


def build_llava(tokenizer, hidden: int = 32, image_size: int = 32, patch_size: int = 8):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.clip import CLIPImageProcessorPil
    from transformers.models.llava import LlavaProcessor

    vision = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
    )
    text = LlamaConfig(
        **_text_dims(tokenizer, hidden),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_tokens = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    # the processor's token count must match the model's: CLS is dropped ("default") but counted here
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def build_qwen(arch: str, tokenizer, hidden: int = 32):
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    patch, merge = 14, 2
    specials = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    head_dim = hidden // 2
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [
            head_dim // 8,
            (head_dim // 2 - head_dim // 8) // 2,
            head_dim // 2 - head_dim // 8 - (head_dim // 2 - head_dim // 8) // 2,
        ],
    }
    text = dict(
        **_text_dims(tokenizer, hidden),
        rope_parameters=rope,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(
            depth=1,
            embed_dim=hidden,
            hidden_size=hidden,
            num_heads=2,
            mlp_ratio=2,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
        )
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **specials)
        model = Qwen2VLForConditionalGeneration(config)
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = dict(
            depth=2,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_heads=2,
            out_hidden_size=hidden,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
            window_size=patch * merge * 2,
            fullatt_block_indexes=[1],
        )
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **specials)
        model = Qwen2_5_VLForConditionalGeneration(config)
    # a small pixel budget keeps the tiny model's image to a handful of tokens
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=28 * 28, max_pixels=112 * 112, patch_size=patch, merge_size=merge, temporal_patch_size=2
    )
    from visrl_bench.models.hf import ImageOnlyQwenProcessor

    processor = ImageOnlyQwenProcessor(image_processor, tokenizer, QWEN_CHAT_TEMPLATE)
    return model, processor


def build_tiny(arch: str, out_dir: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """Build and save a tiny random-init checkpoint of `arch`; returns the directory."""
    import torch

    import visrl_bench.models.hf  # noqa: F401  (quiets transformers' per-shard progress bars)

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; one of {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(arch)
    if arch == "llava":
        model, processor = build_llava(tokenizer, hidden)
    else:
        model, processor = build_qwen(arch, tokenizer, hidden)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "visrl_tiny.json").write_text(
        json.dumps(
            {
                "arch": arch,
                "seed": seed,
                "hidden": hidden,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny(args.arch, args.out, args.seed))


if __name__ == "__main__":
    main()
