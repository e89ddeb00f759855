"""The λ search on analytic prediction curves: every stop rule, both strategies, agreement."""

from __future__ import annotations

import math

import pytest

from gifsplanation import SearchConfig, StopReason, paper_schedule
from gifsplanation._core.search import Lane, run_search


def drive(pred, config=SearchConfig(), strategy="fast", change=lambda lam: 0.0, slope=None):
    """Run both lanes of one image on a function pred(λ); return (lanes, evaluations)."""
    calls: list[float] = []

    def evaluate(requests):
        out = []
        for _, lam in requests:
            calls.append(lam)
            out.append((pred(lam), change(lam)))
        return out

    p0 = pred(0.0)
    if slope is None:
        h = 1e-4
        slope = abs(pred(h) - pred(-h)) / (2 * h)
    lanes = [Lane(0, side, p0, slope, config, strategy) for side in (-1, 1)]
    run_search(lanes, evaluate, serial=strategy == "paper")
    return lanes, calls


def sigmoid_curve(scale: float, p0: float = 0.8):
    offset = math.log(p0 / (1 - p0))
    return lambda lam: 1 / (1 + math.exp(-(offset + lam / scale)))


def test_paper_schedule_follows_appendix_c():
    ts = paper_schedule(1000)
    assert ts[:11] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20]
    assert ts[-1] == 1000 and len(ts) == 109
    assert paper_schedule(25) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 25]


@pytest.mark.parametrize("strategy", ["fast", "paper"])
def test_monotone_curve_reaches_both_goals(strategy):
    pred = sigmoid_curve(scale=40)
    (lo, hi), _ = drive(pred, strategy=strategy)
    assert lo.reason is StopReason.TARGET_REACHED and hi.reason is StopReason.TARGET_REACHED
    assert pred(lo.bound) <= 0.8 * 0.7 and pred(hi.bound) >= 0.8 * 1.05
    assert lo.bound < 0 < hi.bound


@pytest.mark.parametrize("scale", [0.3, 4.0, 40.0, 300.0])
def test_strategies_agree_within_the_paper_grid_and_tolerance(scale):
    pred = sigmoid_curve(scale)
    config = SearchConfig()
    (f_lo, f_hi), _ = drive(pred, config, "fast")
    (p_lo, p_hi), _ = drive(pred, config, "paper")
    grid = [0.0] + paper_schedule(config.max_lambda)
    for fast, paper in ((f_lo, p_lo), (f_hi, p_hi)):
        assert fast.reason is paper.reason is StopReason.TARGET_REACHED
        # The paper's bound is the first grid point past the crossing; the fast bound lies
        # past the crossing too, within the refinement tolerance.
        assert (fast.bound > 0) == (paper.bound > 0)  # bounds are signed
        prev = grid[grid.index(abs(paper.bound)) - 1]
        assert prev * (1 - config.rtol) <= abs(fast.bound) <= abs(paper.bound) * (1 + config.rtol)


def test_fast_search_needs_few_evaluations():
    for scale in (0.3, 4.0, 40.0, 300.0):
        _, fast_calls = drive(sigmoid_curve(scale), strategy="fast")
        _, paper_calls = drive(sigmoid_curve(scale), strategy="paper")
        assert len(fast_calls) <= 8, (scale, fast_calls)
        assert len(set(fast_calls)) == len(fast_calls), "a λ was evaluated twice"
        if scale >= 40:
            assert len(fast_calls) * 3 <= len(paper_calls)


@pytest.mark.parametrize("strategy", ["fast", "paper"])
def test_turn_stops_before_the_goal(strategy):
    # Falls to 0.7 at λ = -25, then rises again: the 30% goal (0.56) is never reached.
    pred = lambda lam: 0.8 - 0.1 * math.sin(min(abs(lam), 50) / 50 * math.pi) if lam < 0 else 0.8  # noqa: E731
    (lo, _), _ = drive(pred, strategy=strategy, slope=0.01)
    assert lo.reason is StopReason.TURNED
    assert not lo.reason.reached
    assert -40 <= lo.bound <= -10
    assert pred(lo.bound) < 0.8


@pytest.mark.parametrize("strategy", ["fast", "paper"])
def test_flat_curve_stops_at_the_cap(strategy):
    config = SearchConfig(max_lambda=200)
    (lo, hi), calls = drive(lambda lam: 0.8, config, strategy, slope=1e-3)
    assert lo.reason is hi.reason is StopReason.LAMBDA_CAP
    assert lo.bound == -200 and hi.bound == 200
    if strategy == "fast":
        assert len(calls) <= 10


@pytest.mark.parametrize("strategy", ["fast", "paper"])
def test_image_change_limit_stops_first(strategy):
    config = SearchConfig(max_image_change=0.5)
    pred = sigmoid_curve(scale=100)  # 30% fall needs λ ≈ -114, 5% rise λ ≈ 27
    (lo, hi), _ = drive(pred, config, strategy, change=lambda lam: abs(lam) / 100)
    assert lo.reason is StopReason.IMAGE_CHANGE
    assert -50 <= lo.bound <= -40  # the last point within the limit
    assert hi.reason is StopReason.TARGET_REACHED


def test_zero_gradient_and_disabled_side():
    config = SearchConfig(upper_change=None)
    (lo, hi), calls = drive(lambda lam: 0.8, config, slope=0.0)
    assert lo.reason is StopReason.NO_GRADIENT and hi.reason is StopReason.DISABLED
    assert calls == [] and lo.bound == 0 and hi.bound == 0


def test_absolute_and_relative_goals():
    rel = SearchConfig()
    ab = SearchConfig(threshold_mode="absolute", lower_change=0.5, upper_change=0.05)
    assert rel.goal(0.8, -1) == pytest.approx(0.56)
    assert rel.goal(0.8, 1) == pytest.approx(0.84)
    assert ab.goal(0.8, -1) == pytest.approx(0.3)
    assert ab.goal(0.8, 1) == pytest.approx(0.85)
    # 0.98 * 1.05 > 1 is unreachable for a probability: aim halfway to 1 instead.
    assert rel.goal(0.98, 1) == pytest.approx(0.99)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_mode": "percent"},
        {"lower_change": 0},
        {"upper_change": -0.1},
        {"max_lambda": 0},
        {"max_image_change": 0},
        {"rtol": 0},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SearchConfig(**kwargs)


def test_a_pathological_curve_cannot_keep_a_lane_busy():
    # Every point beyond 0 exceeds the image-change limit while the limit is never
    # approached from below: the refinement would halve towards 0 forever.
    config = SearchConfig(max_image_change=0.5)
    (lo, hi), calls = drive(
        lambda lam: 0.8, config, change=lambda lam: 1e9 if lam else 0.0, slope=1e-3
    )
    assert lo.reason is hi.reason is StopReason.IMAGE_CHANGE
    assert len(calls) <= 2 * 50
