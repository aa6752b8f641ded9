"""Random-init checkpoints made from a REAL checkpoint's own small files, shrunk in width and depth only.

A real checkpoint's config.json, generation_config.json, processor configs, tokenizer_config.json and chat
template are kept as published (flat Qwen configs with `rope_scaling: {"type": "mrope"}`, LLaVA's partial
`text_config`, the checkpoint's sampling defaults, ...); only the layer sizes and counts are made small, so
special-token ids, image-token handling, rope settings and the processors' resize rules are the real ones.
Each architecture's shrink rule (`shrink_rule`, width and depth only) lives on its adapter class in
`visrl_bench.models.hf`. The tokenizer is a small byte-level BPE whose special tokens sit at the real ids.
Nothing is downloaded: this is how the loader is tested against what real checkpoints ship, on a CPU.

    python -m visrl_bench.models.shrink --real tests/real_checkpoints/Qwen2-VL-7B-Instruct --out /tmp/q2
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from visrl_bench.core.errors import DataError
from visrl_bench.core.io import read_json

# Everything a checkpoint ships except weights and the full vocabulary: copied byte for byte.
VERBATIM = (
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
)


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def shrink_config(config: dict) -> dict:
    """The real config.json with only widths and depths replaced (its layout and every other key kept)."""
    from visrl_bench.models.tiny import ARCHS, adapter_class

    arch = config.get("model_type")
    if arch not in ARCHS:
        raise ValueError(f"no shrink rule for model_type {arch!r}; one of {', '.join(ARCHS)}")
    return _merge(config, adapter_class(arch).shrink_rule)


def special_tokens(real: Path) -> dict[int, str]:
    """id -> special token, from the real tokenizer_config.json's added_tokens_decoder."""
    cfg = read_json(real / "tokenizer_config.json", "tokenizer_config.json")
    decoder = cfg.get("added_tokens_decoder") or {}
    if not decoder:
        raise DataError(real / "tokenizer_config.json", "no added_tokens_decoder: special-token ids unknown")
    return {int(i): t["content"] for i, t in decoder.items()}


def tokenizer_json(specials: dict[int, str], vocab_size: int, bos: str | None = None) -> str:
    """A small byte-level BPE (any text encodes) whose special tokens have exactly the real ids; the
    ordinary tokens take the lowest free ids. `bos`: the token every encoding starts with, as a tokenizer
    whose config says add_bos_token does (LLaVA's Llama tokenizer)."""
    ids = {tok: i for i, tok in specials.items()}
    from visrl_bench.models.tiny import build_tokenizer

    base = json.loads(build_tokenizer("qwen2_vl").backend_tokenizer.to_str())
    ours = {t["content"] for t in base["added_tokens"]}
    ordinary = [
        tok for tok, _ in sorted(base["model"]["vocab"].items(), key=lambda kv: kv[1]) if tok not in ours
    ]
    free = (i for i in range(vocab_size) if i not in specials)
    vocab = {tok: next(free) for tok in ordinary}
    if max(specials) >= vocab_size:
        raise ValueError(f"special token id {max(specials)} is outside vocab_size {vocab_size}")
    # the specials are in the model's vocab too: an added token found there keeps that id when loaded
    vocab.update({tok: i for i, tok in specials.items()})
    base["model"]["vocab"] = vocab
    if bos is not None:  # what a real Llama tokenizer.json's post-processor does: "<s> text"
        base["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [ids[bos]], "tokens": [bos]}},
        }
    base["added_tokens"] = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, tok in sorted(specials.items())
    ]
    return json.dumps(base, ensure_ascii=False)


def _write_known_tokens_only(model, known: list[int]) -> None:
    """Make greedy decoding pick ids the small tokenizer has: the real vocabulary is 32k-152k ids and the
    tokenizer knows a few hundred, so a random head would mostly write ids that decode to nothing."""
    import torch

    head = model.get_output_embeddings().weight
    with torch.no_grad():
        keep = torch.zeros(head.shape[0], dtype=torch.bool)
        keep[known] = True
        head[~keep] = 0.0
        head[keep] *= 50.0


def build_shrunk(real: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """A loadable checkpoint dir: the real files as published, a shrunk config.json, random weights."""
    import torch
    import transformers

    real, out = Path(real), Path(out_dir)
    config = shrink_config(read_json(real / "config.json", "config.json"))
    vocab_size = config.get("vocab_size") or config["text_config"]["vocab_size"]
    specials = special_tokens(real)
    tok_cfg = read_json(real / "tokenizer_config.json", "tokenizer_config.json")
    bos = tok_cfg.get("bos_token") if tok_cfg.get("add_bos_token") else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.manual_seed(seed)
    hf_config = transformers.AutoConfig.from_pretrained(out, local_files_only=True)
    model = getattr(transformers, config["architectures"][0])(hf_config)
    known = sorted(json.loads(tokenizer_json(specials, vocab_size, bos))["model"]["vocab"].values())
    _write_known_tokens_only(model, known)
    # weights in the dtype the checkpoint declares (bf16 / fp16), as a real download holds them
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    # save_pretrained rewrote config.json and generation_config.json in this transformers' own format: put
    # back what the real checkpoint ships, which is what a user's download holds
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").unlink(missing_ok=True)
    for name in VERBATIM:
        if (real / name).is_file():
            shutil.copyfile(real / name, out / name)
    (out / "tokenizer.json").write_text(tokenizer_json(specials, vocab_size, bos))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="a folder of a real checkpoint's small files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_shrunk(args.real, args.out, args.seed))


if __name__ == "__main__":
    main()
