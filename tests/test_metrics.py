import numpy as np
import pytest

from visrl_bench.metrics.choice import extract_letter, option_order, rotate
from visrl_bench.metrics.stats import bootstrap_ci, mean_ci_percent
from visrl_bench.metrics.vqa import normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("The Answer", "answer"),
        ("two dogs", "2 dogs"),
        ("it's", "it 's"),
        ("3.5", "3.5"),
        ("end.", "end"),
        ("1.", "1"),  # the reference's period rule strips a period after a digit too
        ("well-known", "well known"),  # punctuation inside a word becomes a space
        ("a - b", "b"),  # next to a space it is deleted; "a" is an article
        ("dont", "don't"),
        ("Coca Cola?", "coca cola"),
        ("  New\tYork\n", "new york"),
        ("none", "0"),
        ("yes!", "yes"),
        ('"quoted"', "quoted"),
        ("x@y", "x y"),
        ("50%", "50%"),  # % is not in the punctuation list
        ("$5", "$5"),
        ("A: 5", "a: 5"),  # ":" is not in the list either; "a:" is not the article "a"
    ],
)
def test_evalai_answer_processor(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_strip_stops_after_32_like_the_reference():
    text = "a." * 40  # one token "a.a.a...": periods are not next to spaces
    out = normalize_answer(text)
    assert out.count(".") == 40 - 32


@pytest.mark.parametrize(
    ("pred", "answers", "expected"),
    [
        ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # 3 of 10: 3 subsets with 2 matches, 7 with 3
        ("no", ["yes"] * 3 + ["no"] * 7, 1.0),
        ("maybe", ["yes"] * 3 + ["no"] * 7, 0.0),
        ("x", ["x"] + ["y"] * 9, 0.3),  # 1 match: 9 subsets score 1/3
        ("x", ["x"] * 2 + ["y"] * 8, 0.6),  # 2 matches: 2 subsets 1/3, 8 subsets 2/3
        ("Two", ["2"] * 2 + ["two"] + ["3"] * 7, 0.9),  # number words normalised on both sides
        ("The Dakota.", ["dakota"] * 4 + ["nous les gosses"] * 6, 1.0),
    ],
)
def test_vqa_accuracy_by_hand(pred, answers, expected):
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B) blue", "B"),
        ("The answer is B.", "B"),
        ("Answer: (C)", "C"),
        ("the answer is c", None),
        ("blue", "B"),
        ("It is blue.", "B"),
        ("A red car", None),
        ("I think D", "D"),
        ("A", "A"),
        ("A.", "A"),
        ("(A) red", "A"),
        ("red or blue", None),
        ("", None),
        ("E", None),
        ("dark red", "D"),
    ],
)
def test_extract_letter(text, letter):
    options = ["red", "blue", "car", "dark red"]
    assert extract_letter(text, options).letter == letter


def test_option_order_is_seeded_per_sample():
    a = option_order("direct_attributes/sa_1", 4, seed=0)
    assert sorted(a) == [0, 1, 2, 3]
    assert a == option_order("direct_attributes/sa_1", 4, seed=0)
    assert option_order("x", 4, None) == [0, 1, 2, 3]
    orders = {tuple(option_order(f"q{i}", 4, seed=0)) for i in range(50)}
    assert len(orders) > 10  # not one fixed permutation
    firsts = [option_order(f"q{i}", 4, seed=0).index(0) for i in range(400)]
    assert 0.15 < np.mean(np.array(firsts) == 0) < 0.35  # the correct answer is not stuck at "A"
    assert rotate([2, 0, 1], 1) == [0, 1, 2]


def test_bootstrap_ci_is_seeded_and_sane():
    values = np.array([1.0] * 30 + [0.0] * 70)
    lo, hi = bootstrap_ci(values, seed=0)
    assert (lo, hi) == bootstrap_ci(values, seed=0)
    assert lo < 0.3 < hi and hi - lo < 0.25
    # normal approximation: 1.96 * sqrt(.3 * .7 / 100) = 0.0898
    assert (hi - lo) / 2 == pytest.approx(0.0898, abs=0.015)
    value, ci = mean_ci_percent(values)
    assert value == pytest.approx(30.0) and ci[0] < 30 < ci[1]
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
