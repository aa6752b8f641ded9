"""What every transformers-backed adapter shares: loading a local checkpoint, batched generation, K samples
from one prefill, and the visual-CoT second turn continued from the first turn's KV cache.

An architecture is one module beside this one (llava.py, qwen2_vl.py, qwen2_5_vl.py): its adapter class
(model class, processor, image preparation, box convention, the KV-cache details of its image inputs), the
hook that builds its tiny random-init model, and the rule that shrinks its real config. Processors are
assembled from their parts (PIL image processor + tokenizer + chat template) rather than through
AutoProcessor: AutoProcessor needs torchvision for Qwen's video processor, and PyPI's torchvision is a CUDA
build that breaks on CPU torch. The PIL image processors give the same numbers on every machine.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from transformers import AutoTokenizer, GenerationConfig

from visrl_bench.core.boxes import BoxConvention, as_convention
from visrl_bench.core.errors import DataError
from visrl_bench.models import ChatRequest, GenerationSettings
from visrl_bench.models.decoding import generation_config, set_aside_checkpoint_sampling
from visrl_bench.models.kv_cache import append_in_place_cache

log = logging.getLogger(__name__)
# our own progress bars cover whole runs; per-shard bars for loading a small model are noise
transformers.utils.logging.disable_progress_bar()


def read_chat_template(path: Path, tokenizer) -> str:
    """The checkpoint's chat template, wherever this checkpoint's transformers version saved it."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        f = path / name
        if f.is_file():
            template = json.loads(f.read_text()).get("chat_template")
            if template:
                return template
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise DataError(
        path,
        "checkpoint has no chat template (chat_template.jinja / chat_template.json / tokenizer_config.json)",
    )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; one of auto, {', '.join(table)}")
    return table[dtype]


class HFAdapter:
    """Shared loading and batched generation; subclasses name the model class, processor and convention."""

    arch: ClassVar[str] = ""
    default_convention: ClassVar[BoxConvention]
    model_class: ClassVar[str] = ""
    vision_module: ClassVar[str] = ""  # the vision tower's module name (frozen unless train_vision)
    # whether a tool's images reach TRL's multi-turn tool loop in inputs this model takes (Qwen-style
    # image_grid_thw); GRPO's `zoom` rollout needs it
    tool_images: ClassVar[bool] = False

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        box_format: str | None = None,
        trust_remote_code: bool = False,
    ):
        self.path = str(path)
        root = Path(path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.box_convention = as_convention(box_format) if box_format else self.default_convention
        self.trust_remote_code = trust_remote_code
        if not any(root.glob("*.safetensors")):
            raise DataError(root, "no *.safetensors weights in the checkpoint (only safetensors are loaded)")
        cls = getattr(transformers, self.model_class)
        self.model = (
            cls.from_pretrained(
                root,
                dtype=self.dtype,
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
            )
            .to(self.device)
            .eval()
        )
        self._run_generation_config, self.checkpoint_sampling_ignored = set_aside_checkpoint_sampling(
            self.model.generation_config
        )
        self.processor = self.load_processor(root)
        self._prepare_image, self._input_size = self.image_preparation(self.processor)
        self.tokenizer = self.processor.tokenizer
        # how generate_two_turns ran turn 2, per batch (a tokeniser that breaks the prefix refills)
        self.turn_two_batches = {"from_turn_one_cache": 0, "refilled": 0}
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # --- per-architecture ----------------------------------------------------------------------------
    def load_processor(self, path: Path):
        raise NotImplementedError

    def load_tokenizer(self, path: Path):
        return AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=self.trust_remote_code
        )

    @classmethod
    def image_preparation(cls, processor) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """(prepare_image, input_size) for this architecture's processor: the one definition eval, the
        trainers and pretraining all use (what the model is shown, and the size `resized_pixel` refers to)."""
        return (lambda image: image.convert("RGB")), (lambda image: None)

    def prepare_image(self, image):
        return self._prepare_image(image)

    def input_size(self, image) -> tuple[int, int] | None:
        return self._input_size(image)

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "arch": self.arch,
            "box_convention": self.box_convention.value,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trust_remote_code": self.trust_remote_code,
            "checkpoint_sampling_ignored": self.checkpoint_sampling_ignored,
        }

    # --- the architecture's tiny model (models/tiny.py) and shrink rule (models/shrink.py) ----------------
    tiny_specials: ClassVar[tuple[str, ...]] = ()  # special tokens of its tokenizer, in id order
    tiny_chat_template: ClassVar[str] = ""  # the real checkpoint's template, reduced to what we send
    shrink_rule: ClassVar[dict[str, Any]] = {}  # config.json keys -> small widths and depths

    @classmethod
    def tiny_tokenizer(cls, backend):
        """A PreTrainedTokenizerFast around `backend` (a trained `tokenizers.Tokenizer`) with this
        architecture's special-token roles and chat template."""
        raise NotImplementedError

    @classmethod
    def build_tiny(cls, tokenizer, spec):
        """(model, processor) of a random-init tiny model sized by `spec` (a `models.tiny.TinySpec`)."""
        raise NotImplementedError

    # --- generation -----------------------------------------------------------------------------------
    def render(self, request: ChatRequest) -> str:
        return self.processor.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=False
        )

    def _model_generate(self, **inputs):
        """model.generate with the run's decoding only: transformers fills unset knobs from
        model.generation_config, so the copy without the checkpoint's knobs stands in for the call."""
        saved = self.model.generation_config
        self.model.generation_config = self._run_generation_config
        try:
            return self.model.generate(**inputs)
        finally:
            self.model.generation_config = saved

    def _generation_config(self, settings: GenerationSettings) -> GenerationConfig:
        return generation_config(self._run_generation_config, settings, self.tokenizer.pad_token_id)

    def _length_order(self, texts: Sequence[str], requests: Sequence[ChatRequest]) -> list[int]:
        # similar lengths share a batch, so little compute goes to padding
        lengths = [
            len(self.tokenizer(t, add_special_tokens=False).input_ids) + 1000 * len(r.images)
            for t, r in zip(texts, requests, strict=True)
        ]
        return sorted(range(len(requests)), key=lambda i: (lengths[i], i))

    def _encode(self, texts: Sequence[str], requests: Sequence[ChatRequest]):
        images = [self.prepare_image(im) for r in requests for im in r.images]
        inputs = self.processor(text=list(texts), images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _decode(self, out, prompt_length: int, k: int, n: int) -> list[list[str]]:
        decoded = self.tokenizer.batch_decode(out[:, prompt_length:], skip_special_tokens=True)
        return [[d.strip() for d in decoded[j * k : (j + 1) * k]] for j in range(n)]

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[ChatRequest], settings: GenerationSettings, batch_size: int = 1
    ) -> list[list[str]]:
        texts = [self.render(r) for r in requests]
        order = self._length_order(texts, requests)
        config = self._generation_config(settings)
        k = settings.num_return_sequences
        results: list[list[str]] = [[] for _ in requests]
        for start in range(0, len(order), max(batch_size, 1)):
            chunk = order[start : start + max(batch_size, 1)]
            inputs = self._encode([texts[i] for i in chunk], [requests[i] for i in chunk])
            if not settings.greedy:
                torch.manual_seed(settings.seed + start)
            out = self._generate_batch(inputs, config, k)
            decoded = self._decode(out, inputs["input_ids"].shape[1], k, len(chunk))
            for i, outs in zip(chunk, decoded, strict=True):
                results[i] = outs
        return results

    def _generate_batch(self, inputs, config: GenerationConfig, k: int):
        if k > 1:
            return self._generate_from_shared_prefill(inputs, config, k)
        cache = append_in_place_cache(self.model.config)
        return self._model_generate(**inputs, cache=cache, generation_config=config)

    _PER_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")

    def _generate_from_shared_prefill(self, inputs, config: GenerationConfig, k: int):
        """K continuations per prompt, the image and the prompt encoded once.

        `generate(num_return_sequences=K)` copies every input K times before the first forward: the vision
        tower and the prefill run K times over the same image and text. Here the prompt minus its last
        token goes through the model once; the KV cache is then copied K times and `generate` continues
        from it, with only the last prompt token left to feed. Rows come out in the same order as
        num_return_sequences=K (each prompt's K samples together).
        """
        cache = append_in_place_cache(self.model.config)
        head = {
            key: (value[:, :-1] if key in self._PER_TOKEN_INPUTS else value) for key, value in inputs.items()
        }
        self.model(**head, cache=cache, use_cache=True, logits_to_keep=1)
        return self._continue(cache, inputs, config, k)

    def _continue(self, cache, inputs, config: GenerationConfig, k: int):
        """Generate from a cache that holds every token of `inputs` but the last, K samples per row."""
        if k > 1:
            cache.batch_repeat_interleave(k)
            inner = getattr(self.model, "model", None)
            if getattr(inner, "rope_deltas", None) is not None:  # Qwen's M-RoPE offsets, one per prompt
                inner.rope_deltas = inner.rope_deltas.repeat_interleave(k, dim=0)
        rest = {
            key: inputs[key].repeat_interleave(k, dim=0) for key in self._PER_TOKEN_INPUTS if key in inputs
        }
        single = copy.deepcopy(config)
        single.num_return_sequences = 1
        return self._model_generate(**rest, cache=cache, generation_config=single)

    # --- several turns, one cache (visual CoT, multi-turn zoom) -----------------------------------------
    @torch.inference_mode()
    def generate_turns(
        self,
        first: Sequence[ChatRequest],
        follow_up: Callable[[int, int, str], ChatRequest | None],
        settings: Sequence[GenerationSettings],
        batch_size: int = 1,
        max_turns: int = 2,
    ) -> list[list[list[str]]]:
        """`models.generate_turns`, each turn continued from the previous turn's KV cache.

        Turn t+1 repeats turn t's prompt word for word (the dialogue so far, then the reply, a new image
        and an instruction). Prefilling it again would run the vision tower and the whole dialogue again, so
        it continues from turn t's cache, cut back to the end of turn t's prompt; only the reply, the new
        image and the new instruction go through the model. The reply is re-tokenised from its text, as a
        fresh prompt would be. Rows whose dialogue ended leave the batch (and the cache). Where a row's new
        tokens do not start with its previous prompt's (a tokeniser that merges across the boundary), that
        batch prefills the turn from scratch.
        """
        texts = [self.render(r) for r in first]
        order = self._length_order(texts, first)
        configs = [self._generation_config(s) for s in settings]
        turns: list[list[list[str]]] = [[] for _ in first]
        for start in range(0, len(order), max(batch_size, 1)):
            rows = order[start : start + max(batch_size, 1)]
            requests = [first[i] for i in rows]
            inputs = self._encode([texts[i] for i in rows], requests)
            k = self._seed_turn(settings, 1, start)
            cache = append_in_place_cache(self.model.config)
            if k > 1:  # one turn only
                out = self._generate_batch(inputs, configs[0], k)
            else:
                out = self._model_generate(**inputs, cache=cache, generation_config=configs[0])
            prompt = inputs["input_ids"].shape[1]
            for i, outs in zip(rows, self._decode(out, prompt, k, len(rows)), strict=True):
                turns[i].append(outs)
            for turn in range(2, max_turns + 1):
                nxt = [follow_up(i, turn - 1, turns[i][-1][0]) for i in rows]
                keep = [j for j, r in enumerate(nxt) if r is not None]
                if not keep:
                    break
                if len(keep) < len(rows):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    inputs = {key: inputs[key][index] for key in self._PER_TOKEN_INPUTS if key in inputs}
                    rows, requests, nxt = ([x[j] for j in keep] for x in (rows, requests, nxt))
                inputs2 = self._encode([self.render(r) for r in nxt], nxt)
                k = self._seed_turn(settings, turn, start)
                config = configs[min(turn, len(configs)) - 1]
                joined = None
                if all(self._repeats_images(a, b) for a, b in zip(requests, nxt, strict=True)):
                    counts = [(len(a.images), len(b.images)) for a, b in zip(requests, nxt, strict=True)]
                    joined = self._join_turns(inputs, inputs2, self._new_images(counts))
                self.turn_two_batches["refilled" if joined is None else "from_turn_one_cache"] += 1
                if joined is None:
                    cache = append_in_place_cache(self.model.config)
                    if k > 1:
                        out = self._generate_batch(inputs2, config, k)
                    else:
                        out = self._model_generate(**inputs2, cache=cache, generation_config=config)
                    full = inputs2
                else:
                    cache.crop(prompt - cache.get_seq_length())
                    suffix, full = joined
                    self.model(**suffix, cache=cache, use_cache=True, logits_to_keep=1)
                    out = self._continue(cache, full, config, k)
                prompt = full["input_ids"].shape[1]
                for i, outs in zip(rows, self._decode(out, prompt, k, len(rows)), strict=True):
                    turns[i].append(outs)
                inputs, requests = full, nxt
        return turns

    @staticmethod
    def _seed_turn(settings: Sequence[GenerationSettings], turn: int, start: int) -> int:
        """Seed a sampled turn as a one-turn batch at `start` is seeded; returns the turn's K."""
        s = settings[min(turn, len(settings)) - 1]
        if not s.greedy:
            torch.manual_seed(s.seed + start)
        return s.num_return_sequences

    @staticmethod
    def _repeats_images(first: ChatRequest, second: ChatRequest) -> bool:
        head = second.images[: len(first.images)]
        return len(head) == len(first.images) and all(a is b for a, b in zip(head, first.images, strict=True))

    @staticmethod
    def _new_images(counts: list[tuple[int, int]]) -> list[int]:
        """Indices, among all of a turn-2 batch's images, of those turn 1 did not have."""
        keep, offset = [], 0
        for before, after in counts:
            keep += range(offset + before, offset + after)
            offset += after
        return keep

    def _join_turns(self, inputs1, inputs2, new_images: list[int]):
        """Turn 2's inputs laid out after turn 1's prompt: (the uncached part minus its last token, with its
        images and positions; the whole sequence's per-token inputs), or None where a row's turn-2 tokens
        do not start with its turn-1 prompt."""
        ids1, mask1 = inputs1["input_ids"], inputs1["attention_mask"].bool()
        ids2, mask2 = inputs2["input_ids"], inputs2["attention_mask"].bool()
        n, prompt1 = ids1.shape
        tails: list[int] = []  # per row: where its turn-2 tokens start to differ from turn 1's prompt
        for row in range(n):
            head, whole = ids1[row][mask1[row]], ids2[row][mask2[row]]
            if len(whole) <= len(head) + 1 or not torch.equal(whole[: len(head)], head):
                return None
            tails.append(mask2[row].nonzero()[len(head)].item())
        width = max(ids2.shape[1] - t for t in tails)
        full: dict[str, torch.Tensor] = {}
        for key in self._PER_TOKEN_INPUTS:
            if key not in inputs2:
                continue
            rest = torch.zeros((n, width), dtype=inputs2[key].dtype, device=self.device)
            if key == "input_ids":
                rest.fill_(self.tokenizer.pad_token_id)
            for row, t in enumerate(tails):
                rest[row, width - (ids2.shape[1] - t) :] = inputs2[key][row, t:]
            full[key] = torch.cat([inputs1[key], rest], dim=1)
        # pads now sit in the middle of a row as well as on the left: positions count real tokens only
        positions = self._positions(full, inputs2)
        suffix = {key: value[:, prompt1:-1] for key, value in full.items()}
        suffix["attention_mask"] = full["attention_mask"][:, :-1]
        suffix["position_ids"] = positions[..., prompt1:-1]
        suffix.update(self._new_image_inputs(inputs2, new_images))
        return suffix, full

    def _positions(self, full: dict, inputs2) -> torch.Tensor:
        """Position ids as `generate` counts them: real tokens only."""
        mask = full["attention_mask"]
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)

    def _new_image_inputs(self, inputs2, new_images: list[int]) -> dict[str, torch.Tensor]:
        """The pixel inputs of the images turn 2 adds (one pixel tensor per image)."""
        return {"pixel_values": inputs2["pixel_values"][new_images]} if new_images else {}
