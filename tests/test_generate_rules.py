"""The generator's rules on hand-made score tables: difficulty filter, pairs, answer pairs, diversity."""

from __future__ import annotations

import random

import pytest

from visrl_bench.core.boxes import Box, iou
from visrl_bench.datagen.pairs import summarize
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


def cand(reward: float, box=(0, 0, 10, 10), answers=None, rewards=None, text=None) -> Candidate:
    b = Box(*box) if box is not None else None
    c = Candidate(text or str(box), b)
    c.rewards = rewards if rewards is not None else [reward]
    c.answers = answers or [f"a{reward}"] * len(c.rewards)
    return c


@pytest.mark.parametrize(
    ("rewards", "kind", "kept"),
    [
        ([1, 1, 1, 1], "all_right", False),
        ([0, 0, 0], "all_wrong", False),
        ([1, 0, 0, 0], "mixed", True),
        ([0.5, 0.0], "mixed", True),  # right_threshold 0.5: a reward of 0.5 counts as right
        ([0.4, 0.0], "all_wrong", False),
    ],
)
def test_difficulty_filter(rewards, kind, kept):
    cfg = GenerateConfig()
    assert difficulty(rewards, cfg)[0] == kind
    assert keep_question(rewards, cfg) is kept
    assert keep_question(rewards, GenerateConfig(filter=False)) is True


def test_filter_thresholds_narrow_the_mixed_band():
    cfg = GenerateConfig(min_right_fraction=0.25, max_right_fraction=0.75)
    assert not keep_question([1, 0, 0, 0], cfg)  # 0.25 is not strictly above 0.25
    assert keep_question([1, 1, 0, 0], cfg)
    assert not keep_question([1, 1, 1, 0], cfg)


def test_pairs_best_against_worst_with_gap():
    cands = [
        cand(0.0, (0, 0, 10, 10)),
        cand(1.0, (50, 50, 60, 60)),
        cand(0.5, (52, 52, 62, 62)),
        cand(1.0, (20, 20, 30, 30)),
    ]
    cfg = GenerateConfig(max_pairs_per_question=3, rejected_no_overlap=False)
    # chosen in reward order (ties by index): 1, 3; rejected from the worst up: 0, then 2 (gap 0.5 >= 0.5)
    assert choose_pairs(cands, cfg) == [(1, 0), (3, 2)]
    # a larger required gap leaves only one rejected candidate
    assert choose_pairs(cands, GenerateConfig(min_reward_gap=0.6, max_pairs_per_question=3)) == [(1, 0)]


def test_rejected_box_prefers_no_overlap_with_chosen():
    chosen = cand(1.0, (0, 0, 20, 20))
    overlapping = cand(0.0, (10, 10, 30, 30))
    apart = cand(0.0, (50, 50, 60, 60))
    cands = [chosen, overlapping, apart]
    assert choose_pairs(cands, GenerateConfig(max_pairs_per_question=1)) == [(0, 2)]
    # the rule is part of the diversity controller: off, the worst by index order wins
    assert choose_pairs(cands, GenerateConfig(max_pairs_per_question=1, diversity=False)) == [(0, 2)]
    cands = [chosen, apart, overlapping]
    assert choose_pairs(cands, GenerateConfig(max_pairs_per_question=1, diversity=False)) == [(0, 2)]
    assert choose_pairs(cands, GenerateConfig(max_pairs_per_question=1)) == [(0, 1)]
    # no candidate apart: fall back to an overlapping one rather than no pair
    assert choose_pairs([chosen, overlapping], GenerateConfig()) == [(0, 1)]


def test_no_pair_without_a_right_candidate():
    assert choose_pairs([cand(0.4), cand(0.0, (30, 30, 40, 40))], GenerateConfig()) == []


def test_answer_pair_prefers_a_wrong_answer_at_the_chosen_crop():
    chosen = cand(0.5, answers=["red-cyan", "none"], rewards=[1.0, 0.0])
    rejected = cand(0.0, answers=["black-white"], rewards=[0.0])
    assert answer_pair(chosen, rejected, GenerateConfig()) == ("red-cyan", "none", "chosen_crop")
    chosen = cand(1.0, answers=["red-cyan", "red-cyan"], rewards=[1.0, 1.0])
    assert answer_pair(chosen, rejected, GenerateConfig()) == (
        "red-cyan",
        "black-white",
        "rejected_trajectory",
    )
    same = cand(0.0, answers=["red-cyan"], rewards=[0.0])  # graded wrong, but the same text: no pair
    assert answer_pair(chosen, same, GenerateConfig()) is None


def test_keep_apart_drops_near_duplicates_and_extra_unparsable():
    a = cand(0, (0, 0, 100, 100), text="a")
    b = cand(0, (1, 1, 100, 100), text="b")  # IoU 0.98 with a
    c = cand(0, (0, 0, 50, 100), text="c")  # IoU 0.5
    n1, n2 = cand(0, None, text="x"), cand(0, None, text="y")
    kept = keep_apart([a, b, c, n1, n2], max_iou=0.8)
    assert [k.text for k in kept] == ["a", "c", "x"]


def test_perturbed_boxes_stay_inside_and_move():
    rng = random.Random(0)
    box = Box(100, 100, 140, 130)
    moved = [perturb_box(box, (200, 150), rng, 0.15) for _ in range(200)]
    assert all(0 <= b.x1 < b.x2 <= 200 and 0 <= b.y1 < b.y2 <= 150 for b in moved)
    assert min(iou(b, box) for b in moved) < 0.9 and max(iou(b, box) for b in moved) > 0.5


def test_summary_counts_and_focus_signal():
    def pair(step, ci, ri):
        return {
            "step": step,
            "chosen_iou": ci,
            "rejected_iou": ri,
            "chosen_score": 1.0,
            "rejected_score": 0.0,
        }

    records = [
        {
            "position": 0,
            "difficulty": "mixed",
            "kept": True,
            "candidates": [{"reward": 1.0, "gold_iou": 0.6}, {"reward": 0.0, "gold_iou": 0.0}],
            "pairs": [pair("box", 0.6, 0.0), pair("answer", 0.6, 0.0), pair("trajectory", 0.6, 0.0)],
        },
        {
            "position": 1,
            "difficulty": "all_wrong",
            "kept": False,
            "candidates": [{"reward": 0.0, "gold_iou": 0.1}],
            "pairs": [],
        },
        {"position": 2, "id": "x", "error": "image file not found"},
    ]
    stats = summarize(records, GenerateConfig())
    assert stats["questions_seen"] == 3 and stats["errors"] == 1 and stats["kept"] == 1
    assert (stats["mixed"], stats["all_wrong"], stats["all_right"]) == (1, 1, 0)
    assert stats["pairs"] == {"box": 1, "answer": 1, "trajectory": 1}
    assert stats["gold_iou"]["gap"] == pytest.approx(0.6)
    assert stats["focus_signal"] is True
    records[0]["pairs"] = [pair("box", 0.1, 0.1)]
    assert summarize(records, GenerateConfig())["focus_signal"] is False
