"""The decoding policy of a run: its GenerationSettings, and nothing a checkpoint ships besides."""

from __future__ import annotations

import copy
from typing import Any

from transformers import GenerationConfig

from visrl_bench.models import GenerationSettings

# decoding knobs a checkpoint's generation_config.json may set, which the run's settings replace, with the
# value that leaves decoding as it is
CHECKPOINT_SAMPLING_KEYS = {
    "do_sample": False,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": None,
    "min_p": None,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "num_beams": 1,
    "length_penalty": 1.0,
}
TRANSFORMERS_DEFAULT_TOP_K = 50


def set_aside_checkpoint_sampling(config: GenerationConfig) -> tuple[GenerationConfig, dict[str, Any]]:
    """A copy of a checkpoint's generation config without its own decoding knobs, and those knobs.

    Real checkpoints ship them: Qwen2-VL-7B-Instruct do_sample=true, temperature 0.01, top_p 0.001 and
    top_k 1; Qwen2.5-VL-7B-Instruct do_sample=true, temperature 1e-6 and repetition_penalty 1.05.
    transformers merges every knob a call leaves unset from that file, so "greedy" would carry a
    repetition penalty and sampling K answers with top_k 1 would give K copies of one. The run's
    GenerationSettings are the whole decoding policy (and are what results.json records); what the
    checkpoint asked for is kept in the adapter's describe(). The model's own config is not touched: a
    model trained from this one and saved keeps the base's file.
    """
    config = copy.deepcopy(config)
    ignored = {}
    for key, neutral in CHECKPOINT_SAMPLING_KEYS.items():
        value = getattr(config, key, None)
        if value is not None and value != neutral:
            ignored[key] = value
        setattr(config, key, None)
    return config, ignored


def generation_config(
    base: GenerationConfig, settings: GenerationSettings, pad_token_id: int
) -> GenerationConfig:
    """One call's config: the checkpoint's token ids (from `base`, knobs set aside), the run's decoding."""
    config = GenerationConfig.from_dict(base.to_dict())
    config.max_new_tokens = settings.max_new_tokens
    config.num_return_sequences = settings.num_return_sequences
    config.pad_token_id = pad_token_id
    if settings.greedy:
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
    else:
        config.do_sample = True
        config.temperature = settings.temperature
        config.top_p = settings.top_p
        # top_k 0 is transformers' own default of 50 (what every committed run sampled with)
        config.top_k = settings.top_k or TRANSFORMERS_DEFAULT_TOP_K
    return config
