"""transformers-backed adapters for LLaVA-1.5 (llava-hf format), Qwen2-VL and Qwen2.5-VL.

Processors are assembled here from their parts (PIL image processor + tokenizer + chat template) rather than
through AutoProcessor: AutoProcessor needs torchvision for Qwen's video processor, and PyPI's torchvision is
a CUDA build that breaks on CPU torch. The PIL image processors give the same numbers on every machine.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from transformers import AutoTokenizer, GenerationConfig
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from visrl_bench.boxes import BoxConvention, as_convention
from visrl_bench.errors import DataError
from visrl_bench.models import ChatRequest, GenerationSettings

log = logging.getLogger(__name__)
# our own progress bars cover whole runs; per-shard bars for loading a small model are noise
transformers.utils.logging.disable_progress_bar()


class ImageOnlyQwenProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor (which needs torchvision); images only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


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


class HFAdapter:
    """Shared loading and batched generation; subclasses name the model class, processor and convention."""

    arch: ClassVar[str] = ""
    default_convention: ClassVar[BoxConvention]
    model_class: ClassVar[str] = ""

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
        self.processor = self.load_processor(root)
        self.tokenizer = self.processor.tokenizer
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

    def prepare_image(self, image):
        return image.convert("RGB")

    def input_size(self, image) -> tuple[int, int] | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "arch": self.arch,
            "box_convention": self.box_convention.value,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trust_remote_code": self.trust_remote_code,
        }

    # --- generation -----------------------------------------------------------------------------------
    def render(self, request: ChatRequest) -> str:
        return self.processor.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=False
        )

    def _generation_config(self, settings: GenerationSettings) -> GenerationConfig:
        config = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        config.max_new_tokens = settings.max_new_tokens
        config.num_return_sequences = settings.num_return_sequences
        config.pad_token_id = self.tokenizer.pad_token_id
        if settings.greedy:
            config.do_sample = False
            config.temperature = config.top_p = config.top_k = None
        else:
            config.do_sample = True
            config.temperature = settings.temperature
            config.top_p = settings.top_p
            config.top_k = settings.top_k or None
        return config

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[ChatRequest], settings: GenerationSettings, batch_size: int = 1
    ) -> list[list[str]]:
        texts = [self.render(r) for r in requests]
        lengths = [
            len(self.tokenizer(t, add_special_tokens=False).input_ids) + 1000 * len(r.images)
            for t, r in zip(texts, requests, strict=True)
        ]
        # similar lengths share a batch, so little compute goes to padding
        order = sorted(range(len(requests)), key=lambda i: (lengths[i], i))
        config = self._generation_config(settings)
        results: list[list[str]] = [[] for _ in requests]
        for start in range(0, len(order), max(batch_size, 1)):
            chunk = order[start : start + max(batch_size, 1)]
            images = [self.prepare_image(im) for i in chunk for im in requests[i].images]
            inputs = self.processor(
                text=[texts[i] for i in chunk], images=images or None, padding=True, return_tensors="pt"
            ).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            if not settings.greedy:
                torch.manual_seed(settings.seed + start)
            if settings.num_return_sequences > 1:
                out = self._generate_from_shared_prefill(inputs, config, settings.num_return_sequences)
            else:
                out = self.model.generate(**inputs, generation_config=config)
            new = out[:, inputs["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            k = settings.num_return_sequences
            for j, i in enumerate(chunk):
                results[i] = [d.strip() for d in decoded[j * k : (j + 1) * k]]
        return results

    _PER_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")

    def _generate_from_shared_prefill(self, inputs, config: GenerationConfig, k: int):
        """K continuations per prompt, the image and the prompt encoded once.

        `generate(num_return_sequences=K)` copies every input K times before the first forward: the vision
        tower and the prefill run K times over the same image and text. Here the prompt minus its last
        token goes through the model once; the KV cache is then copied K times and `generate` continues
        from it, with only the last prompt token left to feed. Rows come out in the same order as
        num_return_sequences=K (each prompt's K samples together).
        """
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        head = {
            key: (value[:, :-1] if key in self._PER_TOKEN_INPUTS else value) for key, value in inputs.items()
        }
        self.model(**head, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(k)
        inner = getattr(self.model, "model", None)
        if getattr(inner, "rope_deltas", None) is not None:  # Qwen's M-RoPE offsets, one per prompt
            inner.rope_deltas = inner.rope_deltas.repeat_interleave(k, dim=0)
        rest = {
            key: inputs[key].repeat_interleave(k, dim=0) for key in self._PER_TOKEN_INPUTS if key in inputs
        }
        single = copy.deepcopy(config)
        single.num_return_sequences = 1
        return self.model.generate(**rest, past_key_values=cache, generation_config=single)


class LlavaAdapter(HFAdapter):
    """LLaVA-1.5 in the llava-hf format. Images are padded to a centred square with the mean colour before
    the CLIP processor, as LLaVA-1.5 and Visual-CoT do, which is what makes its boxes `square_norm`."""

    arch = "llava"
    default_convention = BoxConvention.SQUARE_NORM
    model_class = "LlavaForConditionalGeneration"

    def load_processor(self, path: Path):
        from transformers.models.clip import CLIPImageProcessorPil
        from transformers.models.llava import LlavaProcessor

        tokenizer = self.load_tokenizer(path)
        image_processor = CLIPImageProcessorPil.from_pretrained(path, local_files_only=True)
        cfg_path = path / "processor_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        mcfg = self.model.config
        self.background = mean_fill(image_processor)
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

    def prepare_image(self, image):
        return pad_to_square(image, self.background)


class Qwen2VLAdapter(HFAdapter):
    arch = "qwen2_vl"
    default_convention = BoxConvention.NORM1000
    model_class = "Qwen2VLForConditionalGeneration"

    def load_processor(self, path: Path):
        tokenizer = self.load_tokenizer(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
        return ImageOnlyQwenProcessor(image_processor, tokenizer, read_chat_template(path, tokenizer))

    def input_size(self, image) -> tuple[int, int]:
        return qwen_input_size(self.processor.image_processor, image.size)


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL writes boxes in absolute pixels of its resized input."""

    arch = "qwen2_5_vl"
    default_convention = BoxConvention.RESIZED_PIXEL
    model_class = "Qwen2_5_VLForConditionalGeneration"
