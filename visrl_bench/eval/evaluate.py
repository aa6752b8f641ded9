"""`visrl-bench eval`: run a model over tasks in a reasoning mode, crash-safe and resumable.

Every sample's record is appended to DIR/samples.jsonl and flushed as soon as its window of samples is
done, so a crash or Ctrl-C loses at most the window in flight. `--resume` skips what is already there (a
half-written last line is cut off and redone); results.json is always recomputed from samples.jsonl in the
benchmark's sample order, so a resumed run's results equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench import __version__
from visrl_bench.core.boxes import holds_box, iou, parse_box
from visrl_bench.core.config import validate
from visrl_bench.core.distributed import barrier, device_for, execution, gather, ranks
from visrl_bench.core.errors import Bounded, Bounds, VisrlError, isolate_failures
from visrl_bench.core.io import json_text
from visrl_bench.core.registry import MODES, TASKS
from visrl_bench.core.rundir import (
    ShardedRecords,
    append_records,
    changed_keys,
    read_identity,
    weights_fingerprint,
)
from visrl_bench.eval.aggregate import FOCUS_NOTES, ZOOM_NOTES, aggregate_run
from visrl_bench.eval.scoring import git_hash, package_versions
from visrl_bench.eval.windows import enumerate_limited, merged_timing, progress_bar, windows
from visrl_bench.models import ChatRequest, GenerationSettings, LMMAdapter, generate_turns
from visrl_bench.reasoning import FocusStep, Mode, box_step_messages, direct_messages, turn_text, zoom_request
from visrl_bench.task import Sample

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
WINDOW_BATCHES = 4  # samples gathered per window = batch size x this; sorted by length inside a window


@dataclass
class TaskSpec:
    name: str
    data: str
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from visrl_bench.task import check_task_options

        check_task_options(self.options, f"{self.name} task options")


@dataclass
class EvalConfig(Bounded):
    model: str
    tasks: list[TaskSpec]
    mode: str = "direct"
    arch: str | None = None
    box_format: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 1
    seed: int = 0
    crop_min_side: int | None = None  # None: the task's default (224, Visual-CoT's rule, for real benchmarks)
    limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    max_turns: int = 3  # zoom: most crops a question may take (1 is cot)

    BOUNDS: ClassVar[Bounds] = {
        "batch_size": (1, None),
        "seed": (0, None),
        "crop_min_side": (1, None),
        "limit": (1, None),
        "max_turns": (1, 16),  # each crop adds an image to the context: 16 is far past any use
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "zoom" and self.max_turns != EvalConfig.max_turns:
            raise VisrlError(f"option max_turns is for mode zoom (mode {self.mode} takes one crop at most)")
        if self.mode == "zoom" and self.max_turns > 1 and self.generation.num_return_sequences > 1:
            raise VisrlError("mode zoom with max_turns > 1 decodes one sample a turn: num_return_sequences 1")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.mode != "zoom":  # a zoom-only option: other runs' records stay as they were
            d.pop("max_turns")
        return d


# decoding options that may also sit at the top level, as the command's flags do; `seed` is not one of
# them: the top-level seed is the run's (shuffles, random boxes, CIs) and the sampling seed's default
GENERATION_KEYS = {f.name for f in fields(GenerationSettings)} - {"seed"}


def eval_config_from_dict(values: dict[str, Any], source: str = "config") -> EvalConfig:
    """Flat options (CLI names or YAML keys) -> EvalConfig, through the one config loader: decoding
    options may sit at the top level (`temperature: 0.7`) or under `generation:`."""
    values = dict(values)
    generation = dict(values.pop("generation", None) or {})
    generation.update({k: values.pop(k) for k in list(values) if k in GENERATION_KEYS})
    generation.setdefault("seed", values.get("seed", 0))
    return validate(EvalConfig, {**values, "generation": generation}, source)


class RunDirError(VisrlError):
    pass


# --- the run directory -------------------------------------------------------------------------------------
def _identity(cfg: EvalConfig, adapter: LMMAdapter, tasks: list) -> dict[str, Any]:
    """What decides each sample's result; a run can only be resumed under the same identity. Batch size and
    limit are left out: they change how much is done, not what. Task versions are in (a new version may
    score or group samples differently), and so is what decoding set aside from the checkpoint."""
    described = adapter.describe()
    return {
        "task_versions": {t.name: t.version for t in tasks},
        "checkpoint_sampling_ignored": described.get("checkpoint_sampling_ignored", {}),
        "model": str(Path(cfg.model).resolve()),
        "weights": weights_fingerprint(cfg.model),
        "arch": described["arch"],
        "box_convention": described["box_convention"],
        "dtype": described.get("dtype"),
        "device_type": str(described.get("device", "cpu")).split(":")[0],
        "mode": cfg.mode,
        "tasks": [{**asdict(t), "data": str(Path(t.data).resolve())} for t in cfg.tasks],
        "generation": cfg.generation.as_dict(),
        "seed": cfg.seed,
        "crop_min_side": cfg.crop_min_side,
        **({"max_turns": cfg.max_turns} if cfg.mode == "zoom" else {}),
    }


def prepare_run_dir(
    out: Path, identity: dict, resume: bool, overwrite: bool, store: ShardedRecords
) -> list[dict]:
    """Check the directory against this run; return the records already done (when resuming). Every rank
    checks (so that all of them stop on a refused directory); the main process then claims it."""
    run_file = out / RUN_FILE
    if not overwrite and (run_file.is_file() or any(p.is_file() for p in store.sources())):
        previous = read_identity(run_file) or {}
        if not previous or changed_keys(previous, identity):
            keys = ", ".join(changed_keys(previous, identity)) if previous else "run.json missing"
            raise RunDirError(
                f"{out} holds a run with a different config (differs in: {keys}); choose another "
                "--output or pass --overwrite to replace it"
            )
        if not resume:
            raise RunDirError(
                f"{out} already holds this run; pass --resume to continue it or --overwrite to start over"
            )
    barrier()  # every rank has looked before the main process changes anything
    if ranks().main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            store.remove()
            for name in (RESULTS_FILE, RUN_FILE):
                (out / name).unlink(missing_ok=True)
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": identity, "visrl_bench_version": __version__}, indent=2))
        tmp.replace(run_file)
        store.repair()
    barrier()
    done = store.done()
    barrier()  # every rank has read what is done before any rank appends again
    return done


# --- one window of samples ---------------------------------------------------------------------------------
def run_window(
    task, window: list[tuple[int, Sample]], adapter: LMMAdapter, mode: Mode, cfg: EvalConfig
) -> list[dict]:
    """Generate and score one window of samples. A sample whose image fails to load, or whose input the
    processor or the model rejects, becomes that sample's error record; the others are scored."""

    def rejected(item: tuple[int, Sample], exc: Exception) -> dict:
        position, sample = item
        error = sample.input_rejected(exc)
        return {"task": task.name, "position": position, **task.score(sample, None, None), "error": error}

    return isolate_failures(window, lambda part: _run_window(task, part, adapter, mode, cfg), rejected)


def _run_window(
    task, window: list[tuple[int, Sample]], adapter: LMMAdapter, mode: Mode, cfg: EvalConfig
) -> list[dict]:
    settings, conv = cfg.generation, adapter.box_convention
    min_side = cfg.crop_min_side or task.default_crop_min_side
    records: dict[int, dict] = {}
    live: list[tuple[int, Sample, Any, tuple[int, int] | None]] = []
    for position, sample in window:
        try:
            image, size = sample.open_for(adapter)
        except VisrlError as exc:
            records[position] = {**task.score(sample, None, None), "error": str(exc)}
            continue
        live.append((position, sample, image, size))

    focus: dict[int, dict] = {}
    zooms: dict[int, list[dict]] = {}  # zoom: every box step's record, in turn order

    def focus_info(sample: Sample, step: FocusStep) -> dict:
        info = {
            "source": mode.box_source,
            "text": step.text,
            "box": step.box.as_list() if step.box else None,
            "repairs": step.parsed.repairs,
            "parse_error": step.parsed.reason,
            "crop": step.crop_box.as_list() if step.crop_box else None,
        }
        if sample.gold_boxes:
            info["iou"] = max(iou(step.box, g) for g in sample.gold_boxes) if step.box else 0.0
        return info

    def record_focus(j: int, step: FocusStep) -> ChatRequest:
        """Record sample j's box step; its answer turn: the image and the crop (or the image again)."""
        position, sample, image, _ = live[j]
        focus[position] = focus_info(sample, step)
        return step.request(sample.question, task.prompt(sample), image)

    if not live:
        requests, outputs = [], []
    elif mode.model_writes_box:
        box_requests = [ChatRequest(box_step_messages(s.question), [im]) for _, s, im, _ in live]
        requests = [None] * len(live)
        crops = cfg.max_turns if mode.zoom else 1
        steps_of: list[list[FocusStep]] = [[] for _ in live]
        invalid: dict[int, list[int]] = {}  # zoom: the turns whose call for a crop held no usable box

        def model_box(j: int, turn: int, text: str) -> ChatRequest | None:
            """The turn after sample j's reply `text`: its crop and the answer turn (or, zooming with crops
            left, the turn that may ask for one more); None once the reply after a crop is the answer."""
            position, sample, image, resized = live[j]
            if turn > 1 and (len(steps_of[j]) >= crops or not holds_box(text)):
                return None
            parsed = parse_box(text, conv, image.size, resized)
            if turn > 1 and parsed.box is None:  # a call whose box does not parse: the full image, as turn 1
                invalid.setdefault(position, []).append(turn)
            step = FocusStep.of(text, parsed, image, min_side, crop=mode.crop)
            steps_of[j].append(step)
            if turn == 1:
                focus[position] = focus_info(sample, step)
            if mode.zoom:
                zooms.setdefault(position, []).append(focus_info(sample, step))
            final = len(steps_of[j]) >= crops
            requests[j] = zoom_request(steps_of[j], sample.question, task.prompt(sample), image, final)
            return requests[j]

        box_settings = replace(settings, num_return_sequences=1)
        turns = generate_turns(
            adapter, box_requests, model_box, [box_settings, settings], cfg.batch_size, max_turns=crops + 1
        )
        outputs = [t[-1] for t in turns]
    else:
        if mode.two_turns:  # a control: we supply the box
            requests = [
                record_focus(
                    j,
                    FocusStep.from_box(
                        mode.control_box(s, im.size, cfg.seed), im, conv, rs, min_side, crop=mode.crop
                    ),
                )
                for j, (_, s, im, rs) in enumerate(live)
            ]
        else:
            requests = [ChatRequest(direct_messages(task.prompt(s)), [im]) for _, s, im, _ in live]
        outputs = adapter.generate(requests, settings, cfg.batch_size)

    for (position, sample, image, resized), request, outs in zip(live, requests, outputs, strict=True):
        # every input a box conversion used, so that any box in the record (the focus box, a RefCOCO
        # answer) can be re-derived from samples.jsonl alone, e.g. by `visrl-bench score`
        row = {
            "box_format": conv.value,
            "image_size": list(image.size),
            "resized_size": list(resized) if resized else None,
        }
        rec = {**task.score(sample, outs[0], row), **row}
        steps = []
        if mode.two_turns:
            steps.append(
                {
                    "step": "box",
                    "prompt": turn_text(request.messages, 0),
                    "output": focus[position]["text"],
                }
            )
        for n, info in enumerate(zooms.get(position, [])[1:], start=1):  # zoom: the boxes after the first
            steps.append(
                {"step": "zoom", "prompt": turn_text(request.messages, 2 * n), "output": info["text"]}
            )
        steps.append({"step": "answer", "prompt": turn_text(request.messages, -1), "output": outs[0]})
        rec["steps"] = steps
        if len(outs) > 1:
            rec["outputs"] = outs
        if mode.two_turns:
            rec["focus"] = focus[position]
        if mode.zoom:
            rec["zoom"] = {
                "crops": len(zooms[position]),
                "max_turns": cfg.max_turns,
                "boxes": zooms[position],
                "invalid_calls": invalid.get(position, []),
            }
        records[position] = rec
    return [{"task": task.name, "position": p, **records[p]} for p, _ in window]


# --- the run -----------------------------------------------------------------------------------------------
def build_tasks(cfg: EvalConfig) -> list:
    tasks = [TASKS.build(t.name, t.data, t.split, seed=cfg.seed, **t.options) for t in cfg.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise VisrlError(f"a task is listed twice: {', '.join(names)}")
    mode = MODES.load(cfg.mode)
    if mode.box_source == "gold":
        lacking = [t.name for t in tasks if not getattr(t, "has_gold_boxes", False)]
        if lacking:
            raise VisrlError(f"mode gt_box needs gold focus boxes, which {', '.join(lacking)} does not have")
    return tasks


def evaluate(
    cfg: EvalConfig,
    out_dir: str | Path,
    *,
    adapter: LMMAdapter | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) an evaluation into `out_dir`; returns the results.json object."""
    from visrl_bench.models import load_model

    tasks = build_tasks(cfg)  # data errors surface before a model is loaded
    mode: Mode = MODES.load(cfg.mode)
    if adapter is None:
        adapter = load_model(
            cfg.model,
            cfg.arch,
            device=device_for(cfg.device),
            dtype=cfg.dtype,
            box_format=cfg.box_format,
            trust_remote_code=cfg.trust_remote_code,
        )
    out = Path(out_dir)
    identity = _identity(cfg, adapter, tasks)
    where = ranks()
    store = ShardedRecords(out, SAMPLES_FILE, where.rank, where.world)
    done = prepare_run_dir(out, identity, resume, overwrite, store)
    done_keys = {(r["task"], r["id"]) for r in done}
    timing: dict[str, Any] = {}
    with store.open() as sink:
        for task in tasks:
            # windows are fixed by position (not by what is left), so a resumed or sharded run batches every
            # question with the same neighbours as one uninterrupted process: the same greedy outputs and
            # sampling seeds. Rank r takes every world-th window that still has missing records (a
            # resumed run's leftovers are shared out evenly); a window partly done is run again whole and
            # only its missing records are written.
            task_windows = windows(
                enumerate_limited(task.samples(), cfg.limit), max(cfg.batch_size, 1) * WINDOW_BATCHES
            )
            already = sum(1 for k in done_keys if k[0] == task.name)
            bar = progress_bar(task, cfg.limit, already, progress and where.main)
            started, count = time.perf_counter(), 0
            pending = 0  # windows with missing records so far: dealt round-robin, the same on every rank
            for window in task_windows:
                missing = [s.id for _, s in window if (task.name, s.id) not in done_keys]
                if not missing:
                    continue
                pending += 1
                if not where.takes(pending - 1):
                    continue
                fresh = set(missing)
                append_records(
                    sink, [r for r in run_window(task, window, adapter, mode, cfg) if r["id"] in fresh]
                )
                count += len(missing)
                bar.update(len(missing) * where.world)  # the other ranks keep about the same pace
            bar.close()
            timing[task.name] = (count, time.perf_counter() - started)
            if where.main and 0 < pending < where.world:  # the run is right, but processes sat idle
                print(
                    f"warning: {task.name}: {pending} window(s) of work for {where.world} processes; "
                    f"{where.world - pending} had nothing to do (fewer processes or a smaller --batch-size "
                    "would use them)",
                    file=sys.stderr,
                )
    timing = merged_timing(gather(timing))
    if not where.main:
        barrier()  # the main process merges and writes results.json
        return json.loads((out / RESULTS_FILE).read_text())
    order = {t.name: i for i, t in enumerate(tasks)}
    records = store.merge(
        key=lambda r: (r["task"], r["position"]),
        order=lambda r: (order.get(r["task"], len(order)), r["position"]),
    )
    per_task = aggregate_run(tasks, records, cfg.seed, cfg.limit)
    notes = {}
    for t in tasks:
        shown = {k: v for k, v in {**FOCUS_NOTES, **ZOOM_NOTES}.items() if k in per_task.get(t.name, {})}
        if t.metric_notes or shown:
            notes[t.name] = {**t.metric_notes, **shown}
    results = {
        "results": per_task,
        "notes": notes,
        "config": cfg.as_dict(),
        "provenance": {
            "visrl_bench_version": __version__,
            "git_hash": git_hash(),
            "task_versions": {t.name: t.version for t in tasks},
            "prompt_sha256": {
                **{t.name: t.prompt_sha256 for t in tasks},
                f"mode:{mode.name}": mode.prompt_sha256,
            },
            "task_config": {t.name: t.config() for t in tasks},
            # relative data paths in the config are relative to this: `show` reads the data from anywhere
            "cwd": str(Path.cwd()),
            "model": adapter.describe(),
            "mode": mode.name,
            "generation": cfg.generation.as_dict(),
            "seed": cfg.seed,
            "execution": execution(),
            "package_versions": package_versions(
                (
                    "numpy",
                    "pandas",
                    "pillow",
                    "torch",
                    "transformers",
                    "tokenizers",
                    "safetensors",
                    "pycocotools",
                )
            ),
        },
        "timing": timing,
    }
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text(json_text(results, indent=2))
    tmp.replace(out / RESULTS_FILE)
    barrier()
    return results
