"""Tiny random-init LMMs (LLaVA, Qwen2-VL, Qwen2.5-VL) built from config, fully offline.

Each is saved as a normal checkpoint directory (config.json, model.safetensors, tokenizer, processor, chat
template), so everything that loads a real checkpoint loads these the same way. They are < 1 MB and build in
well under a second; tests and the ZoomWorld models use them.

    python -m visrl_bench.models.tiny --arch qwen2_vl --out /tmp/tiny-qwen2-vl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

ARCHS = ("llava", "qwen2_vl", "qwen2_5_vl")

LLAVA_CHAT_TEMPLATE = (
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


@dataclass
class TinySpec:
    """Sizes of a tiny model; the defaults give the < 1 MB test models."""

    text_hidden: int = 32
    text_layers: int = 2
    heads: int = 2
    vision_hidden: int = 32
    vision_layers: int = 1
    image_size: int = 32  # LLaVA's square input
    patch_size: int = 8  # LLaVA's patch; Qwen's is qwen_patch (merge 2)
    qwen_patch: int = 14
    min_pixels: int = 28 * 28  # Qwen's pixel budget per image: smaller images are upscaled, larger shrunk
    max_pixels: int = 112 * 112
    resample: int = 3  # PIL resampling of the processors (3 bicubic, 4 box)
    rope_theta: float = 10000.0  # the language model's; small values resolve nearby image positions
    bpe_vocab: int = 600
    extra_tokens: tuple[str, ...] = ()  # whole words/values that must be single tokens
    corpus: tuple[str, ...] = ()  # extra text for the BPE


def coordinate_tokens(arch: str) -> tuple[str, ...]:
    """One token per coordinate value of the arch's box convention (square_norm 0.00-1.00 for LLaVA, the
    0-1000 grid for Qwen2-VL): a box is four tokens, which a tiny model can learn."""
    if arch == "llava":
        return tuple(f"{i / 100:.2f}" for i in range(101))
    return tuple(str(i) for i in range(1001))


def build_tokenizer(arch: str, spec: TinySpec | None = None):
    """A byte-level BPE (any text encodes, nothing is <unk>) with the architecture's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = spec or TinySpec()
    specials = LLAVA_SPECIALS if arch == "llava" else QWEN_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.bpe_vocab,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus() + list(spec.corpus), trainer=trainer)
    if arch == "llava":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
            chat_template=LLAVA_CHAT_TEMPLATE,
        )
    else:
        tokenizer = PreTrainedTokenizerFast(
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
    if spec.extra_tokens:
        tokenizer.add_tokens(list(spec.extra_tokens))
    return tokenizer


def _text_dims(tokenizer, spec: TinySpec) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=2 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
    )


def build_llava(tokenizer, spec: TinySpec):
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
        **_text_dims(tokenizer, spec),
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
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def build_qwen(arch: str, tokenizer, spec: TinySpec):
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    from visrl_bench.models.hf import ImageOnlyQwenProcessor

    patch, merge = spec.qwen_patch, 2
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
    rope = {
        "rope_type": "default",
        "rope_theta": spec.rope_theta,
        "mrope_section": [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2],
    }
    text = dict(
        **{**_text_dims(tokenizer, spec), "rope_parameters": rope},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.text_hidden,
            num_heads=spec.heads,
            mlp_ratio=2,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
        )
        model = Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=text, vision_config=vision, **specials)
        )
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

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
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **specials)
        )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=2,
        resample=spec.resample,
    )
    return model, ImageOnlyQwenProcessor(image_processor, tokenizer, QWEN_CHAT_TEMPLATE)


def build_model(arch: str, spec: TinySpec | None = None, seed: int = 0):
    """(model, processor) of a random-init tiny `arch`, in memory."""
    import torch

    import visrl_bench.models.hf  # noqa: F401  (quiets transformers' per-shard progress bars)

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; one of {', '.join(ARCHS)}")
    spec = spec or TinySpec()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(arch, spec)
    model, processor = build_llava(tokenizer, spec) if arch == "llava" else build_qwen(arch, tokenizer, spec)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def save_checkpoint(model, processor, out_dir: str | Path, info: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    info = {**info, "parameters": sum(p.numel() for p in model.parameters())}
    (out / "visrl_tiny.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out


def build_tiny(arch: str, out_dir: str | Path, seed: int = 0, spec: TinySpec | None = None) -> Path:
    """Build and save a tiny random-init checkpoint of `arch`; returns the directory."""
    spec = spec or TinySpec()
    model, processor = build_model(arch, spec, seed)
    return save_checkpoint(model, processor, out_dir, {"arch": arch, "seed": seed, "spec": asdict(spec)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny(args.arch, args.out, args.seed))


if __name__ == "__main__":
    main()
