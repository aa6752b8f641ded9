"""The pair generator's configuration and its rules: pure functions over candidate trajectories and their
rewards (the diversity controller's jitter and spacing, the difficulty filter, which pairs to make), tested
on hand-made score tables; `pairs` runs them over a model's samples."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from visrl_bench.core.boxes import Box, iou
from visrl_bench.core.errors import Bounds
from visrl_bench.task import TaskData


@dataclass
class GenerateConfig(TaskData):
    """The pair generator's options; its questions are training data (`TaskData`'s split rule)."""

    model: str = ""
    split: str | None = "rl"
    out: str = ""
    arch: str | None = None
    k: int = 8  # box samples per question
    temperature: float = 0.7  # box-step temperature without the diversity controller
    answer_samples: int = 2  # answers per candidate crop (a box's reward is their mean score)
    answer_temperature: float = 1.0  # used when answer_samples > 1; else greedy
    # diversity controller
    diversity: bool = True
    diversity_temperature: float = 1.0
    perturb_prob: float = 0.5  # chance a sampled box is jittered
    perturb_scale: float = 0.15  # jitter of each side, as a fraction of the box's width/height
    max_candidate_iou: float = 0.8  # a candidate this close to a kept one is dropped
    rejected_no_overlap: bool = True  # prefer a rejected box that does not overlap the chosen one
    # difficulty filter
    filter: bool = True
    right_threshold: float = 0.5  # a trajectory whose reward reaches this is "right"
    min_right_fraction: float = 0.0  # keep when min < fraction of right candidates < max (strict)
    max_right_fraction: float = 1.0
    min_reward_gap: float = 0.5  # a pair needs chosen reward - rejected reward >= this
    max_pairs_per_question: int = 2
    # the reward of a trajectory whose box does not parse: it failed its first step, so its answer (made
    # without a crop) is not scored; None scores it as eval's accuracy does. Scored, a model that guesses
    # rather than says "none" earns chance for breaking the box, more than for a box that misses
    invalid_box_reward: float | None = 0.0
    batch_size: int = 16
    max_new_tokens: int = 32
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    BOUNDS: ClassVar[Bounds] = {
        "k": (1, None),
        "temperature": (0, None),
        "answer_samples": (1, None),
        "answer_temperature": (0, None),
        "diversity_temperature": (0, None),
        "perturb_prob": (0, 1),
        "perturb_scale": (0, None),
        "max_candidate_iou": (0, 1),
        "right_threshold": (0, 1),
        "min_right_fraction": (0, 1),
        "max_right_fraction": (0, 1),
        "min_reward_gap": (0, None),
        "max_pairs_per_question": (1, None),
        **TaskData.BOUNDS,
        "batch_size": (1, None),
        "max_new_tokens": (1, None),
        "seed": (0, None),
    }

    @property
    def box_temperature(self) -> float:
        return self.diversity_temperature if self.diversity else self.temperature


@dataclass
class Candidate:
    text: str
    box: Box | None
    perturbed: bool = False
    answers: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    gold_iou: float | None = None
    crop: Any = None  # the second image the answer step saw

    @property
    def reward(self) -> float:
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0


# --- the rules (pure functions: tested on hand-made score tables) ------------------------------------
def perturb_box(box: Box, size: tuple[int, int], rng: random.Random, scale: float) -> Box:
    w, h = box.x2 - box.x1, box.y2 - box.y1
    x1 = box.x1 + rng.uniform(-scale, scale) * w
    x2 = box.x2 + rng.uniform(-scale, scale) * w
    y1 = box.y1 + rng.uniform(-scale, scale) * h
    y2 = box.y2 + rng.uniform(-scale, scale) * h
    W, H = size
    x1, x2 = sorted((min(max(x1, 0.0), W), min(max(x2, 0.0), W)))
    y1, y2 = sorted((min(max(y1, 0.0), H), min(max(y2, 0.0), H)))
    return Box(x1, y1, max(x2, x1 + 1.0), max(y2, y1 + 1.0))


def keep_apart(candidates: list[Candidate], max_iou: float) -> list[Candidate]:
    """Drop a candidate whose box overlaps an already kept one by more than `max_iou` (same text counts as
    the same box); at most one unparsable candidate is kept."""
    kept: list[Candidate] = []
    for c in candidates:
        if c.box is None:
            if not any(k.box is None for k in kept):
                kept.append(c)
            continue
        if all(k.box is None or (iou(c.box, k.box) <= max_iou and k.text != c.text) for k in kept):
            kept.append(c)
    return kept


def difficulty(rewards: list[float], cfg: GenerateConfig) -> tuple[str, float]:
    """("all_right" | "all_wrong" | "mixed", fraction right)."""
    right = sum(1 for r in rewards if r >= cfg.right_threshold)
    frac = right / len(rewards) if rewards else 0.0
    kind = "all_right" if right == len(rewards) else "all_wrong" if right == 0 else "mixed"
    return kind, frac


def keep_question(rewards: list[float], cfg: GenerateConfig) -> bool:
    if not cfg.filter:
        return True
    kind, frac = difficulty(rewards, cfg)
    return kind == "mixed" and cfg.min_right_fraction < frac < cfg.max_right_fraction


def choose_pairs(candidates: list[Candidate], cfg: GenerateConfig) -> list[tuple[int, int]]:
    """(chosen, rejected) candidate indices: best-rewarded first, each paired with a worse one whose reward
    is at least `min_reward_gap` lower — one with no overlap with the chosen box when VisRL's rule is on
    and such a box exists. Each candidate is used at most once per side."""
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].reward, i))
    pairs: list[tuple[int, int]] = []
    used_rejected: set[int] = set()
    for ci in order:
        if len(pairs) >= cfg.max_pairs_per_question:
            break
        chosen = candidates[ci]
        if chosen.reward < cfg.right_threshold:
            break
        worse = [
            j
            for j in reversed(order)
            if j not in used_rejected
            and j != ci
            and chosen.reward - candidates[j].reward >= cfg.min_reward_gap
        ]
        if not worse:
            continue
        pick = worse[0]
        if cfg.diversity and cfg.rejected_no_overlap and chosen.box is not None:
            apart = [j for j in worse if candidates[j].box is None or iou(chosen.box, candidates[j].box) == 0]
            if apart:
                pick = apart[0]
        used_rejected.add(pick)
        pairs.append((ci, pick))
    return pairs


def answer_pair(chosen: Candidate, rejected: Candidate, cfg: GenerateConfig) -> tuple[str, str, str] | None:
    """(right answer, wrong answer, where the wrong one came from): a wrong answer sampled at the chosen
    crop if there is one, else the rejected trajectory's (the reward is the question's, not the crop's)."""
    right = [a for a, r in zip(chosen.answers, chosen.rewards, strict=True) if r >= cfg.right_threshold]
    if not right:
        return None
    wrong_here = [
        a
        for a, r in zip(chosen.answers, chosen.rewards, strict=True)
        if r < cfg.right_threshold and a.strip() != right[0].strip()
    ]
    if wrong_here:
        return right[0], wrong_here[0], "chosen_crop"
    wrong_there = [
        a
        for a, r in zip(rejected.answers, rejected.rewards, strict=True)
        if r < cfg.right_threshold and a.strip() != right[0].strip()
    ]
    if wrong_there:
        return right[0], wrong_there[0], "rejected_trajectory"
    return None
