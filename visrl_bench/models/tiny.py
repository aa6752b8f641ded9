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

from visrl_bench.core.registry import MODELS

ARCHS = tuple(MODELS.names())  # every registered architecture has a tiny builder (its adapter's hook)


def adapter_class(arch: str):
    """The registered adapter class of `arch`, which carries the arch's tiny-model hook."""
    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; one of {', '.join(ARCHS)}")
    return MODELS.load(arch)


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
    patch_size: int = 8  # LLaVA's patch; Qwen's is qwen_patch
    qwen_patch: int = 14
    # Qwen's merger folds qwen_merge x qwen_merge patches into one language-model token (the real checkpoints'
    # 2); 1 gives one token per patch, as LLaVA's tower does
    qwen_merge: int = 2
    min_pixels: int = 28 * 28  # Qwen's pixel budget per image: smaller images are upscaled, larger shrunk
    max_pixels: int = 112 * 112
    resample: int = 3  # PIL resampling of the processors (3 bicubic, 4 box)
    rope_theta: float = 10000.0  # the language model's; small values resolve nearby image positions
    # Qwen2-VL's M-RoPE split of a head's frequency pairs, highest frequencies first, into consecutive
    # sections that take time, height, width, time, ... in turn (transformers gives section i to axis i % 3):
    # the real checkpoints' [16, 24, 24] gives width only the lowest frequencies; [1] * (head_dim // 2)
    # interleaves the axes. Empty: a quarter to time, the rest halved ([16, 24, 24]'s shape). Qwen3-VL reads
    # three sizes, (time, height, width) pairs, always interleaved (its adapter checks them).
    mrope_section: tuple[int, ...] = ()
    bpe_vocab: int = 600
    extra_tokens: tuple[str, ...] = ()  # whole words/values that must be single tokens
    corpus: tuple[str, ...] = ()  # extra text for the BPE


def coordinate_tokens(arch: str) -> tuple[str, ...]:
    """One token per coordinate value of the arch's box convention (0.00-1.00 for a normalised one such as
    LLaVA's square_norm, 0-1000 otherwise: Qwen2-VL's grid, Qwen2.5-VL's pixels): a box is four tokens,
    which a tiny model can learn."""
    from visrl_bench.core.boxes import BoxConvention

    if adapter_class(arch).default_convention in (BoxConvention.NORM, BoxConvention.SQUARE_NORM):
        return tuple(f"{i / 100:.2f}" for i in range(101))
    return tuple(str(i) for i in range(1001))


def build_tokenizer(arch: str, spec: TinySpec | None = None):
    """A byte-level BPE (any text encodes, nothing is <unk>) with the architecture's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = spec or TinySpec()
    adapter = adapter_class(arch)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.bpe_vocab,
        special_tokens=list(adapter.tiny_specials),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus() + list(spec.corpus), trainer=trainer)
    tokenizer = adapter.tiny_tokenizer(tok)
    if spec.extra_tokens:
        tokenizer.add_tokens(list(spec.extra_tokens))
    return tokenizer


def text_dims(tokenizer, spec: TinySpec) -> dict:
    """The language model's sizes, the same keys for every architecture."""
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


def build_model(arch: str, spec: TinySpec | None = None, seed: int = 0):
    """(model, processor) of a random-init tiny `arch`, in memory."""
    import torch

    adapter = adapter_class(arch)  # imports models.hf.base, which quiets per-shard progress bars
    spec = spec or TinySpec()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(arch, spec)
    model, processor = adapter.build_tiny(tokenizer, spec)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def clear_weights(folder: Path) -> None:
    """Remove a checkpoint's weight files before new ones are written: a folder overwritten with another
    sharding would keep the old `model.safetensors` beside the new shards' index, and `from_pretrained`
    loads the single file first, silently the OLD weights."""
    for pattern in ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin"):
        for stale in folder.glob(pattern):
            stale.unlink()


def save_checkpoint(model, processor, out_dir: str | Path, info: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_weights(out)
    # shards under 4 MB: the committed ZoomWorld bases stay below the repository's 5 MB file limit
    model.save_pretrained(out, safe_serialization=True, max_shard_size="4MB")
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
