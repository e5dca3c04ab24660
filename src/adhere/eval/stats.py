"""Confidence intervals and paired tests for base-vs-tuned evaluation (step 5). numpy only.

    >>> value, lo, hi = bootstrap_ci([True, False, True, True], seed=0)
    >>> value
    0.75
    >>> mcnemar([False] * 8 + [True] * 2, [True] * 8 + [False] * 2).p_value
    0.109375

Every interval is a percentile bootstrap over items (prompts): resample the items with replacement,
recompute the statistic, take the (1 - level) / 2 and (1 + level) / 2 quantiles. With 2,000 resamples
the 95% bounds of a 50% pass rate on 100 prompts move by a standard deviation of 0.004 from seed to
seed (measured over 200 seeds), small beside the interval's width of 0.2; a fixed seed makes a report
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

Interval = tuple[float, float, float]
"""(value, lo, hi): the statistic on all items and its bootstrap interval."""

NAN_INTERVAL: Interval = (math.nan, math.nan, math.nan)
TIE_TOLERANCE = 1e-9


def _check_args(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")


def _same_length(a: Sequence, b: Sequence, names: str = "a and b") -> None:
    if len(a) != len(b):
        raise ValueError(f"{names} must pair up item by item, got {len(a)} and {len(b)} items")


def _resample(n: int, seed: int, resamples: int, statistic: Callable[[np.ndarray], float]) -> np.ndarray:
    """`statistic(indices)` on `resamples` draws of n item indices with replacement."""
    rng = np.random.default_rng(seed)
    # One draw at a time keeps memory at n indices (a 2,000 x n matrix is 160 MB at n = 10,000);
    # 2,000 draws of 500 items take about 35 ms on a 2-core CPU.
    return np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)])


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(stats, [tail, 1 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | Sequence[bool],
    *,
    seed: int,
    resamples: int = 2000,
    level: float = 0.95,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> Interval:
    """A statistic of per-item values (bools for a pass rate, floats for a score) with its bootstrap interval.

        >>> bootstrap_ci([0.2, 0.4, 0.9], seed=0)[0]
        0.5

    No items give (nan, nan, nan). One item gives (value, nan, nan): resampling one item always
    returns it, and a zero-width interval would claim a certainty one example cannot give. Values
    that are all equal give the zero-width interval (v, v, v), which is then what the data show.
    """
    _check_args(resamples, level)
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one number per item, got an array of shape {x.shape}")
    if len(x) == 0:
        return NAN_INTERVAL
    value = float(statistic(x))
    if len(x) == 1:
        return value, math.nan, math.nan
    stats = _resample(len(x), seed, resamples, lambda idx: statistic(x[idx]))
    return (value, *_percentiles(stats, level))


def cluster_bootstrap_ci(
    verdicts: Sequence[Sequence[bool]], *, seed: int, resamples: int = 2000, level: float = 0.95
) -> Interval:
    """Instruction-level accuracy (IFEval's "instruction strict/loose") with an interval that resamples prompts.

        >>> cluster_bootstrap_ci([[True, True, False], [False]], seed=0)[0]
        0.5

    `verdicts[i]` holds prompt i's per-instruction pass/fail. The value is passed instructions / all
    instructions; each resample draws prompts, not instructions, because the instructions of one prompt
    share one response and pass or fail together, and resampling them as if independent would give an
    interval too narrow. Edge cases as `bootstrap_ci`; a prompt with no instructions is an error.
    """
    _check_args(resamples, level)
    passed, totals = _instruction_counts(verdicts)
    if len(totals) == 0:
        return NAN_INTERVAL
    value = float(passed.sum() / totals.sum())
    if len(totals) == 1:
        return value, math.nan, math.nan
    stats = _resample(len(totals), seed, resamples, lambda idx: passed[idx].sum() / totals[idx].sum())
    return (value, *_percentiles(stats, level))


def _instruction_counts(verdicts: Sequence[Sequence[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(passed, total) instructions per prompt."""
    passed = np.array([sum(bool(v) for v in prompt) for prompt in verdicts], dtype=float)
    totals = np.array([len(prompt) for prompt in verdicts], dtype=float)
    empty = np.flatnonzero(totals == 0)
    if len(empty):
        raise ValueError(f"prompt {int(empty[0])} has no instruction verdicts; every prompt needs at least one")
    return passed, totals


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models' pass/fail on the same prompts."""

    b01: int
    """Prompts model a failed and model b passed (b improved)."""
    b10: int
    """Prompts model a passed and model b failed (b regressed)."""
    p_value: float
    """Two-sided exact binomial p-value of b01 against b01 + b10 trials at 1/2."""


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Did b pass a different share of the prompts than a? Only the prompts where they disagree count.

        >>> mcnemar([True, False, False], [True, True, True])
        McNemar(b01=2, b10=0, p_value=0.5)

    p = min(1, 2 * sum_{k <= min(b01, b10)} C(n, k) / 2^n) with n = b01 + b10: the exact binomial
    test, not the chi-square approximation, which is poor below about 25 discordant pairs (most of our
    eval sets). No discordant pairs gives p = 1.0.
    """
    _same_length(a, b)
    b01 = sum(1 for x, y in zip(a, b) if not x and y)
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    n = b01 + b10
    tail = sum(math.comb(n, k) for k in range(min(b01, b10) + 1))
    # Integer numerator over 2^n: Python's int / int division rounds once, so large n stays exact.
    return McNemar(b01=b01, b10=b10, p_value=min(1.0, 2 * tail / 2**n))


@dataclass(frozen=True)
class PairedBootstrap:
    """Difference b - a of a statistic over paired items, with its interval and p-value."""

    delta: float
    lo: float
    hi: float
    p_value: float


def _paired(n: int, delta: float, resampled_delta: Callable[[np.ndarray], float], seed: int, resamples: int,
            level: float) -> PairedBootstrap:
    if n < 2:  # no pairs: delta is nan already; one pair: nothing to resample
        return PairedBootstrap(delta, math.nan, math.nan, math.nan)
    stats = _resample(n, seed, resamples, resampled_delta)
    lo, hi = _percentiles(stats, level)
    # Pass rates make d* land exactly on |d* - d| = |d| (k/n steps); float rounding (0.1 + 0.2 != 0.3)
    # would decide those ties by chance, so anything within 1e-9 of the boundary counts as extreme.
    extreme = int(np.count_nonzero(np.abs(stats - delta) >= abs(delta) - TIE_TOLERANCE))
    return PairedBootstrap(delta, lo, hi, p_value=(1 + extreme) / (1 + resamples))


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, seed: int, resamples: int = 2000, level: float = 0.95
) -> PairedBootstrap:
    """Is model b's mean score different from model a's on the same items?

        >>> r = paired_bootstrap([0.1, 0.5, 0.3], [0.4, 0.6, 0.5], seed=0)
        >>> round(r.delta, 6)
        0.2

    Resamples item pairs (so each item's difficulty cancels) and takes the percentile interval of the
    mean difference. The p-value is the bootstrap test of Efron & Tibshirani (1993, ch. 16) with the
    resampled differences centred on zero to stand for "no difference":
    p = (1 + #{|d* - d| >= |d|}) / (1 + resamples), where d is the observed mean difference and d* a
    resampled one; the +1 (Davison & Hinkley 1997, ch. 4) keeps p above 0, which no finite bootstrap can show.
    No pairs give nan throughout; one pair gives its difference and nan for the interval and p-value.
    """
    _check_args(resamples, level)
    _same_length(a, b)
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    delta = float(d.mean()) if len(d) else math.nan
    return _paired(len(d), delta, lambda idx: d[idx].mean(), seed, resamples, level)


def paired_cluster_bootstrap(
    a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], *, seed: int, resamples: int = 2000,
    level: float = 0.95,
) -> PairedBootstrap:
    """Difference b - a in instruction-level accuracy on the same prompts, resampling prompts.

        >>> round(paired_cluster_bootstrap([[True, False], [False]], [[True, True], [False]], seed=0).delta, 6)
        0.333333

    `a[i]` and `b[i]` hold the two models' per-instruction verdicts on prompt i. Each resample draws
    prompts and recomputes both accuracies on them, for the reason `cluster_bootstrap_ci` gives; the
    interval and p-value are as in `paired_bootstrap`.
    """
    _check_args(resamples, level)
    _same_length(a, b)
    passed_a, totals_a = _instruction_counts(a)
    passed_b, totals_b = _instruction_counts(b)
    if len(a) == 0:
        return PairedBootstrap(math.nan, math.nan, math.nan, math.nan)

    def delta(idx: np.ndarray | slice) -> float:
        return passed_b[idx].sum() / totals_b[idx].sum() - passed_a[idx].sum() / totals_a[idx].sum()

    return _paired(len(a), float(delta(slice(None))), delta, seed, resamples, level)


def flips(ids: Sequence[Hashable], a: Sequence[bool], b: Sequence[bool]) -> tuple[list, list]:
    """(improved, regressed): ids that a failed and b passed, and ids that a passed and b failed, in order.

        >>> flips(["p1", "p2", "p3"], [False, True, True], [True, False, True])
        (['p1'], ['p2'])
    """
    _same_length(ids, a, "ids and a")
    _same_length(a, b)
    improved = [i for i, x, y in zip(ids, a, b) if not x and y]
    regressed = [i for i, x, y in zip(ids, a, b) if x and not y]
    return improved, regressed
