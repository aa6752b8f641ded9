"""One small registry of lazy "module:attr" entries for tasks, models, reasoning modes and trainers.

Entries are strings until used, so `visrl-bench list` or `score` never import torch, transformers or TRL.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from visrl_bench.core.errors import UnknownNameError, VisrlError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr"
    kwargs: dict[str, Any] = field(default_factory=dict)  # bound when the entry is built (e.g. a variant)
    description: str | None = None  # lets `list` describe heavy entries (models) without importing them

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ImportError(
                f"registry entry {self.name!r}: {module_name} has no attribute {attr!r}"
            ) from None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, *, description: str | None = None, **kwargs: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._entries[name] = Entry(name, target, dict(kwargs), description)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def load(self, name: str) -> Any:
        return self.entry(name).load()

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Import the entry and call it with its bound kwargs plus the caller's (checked and typed by
        `check_options`)."""
        entry = self.entry(name)
        return entry.load()(*args, **{**entry.kwargs, **self.check_options(name, kwargs)})

    def check_options(self, name: str, options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """`options` for entry `name`, each read against the type its signature gives it (YAML and the
        command line hand text and numbers); an unknown key or a value of the wrong type is refused in one
        line naming the option (`prefix` + key). Usable before a run starts: it imports, never builds."""
        from visrl_bench.core.config import read_value

        entry = self.entry(name)
        target = entry.load()
        params = inspect.signature(target).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return dict(options)
        accepted = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in entry.kwargs]
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise VisrlError(
                f"{self.kind} {name!r} does not take option(s) {', '.join(prefix + u for u in unknown)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )
        try:
            hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        except (NameError, TypeError):  # an annotation that does not resolve: leave the values as given
            hints = {}
        out = {}
        for key, value in options.items():
            try:
                out[key] = read_value(hints.get(key, Any), value)
            except ValueError as exc:
                raise VisrlError(
                    f"option {prefix}{key} of {self.kind} {name!r} {exc}, got {value!r}"
                ) from None
        return out


TASKS = Registry("task")
MODELS = Registry("model")
MODES = Registry("reasoning mode")
TRAINERS = Registry("trainer")

_T = "visrl_bench.tasks"
TASKS.register("vstar_bench", f"{_T}.vstar:VStarBench")
TASKS.register("hr_bench_4k", f"{_T}.hr_bench:HRBench", variant="4k")
TASKS.register("hr_bench_8k", f"{_T}.hr_bench:HRBench", variant="8k")
TASKS.register("textvqa", f"{_T}.textvqa:TextVQA")
TASKS.register("refcoco", f"{_T}.refcoco:RefCOCO", dataset="refcoco")
TASKS.register("refcoco+", f"{_T}.refcoco:RefCOCO", dataset="refcoco+")
TASKS.register("refcocog", f"{_T}.refcoco:RefCOCO", dataset="refcocog")
TASKS.register("zoomworld", f"{_T}.zoomworld:ZoomWorld")

_M = "visrl_bench.models.hf"
MODELS.register(
    "llava",
    f"{_M}.llava:LlavaAdapter",
    description="LLaVA-1.5 (llava-hf format); boxes square_norm (image padded to a square)",
)
MODELS.register(
    "qwen2_vl", f"{_M}.qwen2_vl:Qwen2VLAdapter", description="Qwen2-VL; boxes norm1000 (0-1000 grid)"
)
MODELS.register(
    "qwen2_5_vl",
    f"{_M}.qwen2_5_vl:Qwen25VLAdapter",
    description="Qwen2.5-VL; boxes resized_pixel (pixels of its resized input)",
)
MODELS.register(
    "qwen3_vl",
    f"{_M}.qwen3_vl:Qwen3VLAdapter",
    description="Qwen3-VL; boxes norm1000 (0-1000 grid); absolute vision positions",
)

_R = "visrl_bench.reasoning.modes"
for _name in ("direct", "cot", "zoom", "gt_box", "random_box", "center_box", "box_no_crop"):
    MODES.register(_name, f"{_R}:{_name.upper()}")

_TR = "visrl_bench.trainers"
TRAINERS.register(
    "sft", f"{_TR}.sft:RECIPE", description="warm-up: question -> gold box; image + crop -> answer"
)
TRAINERS.register("dpo", f"{_TR}.dpo:RECIPE", description="trajectory-level DPO on `generate` pairs")
TRAINERS.register(
    "step_dpo", f"{_TR}.step_dpo:RECIPE", description="VisRL step-level DPO: box-step + answer-step losses"
)
TRAINERS.register(
    "grpo",
    f"{_TR}.grpo:RECIPE",
    description="GRPO on the box step: reward = the task's metric on the crop's answer",
)
TRAINERS.register(
    "visrl", f"{_TR}.visrl:RECIPE", description="SFT -> rounds of [generate -> step-DPO -> merge] -> eval"
)

ALL = {"tasks": TASKS, "models": MODELS, "modes": MODES, "trainers": TRAINERS}
