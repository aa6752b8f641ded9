"""Our adapters and reasoning modes inside lmms-eval's evaluator:

    lmms-eval --model visrl_cot --model_args pretrained=DIR,mode=cot --tasks ... --batch_size 8

`model_args`: pretrained (a local checkpoint dir any of our adapters loads), mode (direct, cot, random_box,
center_box, box_no_crop), arch, box_format, dtype, max_new_tokens (when the task sets none), crop_min_side,
seed, question_field (the doc field the box step asks about in two-turn modes; default "question", falling
back to the task's prompt), trace (a JSONL file that receives each sample's steps and focus box). lmms-eval's
`--batch_size` and `--device` are passed through.

Each request goes through `visrl_bench.eval.evaluate.run_window`, the code `visrl-bench eval` runs: the
same chat messages, image preparation, batching and box handling, so a prediction here equals
`visrl-bench eval`'s for the same checkpoint, mode, prompt and image.
The task's `until` strings cut the text after generation
(greedy decoding is causal, so the kept text is what stopping there would have produced). gt_box needs gold
boxes in a declared convention, which lmms-eval docs do not carry: use `visrl-bench eval` for it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmms_eval.api.model import lmms
from tqdm import tqdm

from visrl_bench.core.errors import DataError, VisrlError
from visrl_bench.core.io import json_line
from visrl_bench.core.registry import MODES
from visrl_bench.eval.evaluate import WINDOW_BATCHES, EvalConfig, run_window
from visrl_bench.models import GenerationSettings, load_model
from visrl_bench.reasoning import Mode
from visrl_bench.task import Sample

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
_IGNORED_GEN_KWARGS = {"do_sample", "num_beams", "use_cache", "image_aspect_ratio"}


class _DocSample(Sample):
    """A sample whose image is already in memory (lmms-eval hands over PIL images, not files)."""

    def __init__(self, *, image_obj: Any = None, problem: str | None = None, origin: str = "", **kw: Any):
        super().__init__(**kw)
        self._image_obj, self._problem, self._origin = image_obj, problem, origin

    def load_image(self):
        if self._problem:
            raise DataError(self._origin, self._problem)
        return self._image_obj.convert("RGB")


class _LmmsEvalTask:
    """What `run_window` needs of a task; lmms-eval itself scores the returned text."""

    name = "lmms_eval"

    def __init__(self, crop_min_side: int):
        self.default_crop_min_side = crop_min_side

    def prompt(self, sample: Sample) -> str:
        return sample.meta["prompt"]

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict:
        return {"id": sample.id, "prediction": prediction, "missing": prediction is None}


def generation_from_gen_kwargs(
    gen_kwargs: dict[str, Any], default_max_new_tokens: int, seed: int
) -> tuple[GenerationSettings, list[str]]:
    """lmms-eval's per-task `generation_kwargs` -> our settings and the stop strings."""
    kw = dict(gen_kwargs or {})
    until = kw.pop("until", None) or []
    until = [until] if isinstance(until, str) else list(until)
    num_beams = kw.get("num_beams") or 1
    if int(num_beams) != 1:
        raise VisrlError(f"visrl_cot decodes greedily or by sampling; num_beams={num_beams} is not supported")
    temperature = float(kw.pop("temperature", 0) or 0)
    if kw.get("do_sample") is False:
        temperature = 0.0
    top_p = kw.pop("top_p", None)
    # many lmms-eval tasks write `temperature: 0, top_p: 0` for greedy; top_p means nothing then
    top_p = 1.0 if temperature <= 0 or top_p is None or float(top_p) == 0 else float(top_p)
    max_new_tokens = kw.pop("max_new_tokens", None)
    settings = GenerationSettings(
        max_new_tokens=int(default_max_new_tokens if max_new_tokens is None else max_new_tokens),
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    unknown = sorted(set(kw) - _IGNORED_GEN_KWARGS)
    if unknown:
        log.warning("visrl_cot ignores generation_kwargs %s", ", ".join(unknown))
    return settings, [u for u in until if u]


def cut_at_stop_strings(text: str, until: list[str]) -> str:
    for stop in until:
        text = text.split(stop)[0]
    return text


class VisrlCoT(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str,
        mode: str = "direct",
        arch: str | None = None,
        box_format: str | None = None,
        dtype: str = "auto",
        max_new_tokens: int | None = None,
        crop_min_side: int = 224,
        seed: int = 0,
        question_field: str = "question",
        trace: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise VisrlError(
                f"visrl_cot does not take model_args {', '.join(sorted(unknown))}; it takes: pretrained, "
                "mode, arch, box_format, dtype, max_new_tokens, crop_min_side, seed, question_field, trace, "
                "trust_remote_code"
            )
        self.mode: Mode = MODES.load(str(mode))
        if self.mode.box_source == "gold":
            raise VisrlError(
                "mode gt_box needs gold focus boxes in a declared box convention, which lmms-eval docs do "
                "not carry; run it with `visrl-bench eval --mode gt_box`"
            )
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise VisrlError(f"visrl_cot needs a whole --batch_size >= 1, got {batch_size!r}")
        self.adapter = load_model(
            str(pretrained),
            arch,
            device=device or "auto",
            dtype=str(dtype),
            box_format=box_format,
            trust_remote_code=bool(trust_remote_code),
        )
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        self.question_field = str(question_field)
        self.trace = Path(trace) if trace else None
        self.config = EvalConfig(
            model=str(pretrained),
            tasks=[],
            mode=self.mode.name,
            batch_size=self.batch_size_per_gpu,
            seed=int(seed),
            crop_min_side=int(crop_min_side),
        )
        self._task = _LmmsEvalTask(int(crop_min_side))

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # --- lmms-eval's interface ------------------------------------------------------------------------
    def loglikelihood(self, requests):
        raise NotImplementedError(
            "visrl_cot answers by generating (its answer follows a generated box); use a generate_until "
            "task, not a log-likelihood (multiple-choice scoring) one"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("visrl_cot runs its own two turns (box, then answer); no multi-round tasks")

    def generate_until(self, requests) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            _, gen_kwargs, _, _, task, split = request.args
            key = (task, split, json.dumps(gen_kwargs, sort_keys=True, default=str))
            groups.setdefault(key, []).append(i)
        results: list[str] = [""] * len(requests)
        window = self.batch_size_per_gpu * WINDOW_BATCHES
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="visrl_cot")
        for (task, _, _), indices in groups.items():
            settings, until = generation_from_gen_kwargs(
                requests[indices[0]].args[1], self.max_new_tokens, self.config.seed
            )
            cfg = replace(self.config, generation=settings)
            for start in range(0, len(indices), window):
                chunk = [(i, self._sample(requests[i])) for i in indices[start : start + window]]
                records = run_window(self._task, chunk, self.adapter, self.mode, cfg)
                for record in records:
                    i = record["position"]
                    if record.get("error"):
                        log.error("visrl_cot: %s (answered with an empty string)", record["error"])
                    text = cut_at_stop_strings(record.get("prediction") or "", until)
                    results[i] = text
                    context, gen_kwargs = requests[i].args[:2]
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                self._write_trace(task, records)
                bar.update(len(chunk))
        bar.close()
        return results

    # --- helpers --------------------------------------------------------------------------------------
    def _sample(self, request) -> _DocSample:
        context, _, doc_to_visual, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        if not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        images = [v for v in visuals if hasattr(v, "convert")]
        problem = None
        if len(images) != 1 or len(visuals) != 1:
            problem = f"doc {doc_id}: visrl_cot takes one image per question, got {len(visuals)} visuals"
        question = doc.get(self.question_field) if isinstance(doc, dict) else None
        return _DocSample(
            id=f"{task}/{split}/{doc_id}",
            question=question if isinstance(question, str) else context,
            answer=None,
            meta={"prompt": context},
            image_obj=images[0] if images else None,
            problem=problem,
            origin=f"lmms-eval task {task} ({split})",
        )

    def _write_trace(self, task: str, records: list[dict]) -> None:
        if self.trace is None:
            return
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        with self.trace.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json_line({**r, "task": task}))
