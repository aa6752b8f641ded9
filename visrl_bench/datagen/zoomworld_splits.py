"""ZoomWorld's splits on disk: the rows each split holds and `generate`, which writes them all.

The splits: pretrain (perception examples: crops with their answers, and direct questions; no
question -> box pairs), ground (referring expressions "the orange circle" -> the object's box, on scenes of
1, 2 and 3-5 objects for a curriculum: the stand-in for the RefCOCO-style grounding data real base LMMs are
pretrained on; never the question's phrasing), sft (few questions WITH gold boxes), rl (many questions; gold
boxes on disk for diagnostics only), test, and pairs: "Do the orange circle and the teal square carry the
same tile pattern?" (yes / no, half each), which needs BOTH tiles read, so one crop cannot answer it: direct
and single-box answers sit at 50% by construction (the second tile is the same as the first with probability
1/2 whatever the first is); it is for multi-turn zoom; ground_test (held-out grounding scenes of 1, 2
and 3-5 objects, never trained on: localisation, and selection of the named object among two). Each split
draws from its own seeded streams, keyed by image id, so adding one leaves the others' bytes as they were.
Everything is determined by the seed and the config: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from visrl_bench.core.boxes import Box, crop_region
from visrl_bench.core.seeding import seeded_random
from visrl_bench.datagen.zoomworld import (
    ANSWERS,
    PAIR_QUESTION,
    PATTERNS,
    QUESTION,
    VERSION,
    Scene,
    ZoomWorldConfig,
    crop_answer,
    make_scene,
    render,
)


def question_rows(scene: Scene, split: str, rng: random.Random, k: int) -> list[dict]:
    targets = rng.sample(scene.objects, k=min(k, len(scene.objects)))  # different intents per image
    rows = []
    for i, t in enumerate(targets):
        rows.append(
            {
                "id": f"{scene.image_id}_q{i}",
                "image": f"images/{split}/{scene.image_id}.png",
                "width": scene.size[0],
                "height": scene.size[1],
                "question": QUESTION.format(colour=t.colour, shape=t.shape),
                "answer": t.pattern,
                "bbox": t.box.as_list(),
                "category": t.shape,
                "target": t.as_dict(),
            }
        )
    return rows


def _jitter(box: Box, rng: random.Random) -> Box:
    """The box itself a quarter of the time, else rescaled (0.7-1.4x) and shifted (up to 25%)."""
    if rng.random() < 0.25:
        return box
    dx, dy = rng.uniform(-0.25, 0.25) * box.width, rng.uniform(-0.25, 0.25) * box.height
    s = rng.uniform(0.7, 1.4)
    cx, cy = box.center[0] + dx, box.center[1] + dy
    return Box(
        cx - s * box.width / 2, cy - s * box.height / 2, cx + s * box.width / 2, cy + s * box.height / 2
    )


def pretrain_rows(scene: Scene, cfg: ZoomWorldConfig, seed: int) -> list[dict]:
    """Perception examples: a focus box (near the target, on another object, or anywhere) and the answer its
    crop supports under the eval crop rule; plus direct questions about the whole image."""
    rng = seeded_random(seed, "pretrain", scene.image_id)
    rows = []
    w, h = scene.size
    for j in range(cfg.pretrain_examples_per_image):
        target = rng.choice(scene.objects)
        question = QUESTION.format(colour=target.colour, shape=target.shape)
        base = {
            "id": f"{scene.image_id}_p{j}",
            "image": f"images/pretrain/{scene.image_id}.png",
            "width": w,
            "height": h,
            "question": question,
            "category": target.shape,
        }
        if rng.random() < cfg.direct_fraction:
            rows.append({**base, "kind": "direct", "answer": target.pattern})
            continue
        for _ in range(50):
            roll = rng.random()
            if roll < 0.5:  # the target
                focus = _jitter(target.box, rng)
            elif roll < 0.8 and len(scene.objects) > 1:  # another object, boxed the same way: only the
                # object tells a right crop from a wrong one, never the box's fit
                focus = _jitter(rng.choice([o for o in scene.objects if o is not target]).box, rng)
            else:  # anywhere
                bw, bh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.5) * h
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                focus = Box(x1, y1, x1 + bw, y1 + bh)
            focus = Box(
                max(0.0, focus.x1), max(0.0, focus.y1), min(float(w), focus.x2), min(float(h), focus.y2)
            )
            region = crop_region(focus, scene.size, cfg.crop_min_side)
            answer = crop_answer(target, region, cfg.readable_side)
            if answer is not None:
                rows.append(
                    {
                        **base,
                        "kind": "crop",
                        "focus": [round(v, 2) for v in focus.as_list()],
                        "answer": answer,
                    }
                )
                break
    return rows


def ground_objects(cfg: ZoomWorldConfig, n: int, total: int | None = None) -> tuple[int, int]:
    """The curriculum's scene sizes: the first third of the `total` ground images (the ground split's by
    default) has 1 object, then 2, then the benchmark's own 3-5 (in our trials grounding was learned only
    through 1 -> 2 -> 4 objects)."""
    stage = 3 * n // max(1, cfg.ground_images if total is None else total)
    return ((1, 1), (2, 2))[stage] if stage < 2 else cfg.objects


def ground_rows(scene: Scene, seed: int, split: str = "ground") -> list[dict]:
    """One referring expression per object, for two of them: "the <colour> <shape>" -> its box (pixels).
    A 2-object scene names both, so whether a box picks the named object of the two can be measured."""
    rng = seeded_random(seed, "ground", scene.image_id)
    targets = rng.sample(scene.objects, k=min(2, len(scene.objects)))
    return [
        {
            "id": f"{scene.image_id}_g{i}",
            "kind": "ground",
            "image": f"images/{split}/{scene.image_id}.png",
            "width": scene.size[0],
            "height": scene.size[1],
            "phrase": f"the {t.colour} {t.shape}",
            "bbox": t.box.as_list(),
            "objects": len(scene.objects),
        }
        for i, t in enumerate(targets)
    ]


def pair_question(scene: Scene, seed: int) -> dict | None:
    """Two objects of the scene and whether their tiles match, half yes, half no: the second object's pattern
    is set to the first's, or to one of the other three (the scene is rendered after)."""
    if len(scene.objects) < 2:
        return None
    rng = seeded_random(seed, "pairs", scene.image_id)
    a, b = rng.sample(scene.objects, k=2)
    same = rng.random() < 0.5
    b.pattern = a.pattern if same else rng.choice([p for p in sorted(PATTERNS) if p != a.pattern])
    return {
        "id": f"{scene.image_id}_q0",
        "image": f"images/pairs/{scene.image_id}.png",
        "width": scene.size[0],
        "height": scene.size[1],
        "question": PAIR_QUESTION.format(
            colour=a.colour, shape=a.shape, other_colour=b.colour, other_shape=b.shape
        ),
        "answer": "yes" if same else "no",
        "bbox": a.box.as_list(),
        "bboxes": [a.box.as_list(), b.box.as_list()],  # both regions are needed
        "category": "pair",
        "targets": [a.as_dict(), b.as_dict()],
    }


def generate(out: str | Path, seed: int = 0, cfg: ZoomWorldConfig | None = None) -> dict[str, int]:
    """Write every split under `out`; returns the number of rows per split."""
    cfg = cfg or ZoomWorldConfig()
    root = Path(out)
    counts: dict[str, int] = {}
    plan = {
        "sft": cfg.sft_questions,
        "rl": cfg.rl_questions,
        "test": cfg.test_questions,
        "pairs": cfg.pair_questions,
    }
    images = {
        "pretrain": cfg.pretrain_images,
        "ground": cfg.ground_images,
        "ground_test": cfg.ground_test_images,
    }
    for split in ("pretrain", "ground", "sft", "rl", "test", "pairs", "ground_test"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        n = 0
        while (split in images and n < images[split]) or (split in plan and len(rows) < plan[split]):
            sizes = ground_objects(cfg, n, images[split]) if split.startswith("ground") else None
            scene = make_scene(cfg, seed, f"{split}_{n:05d}", sizes)
            n += 1
            pair = pair_question(scene, seed) if split == "pairs" else None
            if not scene.objects or (split == "pairs" and pair is None):
                continue
            render(scene).save(root / "images" / split / f"{scene.image_id}.png", optimize=False)
            if split == "pretrain":
                rows += pretrain_rows(scene, cfg, seed)
            elif split.startswith("ground"):
                rows += ground_rows(scene, seed, split)
            elif split == "pairs":
                rows.append(pair)
            else:
                rng = seeded_random(seed, "questions", scene.image_id)
                rows += question_rows(scene, split, rng, cfg.questions_per_image)[: plan[split] - len(rows)]
        with (root / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        counts[split] = len(rows)
    meta = {
        "name": "zoomworld",
        "version": VERSION,
        "seed": seed,
        "config": asdict(cfg),
        "counts": counts,
        "answers": list(ANSWERS),
        "chance": 1 / len(PATTERNS),
        "note": "gold boxes in rl.jsonl are for diagnostics only; training on rl must not read them",
    }
    (root / "zoomworld.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return counts
