"""Bootstrap intervals, McNemar and paired bootstrap tests against hand-computed values."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from adhere.eval import stats
from adhere.eval.stats import (
    McNemar,
    bootstrap_ci,
    cluster_bootstrap_ci,
    flips,
    mcnemar,
    paired_bootstrap,
    paired_cluster_bootstrap,
)


def test_docstring_examples_hold():
    result = doctest.testmod(stats)
    assert result.attempted >= 8 and result.failed == 0


# --- McNemar -----------------------------------------------------------------------------------------------


def _pairs(b01: int, b10: int, both_pass: int = 0, both_fail: int = 0) -> tuple[list[bool], list[bool]]:
    a = [False] * b01 + [True] * b10 + [True] * both_pass + [False] * both_fail
    b = [True] * b01 + [False] * b10 + [True] * both_pass + [False] * both_fail
    return a, b


@pytest.mark.parametrize(
    "b01, b10, p",
    [
        (8, 2, 0.109375),  # 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
        (2, 8, 0.109375),  # symmetric
        (5, 0, 0.0625),  # 2 * 1 / 32
        (1, 1, 1.0),  # 2 * (1 + 2) / 4 = 1.5, capped at 1
        (6, 3, 0.5078125),  # 2 * (1 + 9 + 36 + 84) / 512 = 260 / 512
        (0, 0, 1.0),  # no discordant pairs
    ],
)
def test_mcnemar_exact_p_values(b01, b10, p):
    a, b = _pairs(b01, b10, both_pass=7, both_fail=4)  # concordant pairs never change the result
    assert mcnemar(a, b) == McNemar(b01=b01, b10=b10, p_value=pytest.approx(p, abs=1e-15))


def test_mcnemar_large_counts_stay_finite_and_exact():
    # 2^1000 overflows a float; the integer ratio does not. 600 vs 400 is about 6.3 sigma from 500.
    result = mcnemar(*_pairs(600, 400))
    assert 0 < result.p_value < 1e-9
    tail = sum(math.comb(1000, k) for k in range(401))
    assert result.p_value == 2 * tail / 2**1000


def test_mcnemar_empty_and_mismatched():
    assert mcnemar([], []) == McNemar(0, 0, 1.0)
    with pytest.raises(ValueError, match="got 2 and 1 items"):
        mcnemar([True, False], [True])


# --- bootstrap_ci ------------------------------------------------------------------------------------------


def test_bootstrap_ci_two_items_hand_computed():
    # Resampled means of [0, 1] are 0 (p = 1/4), 0.5 (1/2) or 1 (1/4). The 2.5% and 97.5% quantiles are
    # 0 and 1; the 30% and 70% quantiles both fall in the 0.5 mass (cumulative 0.25 and 0.75).
    assert bootstrap_ci([0.0, 1.0], seed=0) == (0.5, 0.0, 1.0)
    assert bootstrap_ci([False, True], seed=0, level=0.4) == (0.5, 0.5, 0.5)


def test_bootstrap_ci_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(7)
    widths = []
    for n in (25, 400):
        values = rng.random(n) < 0.7
        value, lo, hi = bootstrap_ci(values.tolist(), seed=1)
        assert value == values.mean() and lo < value < hi
        widths.append(hi - lo)
    # The width shrinks as 1/sqrt(n): 16x the items, about a quarter of the width.
    assert widths[1] < widths[0] / 3
    # For p = 0.7, n = 400 the normal interval is +-1.96 * sqrt(0.21 / 400) = +-0.045, width 0.090.
    assert widths[1] == pytest.approx(0.090, abs=0.012)


def test_bootstrap_ci_is_deterministic_for_a_seed():
    values = np.random.default_rng(3).random(50).tolist()
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([], seed=0))
    value, lo, hi = bootstrap_ci([0.25], seed=0)
    assert value == 0.25 and math.isnan(lo) and math.isnan(hi)
    assert bootstrap_ci([0.3] * 10, seed=0) == pytest.approx((0.3, 0.3, 0.3))
    assert bootstrap_ci([True, True, True], seed=0) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_other_statistics():
    value, lo, hi = bootstrap_ci([1.0, 2.0, 100.0], seed=0, statistic=np.median)
    assert value == 2.0 and lo == 1.0 and hi == 100.0  # medians of 3 resampled items are 1, 2 or 100


def test_bootstrap_ci_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        bootstrap_ci([1.0, 2.0], seed=0, level=95)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        bootstrap_ci([1.0, 2.0], seed=0, resamples=0)
    with pytest.raises(ValueError, match="one number per item"):
        bootstrap_ci([[1.0, 2.0]], seed=0)


# --- cluster bootstrap ---------------------------------------------------------------------------------------


def test_cluster_bootstrap_tiny_case_resamples_prompts():
    # Prompt 0 passes 3 of 3 instructions, prompt 1 fails its 1: accuracy 3/4. Resampling prompts gives
    # {0,0} -> 1 (p 1/4), {1,1} -> 0 (p 1/4), one of each -> 3/4 (p 1/2).
    verdicts = [[True, True, True], [False]]
    assert cluster_bootstrap_ci(verdicts, seed=0) == (0.75, 0.0, 1.0)
    assert cluster_bootstrap_ci(verdicts, seed=0, level=0.4) == (0.75, 0.75, 0.75)


def test_cluster_bootstrap_is_wider_than_treating_instructions_as_independent():
    # 60 prompts of 4 instructions that pass or fail together: really 60 observations, not 240.
    rng = np.random.default_rng(11)
    verdicts = [[bool(x)] * 4 for x in rng.random(60) < 0.5]
    value, lo, hi = cluster_bootstrap_ci(verdicts, seed=0)
    flat_value, flat_lo, flat_hi = bootstrap_ci([v for prompt in verdicts for v in prompt], seed=0)
    assert value == flat_value
    assert (hi - lo) > 1.6 * (flat_hi - flat_lo)  # sqrt(4) = 2 in the limit


def test_cluster_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in cluster_bootstrap_ci([], seed=0))
    value, lo, hi = cluster_bootstrap_ci([[True, False, True, True]], seed=0)
    assert value == 0.75 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="prompt 1 has no instruction verdicts"):
        cluster_bootstrap_ci([[True], []], seed=0)
    assert cluster_bootstrap_ci([[True], [True, True]], seed=3) == (1.0, 1.0, 1.0)


# --- paired bootstrap ------------------------------------------------------------------------------------------


def test_paired_bootstrap_two_pairs_hand_computed():
    # Differences [0, 1]: d = 0.5; resampled means 0, 0.5, 1 with p 1/4, 1/2, 1/4. |d* - 0.5| >= 0.5
    # for d* in {0, 1}, half the resamples, so p is about (1 + 1000) / 2001.
    r = paired_bootstrap([0.2, 0.3], [0.2, 1.3], seed=0)
    assert r.delta == pytest.approx(0.5) and (r.lo, r.hi) == pytest.approx((0.0, 1.0))
    assert r.p_value == pytest.approx(0.5, abs=0.03)


def test_paired_bootstrap_identical_and_constant_shift():
    a = [0.1, 0.5, 0.9, 0.4]
    same = paired_bootstrap(a, a, seed=0)
    assert (same.delta, same.lo, same.hi, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_bootstrap([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], seed=0, resamples=999)
    assert shifted.delta == shifted.lo == shifted.hi == 0.5
    assert shifted.p_value == 1 / 1000  # no resample is as far from 0.5 as 0.5 is from 0


def test_paired_bootstrap_separates_real_and_null_effects():
    rng = np.random.default_rng(2)
    a = rng.random(200)
    real = paired_bootstrap(a, a + 0.05 + rng.normal(0, 0.1, 200), seed=0)
    assert real.p_value < 0.01 and real.lo > 0 and real.lo < real.delta < real.hi
    null = paired_bootstrap(a, a + rng.normal(0, 0.1, 200), seed=0)
    assert null.p_value > 0.05 and null.lo < 0 < null.hi


def test_paired_bootstrap_deterministic_and_edge_cases():
    a, b = [0.1, 0.4, 0.2, 0.8], [0.3, 0.4, 0.1, 0.9]
    assert paired_bootstrap(a, b, seed=4) == paired_bootstrap(a, b, seed=4)
    empty = paired_bootstrap([], [], seed=0)
    assert all(math.isnan(v) for v in (empty.delta, empty.lo, empty.hi, empty.p_value))
    one = paired_bootstrap([0.2], [0.7], seed=0)
    assert one.delta == pytest.approx(0.5) and math.isnan(one.lo) and math.isnan(one.p_value)
    with pytest.raises(ValueError, match="got 2 and 3 items"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3], seed=0)


# --- flips ------------------------------------------------------------------------------------------------------


def test_flips():
    ids = ["p1", "p2", "p3", "p4", "p5"]
    a = [False, True, True, False, True]
    b = [True, False, True, False, False]
    assert flips(ids, a, b) == (["p1"], ["p2", "p5"])
    assert flips([], [], []) == ([], [])
    with pytest.raises(ValueError, match="ids and a must pair up"):
        flips(["p1"], [True, False], [True, False])


# --- paired cluster bootstrap -----------------------------------------------------------------------------------


def test_paired_cluster_bootstrap_tiny_case():
    # a: 3/3 and 0/1 -> 3/4; b: 3/3 and 1/1 -> 1; delta 1/4. Resampled prompts: {0,0} -> 1 - 1 = 0 (p 1/4),
    # {1,1} -> 1 - 0 = 1 (p 1/4), one of each -> 1/4 (p 1/2). |d* - 1/4| >= 1/4 for d* in {0, 1}: p about 1/2.
    a = [[True, True, True], [False]]
    b = [[True, True, True], [True]]
    r = paired_cluster_bootstrap(a, b, seed=0)
    assert r.delta == 0.25 and (r.lo, r.hi) == (0.0, 1.0)
    assert r.p_value == pytest.approx(0.5, abs=0.03)
    same = paired_cluster_bootstrap(a, a, seed=0)
    assert (same.delta, same.lo, same.hi, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_cluster_bootstrap_with_one_instruction_per_prompt_is_the_paired_bootstrap():
    rng = np.random.default_rng(5)
    a, b = (rng.random(40) < 0.5).tolist(), (rng.random(40) < 0.7).tolist()
    cluster = paired_cluster_bootstrap([[x] for x in a], [[y] for y in b], seed=9)
    flat = paired_bootstrap([float(x) for x in a], [float(y) for y in b], seed=9)
    assert cluster.delta == pytest.approx(flat.delta)
    assert (cluster.lo, cluster.hi, cluster.p_value) == pytest.approx((flat.lo, flat.hi, flat.p_value))


def test_paired_cluster_bootstrap_edge_cases():
    empty = paired_cluster_bootstrap([], [], seed=0)
    assert all(math.isnan(v) for v in (empty.delta, empty.lo, empty.hi, empty.p_value))
    one = paired_cluster_bootstrap([[True, False]], [[True, True]], seed=0)
    assert one.delta == 0.5 and math.isnan(one.lo) and math.isnan(one.p_value)
    with pytest.raises(ValueError, match="prompt 0 has no instruction verdicts"):
        paired_cluster_bootstrap([[]], [[True]], seed=0)
    with pytest.raises(ValueError, match="got 1 and 2 items"):
        paired_cluster_bootstrap([[True]], [[True], [False]], seed=0)


def test_three_models_are_compared_with_the_baseline_and_with_the_model_before_each() -> None:
    """base, sft, tuned: sft and tuned against base, and tuned against sft (what DPO changed), with paired tests."""
    from adhere.cli import eval_table
    from adhere.eval.results import metric_block
    from adhere.eval.score import Metric, Scored

    ids = [f"p{i}" for i in range(40)]
    passed = {"base": set(), "sft": set(ids[:20]), "tuned": set(ids[:30])}  # tuned passes 10 more prompts than sft
    scored = {model: {i: Scored(checks={"json": i in ok}) for i in ids} for model, ok in passed.items()}
    block = metric_block(Metric("json", "Parses as JSON", "rate", lambda s: s.checks["json"]), scored, "base", 0, 200)
    pairs = {(c["baseline"], c["model"]): c for c in block["comparisons"]}
    assert list(pairs) == [("base", "sft"), ("base", "tuned"), ("sft", "tuned")]
    assert pairs[("sft", "tuned")]["delta"] == pytest.approx(0.25) and pairs[("sft", "tuned")]["improved"] == ids[20:30]
    assert pairs[("sft", "tuned")]["p_value"] < 0.01  # McNemar: 10 prompts flipped one way, none the other
    table = eval_table({"title": "t", "counts": {"scored": 40, "prompts": 40, "skipped": {}}, "metrics": {"json": block}},
                       ["base", "sft", "tuned"])
    assert [c.header for c in table.columns][-3:] == ["sft vs base", "tuned vs base", "tuned vs sft"]
