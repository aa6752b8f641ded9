"""Every statistic the reports use, in one place: seeded percentile bootstrap CIs over the units that were
sampled (questions), and paired differences with their CI and sign-flip p-value."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from visrl_bench.core.errors import VisrlError

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
CELL_FILE = "cell.json"
AVERAGE = "average"
EXACT_PERMUTATION_MAX_N = 16
PERMUTATIONS = 10_000


def bootstrap_ci(
    units: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` over the rows of `units`.

    Rows are the independent units (one question, or one question's cycles as a row of a 2-D array), so a
    statistic that averages over cycles is resampled by question, not by row of the benchmark file.
    Without `statistic`, the mean of a 1-D array, vectorised.
    """
    data = np.asarray(units, dtype=float)
    n = data.shape[0] if data.ndim else 0
    if n == 0:
        return (float("nan"), float("nan"))
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    if statistic is None:
        stats = data[idx].mean(axis=1)
    else:
        stats = np.array([statistic(data[i]) for i in idx])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def mean_ci_percent(
    values: Sequence[float], seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES
) -> tuple[float, list[float]]:
    """Mean of per-sample scores in [0, 1] as a percentage, with its 95% bootstrap CI in percent."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    lo, hi = bootstrap_ci(arr, seed=seed, n_resamples=n_resamples)
    return 100 * float(arr.mean()), [100 * lo, 100 * hi]


def add_metric(metrics: dict, name: str, value: float, ci: Sequence[float]) -> None:
    """Every headline metric travels with `<name>_ci95`."""
    metrics[name] = round(float(value), 6)
    metrics[f"{name}_ci95"] = [round(float(ci[0]), 6), round(float(ci[1]), 6)]


def paired_difference_percent(
    after: Sequence[float],
    before: Sequence[float],
    seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> tuple[float, list[float]]:
    """Mean per-sample gain (after - before, same samples in the same order) in percent, with the 95%
    bootstrap CI of that mean: resampling questions keeps each question's two scores together, which is
    what makes the interval much tighter than comparing two independent CIs. (`paired_difference` is the
    same over samples keyed by id, with a p-value.)"""
    a, b = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same samples: {a.shape} vs {b.shape}")
    return mean_ci_percent(a - b, seed=seed, n_resamples=n_resamples)


def mean_ci(values: np.ndarray, seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
    """(mean, lo, hi) in percent of per-question scores in [0, 1]."""
    lo, hi = bootstrap_ci(values, seed=seed)
    return 100 * float(np.mean(values)), 100 * lo, 100 * hi


def sign_flip_pvalue(diffs: np.ndarray, seed: int = DEFAULT_SEED, n_resamples: int = PERMUTATIONS) -> float:
    """Two-sided p-value of "mean difference = 0" for paired differences: under the null each difference is
    as likely to have either sign. Exact (all 2^n sign patterns) up to 16 questions, else Monte Carlo with
    the (count + 1) / (resamples + 1) correction, so p is never 0."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return float("nan")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if n <= EXACT_PERMUTATION_MAX_N:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        means = np.abs((signs * d).mean(axis=1))
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(n_resamples, n))
    count = int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tol))
    return (count + 1) / (n_resamples + 1)


def paired_difference(
    a: dict[str, float], b: dict[str, float], seed: int = 0
) -> tuple[float, tuple, float, int]:
    """(mean of a - b in percent, its 95% bootstrap CI, sign-flip p-value, n) over the questions both have."""
    ids = sorted(set(a) & set(b))
    if not ids:
        raise VisrlError("paired difference over no common questions")
    d = np.array([a[i] - b[i] for i in ids])
    mean, lo, hi = mean_ci(d, seed)
    return mean, (lo, hi), sign_flip_pvalue(d, seed), len(ids)
