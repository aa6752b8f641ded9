"""`visrl-bench generate`: VisRL's self-evolution data — preference pairs the model makes and scores itself.

For each question (no box annotation used): sample K boxes, crop each, answer from image + crop, and score
every trajectory with the task's own metric (the reward). Then:
- the diversity controller: a raised box temperature, random perturbation of sampled boxes, and a rejection
  rule keeping candidates apart (IoU below a threshold); `diversity=false` switches all three off;
- the difficulty filter: keep a question only when its outcomes are mixed (some right, some wrong);
  `filter=false` keeps any question that yields a pair;
- pairs: box step (chosen/rejected box; VisRL's rejected box does not overlap the chosen one when such a
  candidate exists), answer step (a right vs a wrong answer, both given the chosen crop), trajectory.

Gold boxes, where the task has them, are read only for diagnostics (IoU of chosen vs rejected boxes); they
never take part in selection. When that IoU gap is not clearly positive, the reward carries no signal about
where to look, and the output says so loudly.

Output dir: questions.jsonl (one record per question, appended per window: resumable), pairs.jsonl (one
row per pair, rebuilt from questions.jsonl), images/ and crops/, stats.json. `datasets.load_dataset("json",
data_files=DIR/pairs.jsonl)` reads it. The configuration and the rules live in `datagen.rules`.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visrl_bench.core.boxes import ParsedBox, format_box, iou, parse_box
from visrl_bench.core.distributed import barrier, device_for, execution, ranks
from visrl_bench.core.errors import VisrlError, isolate_failures
from visrl_bench.core.io import json_line, json_text
from visrl_bench.core.rundir import ShardedRecords, append_records, changed_keys, read_identity, read_records
from visrl_bench.core.seeding import seeded_random
from visrl_bench.datagen.rules import (
    Candidate,
    GenerateConfig,
    answer_pair,
    choose_pairs,
    difficulty,
    keep_apart,
    keep_question,
    perturb_box,
)
from visrl_bench.models import ChatRequest, GenerationSettings
from visrl_bench.reasoning import FocusStep, box_step_messages
from visrl_bench.task import task_reward

QUESTIONS_FILE = "questions.jsonl"
PAIRS_FILE = "pairs.jsonl"
STATS_FILE = "stats.json"
CONFIG_FILE = "generate.json"
WINDOW = 32  # questions per window: records are flushed per window, and sampling seeds are per window
NO_SIGNAL_GAP = 0.05  # chosen-minus-rejected gold IoU below this: the reward says nothing about focus


# --- the run ---------------------------------------------------------------------------------------------
def _rng(seed: int, sample_id: str) -> random.Random:
    return seeded_random("perturb", seed, sample_id)


def _safe(name: str) -> str:
    return (
        "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]
        + "_"
        + hashlib.sha1(name.encode()).hexdigest()[:8]
    )


def _window(task, window, adapter, cfg: GenerateConfig, out: Path, position0: int) -> list[dict]:
    conv = adapter.box_convention
    min_side = cfg.crop_min_side or task.default_crop_min_side
    live, records = [], {}
    for position, sample in window:
        try:
            image, size = sample.open_for(adapter)
        except VisrlError as exc:
            records[position] = {"position": position, "id": sample.id, "error": str(exc)}
            continue
        live.append((position, sample, image, size))
    box_settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.box_temperature,
        num_return_sequences=cfg.k,
        seed=cfg.seed + position0,
    )
    box_texts = adapter.generate(
        [ChatRequest(box_step_messages(s.question), [im]) for _, s, im, _ in live],
        box_settings,
        max(1, cfg.batch_size // cfg.k),
    )
    per_question: list[list[Candidate]] = []
    answer_requests = []
    for (_, sample, image, resized), texts in zip(live, box_texts, strict=True):
        rng = _rng(cfg.seed, sample.id)
        cands = []
        for text in texts:
            parsed = parse_box(text, conv, image.size, resized)
            cand = Candidate(text, parsed.box)
            if cfg.diversity and parsed.box is not None and rng.random() < cfg.perturb_prob:
                box = perturb_box(parsed.box, image.size, rng, cfg.perturb_scale)
                cand = Candidate(format_box(box, conv, image.size, resized), box, perturbed=True)
            cands.append(cand)
        if cfg.diversity:
            cands = keep_apart(cands, cfg.max_candidate_iou)
        for c in cands:
            if sample.gold_boxes and c.box is not None:
                c.gold_iou = max(iou(c.box, g) for g in sample.gold_boxes)
            elif sample.gold_boxes:
                c.gold_iou = 0.0
            # the candidate's own box (a jittered one is not its text's rounding), as eval crops a control's
            step = FocusStep.of(c.text, ParsedBox(c.box), image, min_side)
            c.crop = step.second
            answer_requests.append(step.request(sample.question, task.prompt(sample), image))
        per_question.append(cands)
    answer_settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.answer_temperature if cfg.answer_samples > 1 else 0.0,
        num_return_sequences=cfg.answer_samples,
        seed=cfg.seed + position0 + 1,
    )
    answers = adapter.generate(answer_requests, answer_settings, max(1, cfg.batch_size // cfg.answer_samples))
    it = iter(answers)
    for (position, sample, image, resized), cands in zip(live, per_question, strict=True):
        row = {"box_format": conv.value, "resized_size": list(resized) if resized else None}
        for c in cands:
            c.answers = next(it)
            c.rewards = [task_reward(task, sample, a, row) for a in c.answers]
            if c.box is None and cfg.invalid_box_reward is not None:
                c.rewards = [cfg.invalid_box_reward] * len(c.answers)
        records[position] = _question_record(task, position, sample, image, cands, cfg, out)
    return [records[p] for p, _ in window]


def _question_record(task, position, sample, image, cands: list[Candidate], cfg, out: Path) -> dict:
    rewards = [c.reward for c in cands]
    kind, frac = difficulty(rewards, cfg)
    kept = keep_question(rewards, cfg)
    pairs = []
    if kept:
        stem = _safe(f"{task.name}_{sample.id}")
        image_rel = f"images/{stem}.png"
        saved_crops: dict[int, str] = {}

        def crop_path(i: int) -> str:
            if i not in saved_crops:
                saved_crops[i] = f"crops/{stem}_{i}.png"
                cands[i].crop.save(out / saved_crops[i])
            return saved_crops[i]

        chosen_pairs = choose_pairs(cands, cfg)
        if chosen_pairs:
            image.save(out / image_rel)
        for n, (ci, ri) in enumerate(chosen_pairs):
            c, r = cands[ci], cands[ri]
            base = {
                "question_id": sample.id,
                "task": task.name,
                "image": image_rel,
                "question": sample.question,
                "prompt": task.prompt(sample),
                "chosen_box": c.text,
                "rejected_box": r.text,
                "chosen_crop": crop_path(ci),
                "rejected_crop": crop_path(ri),
                "chosen_score": c.reward,
                "rejected_score": r.reward,
                "chosen_iou": c.gold_iou,
                "rejected_iou": r.gold_iou,
            }
            pairs.append(
                {
                    **base,
                    "id": f"{sample.id}#box{n}",
                    "step": "box",
                    "chosen_answer": c.answers[0],
                    "rejected_answer": r.answers[0],
                }
            )
            answer = answer_pair(c, r, cfg)
            if answer:
                pairs.append(
                    {
                        **base,
                        "id": f"{sample.id}#answer{n}",
                        "step": "answer",
                        "chosen_answer": answer[0],
                        "rejected_answer": answer[1],
                        "rejected_answer_source": answer[2],
                    }
                )
            right = [a for a, s in zip(c.answers, c.rewards, strict=True) if s >= cfg.right_threshold]
            pairs.append(
                {
                    **base,
                    "id": f"{sample.id}#trajectory{n}",
                    "step": "trajectory",
                    "chosen_answer": right[0] if right else c.answers[0],
                    "rejected_answer": r.answers[int(min(range(len(r.rewards)), key=r.rewards.__getitem__))],
                }
            )
    return {
        "position": position,
        "id": sample.id,
        "difficulty": kind,
        "right_fraction": frac,
        "kept": kept and bool(pairs),
        "candidates": [
            {
                "text": c.text,
                "box": c.box.as_list() if c.box else None,
                "perturbed": c.perturbed,
                "answers": c.answers,
                "rewards": c.rewards,
                "reward": c.reward,
                "gold_iou": c.gold_iou,
            }
            for c in cands
        ],
        "pairs": pairs,
    }


def _read_done(path: Path) -> list[dict]:
    return read_records(path, repair=True)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def summarize(records: list[dict], cfg: GenerateConfig) -> dict[str, Any]:
    ok = [r for r in records if "error" not in r]
    pairs = [p for r in ok for p in r["pairs"]]
    box_pairs = [p for p in pairs if p["step"] == "box"]
    chosen_iou = [p["chosen_iou"] for p in box_pairs if p["chosen_iou"] is not None]
    rejected_iou = [p["rejected_iou"] for p in box_pairs if p["rejected_iou"] is not None]
    all_cands = [c for r in ok for c in r["candidates"]]
    right_iou = [
        c["gold_iou"] for c in all_cands if c["gold_iou"] is not None and c["reward"] >= cfg.right_threshold
    ]
    wrong_iou = [
        c["gold_iou"] for c in all_cands if c["gold_iou"] is not None and c["reward"] < cfg.right_threshold
    ]
    stats: dict[str, Any] = {
        "questions_seen": len(records),
        "errors": len(records) - len(ok),
        "kept": sum(1 for r in ok if r["kept"]),
        "all_right": sum(1 for r in ok if r["difficulty"] == "all_right"),
        "all_wrong": sum(1 for r in ok if r["difficulty"] == "all_wrong"),
        "mixed": sum(1 for r in ok if r["difficulty"] == "mixed"),
        "candidates_per_question": _mean([float(len(r["candidates"])) for r in ok]),
        "pairs": {s: sum(1 for p in pairs if p["step"] == s) for s in ("box", "answer", "trajectory")},
        "mean_chosen_score": _mean([p["chosen_score"] for p in box_pairs]),
        "mean_rejected_score": _mean([p["rejected_score"] for p in box_pairs]),
        "mean_candidate_reward": _mean([c["reward"] for c in all_cands]),
        "gold_iou": {
            "chosen": _mean(chosen_iou),
            "rejected": _mean(rejected_iou),
            "right_candidates": _mean(right_iou),
            "wrong_candidates": _mean(wrong_iou),
        },
    }
    if chosen_iou and rejected_iou:
        gap = _mean(chosen_iou) - _mean(rejected_iou)
        stats["gold_iou"]["gap"] = round(gap, 6)
        stats["focus_signal"] = gap >= NO_SIGNAL_GAP
    return stats


def generate(cfg: GenerateConfig, adapter=None, resume: bool = False, overwrite: bool = False) -> dict:
    from tqdm.auto import tqdm

    from visrl_bench.core.registry import TASKS
    from visrl_bench.models import load_model

    if cfg.k < 2:
        raise VisrlError("k must be at least 2: a pair needs two trajectories")
    task = TASKS.build(cfg.task, cfg.data, cfg.split, seed=cfg.seed, **cfg.task_options)
    out = Path(cfg.out)
    identity = {k: v for k, v in asdict(cfg).items() if k not in ("batch_size", "progress", "limit", "out")}
    identity["model"] = str(Path(cfg.model).resolve())
    identity["data"] = str(Path(cfg.data).resolve())
    where = ranks()
    store = ShardedRecords(out, QUESTIONS_FILE, where.rank, where.world)
    if (out / CONFIG_FILE).is_file() and not overwrite:  # every rank checks, so all of them stop
        if not resume:
            raise VisrlError(f"{out} already holds generated data; pass --resume to continue or --overwrite")
        changed = changed_keys(read_identity(out / CONFIG_FILE, key=None), identity)
        if changed:
            raise VisrlError(f"{out}: cannot resume with different settings ({', '.join(changed)})")
    barrier()
    if where.main:
        if overwrite and out.exists():
            store.remove()
            for name in (PAIRS_FILE, STATS_FILE, CONFIG_FILE):
                (out / name).unlink(missing_ok=True)
        for sub in ("images", "crops"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
        store.repair()
    barrier()
    done_positions = {r["position"] for r in store.done()}
    barrier()  # every rank has read what is done before any rank appends again
    if adapter is None:
        adapter = load_model(cfg.model, cfg.arch, device=device_for(cfg.device))
    started = time.perf_counter()
    total = task.count() if hasattr(task, "count") else None
    if cfg.limit is not None:
        total = min(total, cfg.limit) if total is not None else cfg.limit
    bar = tqdm(
        total=total,
        initial=len(done_positions),
        desc=f"generate {task.name}",
        unit="q",
        disable=not (cfg.progress and where.main),
        dynamic_ncols=True,
    )
    with store.open() as sink:

        def rejected(item, exc: Exception) -> dict:  # the processor or model refused this one's input
            position, sample = item
            return {"position": position, "id": sample.id, "error": sample.input_rejected(exc)}

        pending = [0]  # windows with missing questions so far: dealt round-robin, alike on every rank

        def flush(window):
            # the whole window, even when a resumed run has part of it: its seeds and batches are those
            # of an uninterrupted run; only the missing questions are written
            missing = {p for p, _ in window if p not in done_positions}
            if not missing:
                return
            pending[0] += 1
            if not where.takes(pending[0] - 1):
                return
            first = window[0][0]

            def run(part):
                return _window(task, part, adapter, cfg, out, first)

            records = isolate_failures(window, run, rejected)
            append_records(sink, [r for r in records if r["position"] in missing])
            bar.update(len(missing) * where.world)

        window: list = []
        for position, sample in enumerate(task.samples()):
            if cfg.limit is not None and position >= cfg.limit:
                break
            # windows are aligned to multiples of WINDOW: sampling seeds are per window, and rank r takes
            # every world-th window still to do
            if window and position // WINDOW != window[0][0] // WINDOW:
                flush(window)
                window = []
            window.append((position, sample))
        if window:
            flush(window)
    bar.close()
    barrier()
    if not where.main:
        barrier()  # the main process merges and writes pairs.jsonl and stats.json
        return json.loads((out / STATS_FILE).read_text())
    records = store.merge(key=lambda r: r["position"], order=lambda r: r["position"])
    with (out / PAIRS_FILE).open("w", encoding="utf-8") as f:
        for r in records:
            for p in r.get("pairs", []):
                f.write(json_line(p))
    stats = summarize(records, cfg)
    stats["seconds_this_run"] = round(time.perf_counter() - started, 1)
    stats["model"] = adapter.describe()
    stats["config"] = asdict(cfg)
    stats["execution"] = execution()
    (out / STATS_FILE).write_text(json_text(stats, indent=2, sort_keys=True) + "\n")
    if stats.get("focus_signal") is False:
        print(
            f"\n!!! WARNING: chosen boxes are no closer to the gold box than rejected ones (mean IoU "
            f"{stats['gold_iou']['chosen']} vs {stats['gold_iou']['rejected']}): the reward carries no "
            "signal about where to look, and DPO on these pairs will only add noise. Check the answer step "
            "first (gold-crop accuracy) and that SFT boxes are partly right. !!!\n",
            file=sys.stderr,
        )
    barrier()
    return stats


# the knobs that decide which questions are kept, and nothing else: runs differing only in these can share
# one set of samples (generate with filter=false once, then `apply_filter`)
FILTER_FIELDS = ("filter", "min_right_fraction", "max_right_fraction")


def apply_filter(src: str | Path, out: str | Path, cfg: GenerateConfig) -> dict:
    """The difficulty filter of `cfg`, applied after the fact to a `filter=false` run in `src`: writes the
    dataset `generate(cfg)` would have written from the same samples (pair choice does not depend on the
    filter), its images and crops linked, not copied. Returns its stats."""
    src, out = Path(src).resolve(), Path(out)
    before = json.loads((src / CONFIG_FILE).read_text()) if (src / CONFIG_FILE).is_file() else None
    if before is None or before.get("filter") is not False or not (src / STATS_FILE).is_file():
        raise VisrlError(f"{src}: apply_filter needs a finished `generate` run with filter=false")
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("batch_size", "progress", "limit", "out")}
    changed = sorted(
        k for k in mine if k not in FILTER_FIELDS and k not in ("model", "data") and before.get(k) != mine[k]
    )
    if changed:
        raise VisrlError(f"{src}: its samples were drawn with different settings ({', '.join(changed)})")
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "crops"):
        link = out / sub
        if not link.exists():
            link.symlink_to(src / sub, target_is_directory=True)
    records = []
    for rec in sorted(_read_done(src / QUESTIONS_FILE), key=lambda r: r["position"]):
        if "error" not in rec and not keep_question([c["reward"] for c in rec["candidates"]], cfg):
            rec = {**rec, "kept": False, "pairs": []}
        records.append(rec)
    with (out / QUESTIONS_FILE).open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json_line(rec))
    with (out / PAIRS_FILE).open("w", encoding="utf-8") as f:
        for rec in records:
            for p in rec.get("pairs", []):
                f.write(json_line(p))
    stats = summarize(records, cfg)
    stats["derived_from"] = str(src)
    stats["config"] = asdict(cfg)
    (out / CONFIG_FILE).write_text(
        json.dumps({**before, **{k: mine[k] for k in FILTER_FIELDS}}, indent=2, sort_keys=True) + "\n"
    )
    stats["execution"] = execution()
    (out / STATS_FILE).write_text(json_text(stats, indent=2, sort_keys=True) + "\n")
    return stats
