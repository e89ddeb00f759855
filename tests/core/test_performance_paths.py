"""The engine's fast paths give the plain path's answers: channels_last, inference mode,
torch.compile, the search's shortcuts and the sweep frames that reuse the search."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from gifsplanation import LatentShift, SearchConfig, StopReason, sweep_lambdas
from gifsplanation._core.latent_shift import gradient_pass, place_frames
from gifsplanation._core.search import Lane, run_search


@pytest.fixture(scope="module")
def positives(tiny):
    return tiny[2].positive(6)


def fresh(tiny):
    """Copies of the tiny models (the engine converts its models' memory format)."""
    clf, ae, _ = tiny
    return copy.deepcopy(clf), copy.deepcopy(ae)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_channels_last_gradient_frames_and_predictions_match_the_plain_path(tiny, positives, mode):
    plain = LatentShift(*fresh(tiny), mode=mode, channels_last=False)
    fast = LatentShift(*fresh(tiny), mode=mode, channels_last=True)
    targets = torch.zeros(len(positives), dtype=torch.long)
    g_plain = gradient_pass(plain.classifier, plain.autoencoder, positives, targets, mode)
    g_fast = gradient_pass(
        fast.classifier, fast.autoencoder, positives, targets, mode, channels_last=True
    )
    for i in range(len(positives)):
        assert cosine(g_plain.dz[i], g_fast.dz[i]) >= 0.999
    torch.testing.assert_close(g_fast.p0, g_plain.p0, rtol=1e-4, atol=1e-5)

    a, b = plain.explain(positives, target=0), fast.explain(positives, target=0)
    assert a.stop_reasons == b.stop_reasons
    torch.testing.assert_close(b.bounds, a.bounds, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(b.preds, a.preds, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(b.frames, a.frames, rtol=1e-3, atol=0.5)  # of [−1024, 1024]


def test_channels_last_changes_strides_only_and_can_be_declined(tiny):
    clf, ae = fresh(tiny)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    LatentShift(clf, ae)
    conv = next(m for m in clf.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k]), k
    clf2, ae2 = fresh(tiny)
    LatentShift(clf2, ae2, channels_last=False)
    conv2 = next(m for m in clf2.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv2.weight.is_contiguous()


def test_explanations_hold_ordinary_tensors(tiny, positives):
    exp = LatentShift(*fresh(tiny)).explain(positives[:2], target=0)
    for t in (exp.frames, exp.preds, exp.images, exp.reconstructions, exp.input_preds):
        assert not t.is_inference()
    assert exp.frames.is_contiguous() and exp.images.is_contiguous()
    exp.frames.add_(0)  # usable in place
    exp.frames.requires_grad_(True)  # and with autograd downstream


def test_compiled_frames_match_eager(tiny, positives):
    eager = LatentShift(*fresh(tiny)).explain(positives[:3], target=0)
    compiled = LatentShift(*fresh(tiny), compile=True).explain(positives[:3], target=0)
    assert compiled.stop_reasons == eager.stop_reasons
    torch.testing.assert_close(compiled.bounds, eager.bounds, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(compiled.preds, eager.preds, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(compiled.frames, eager.frames, rtol=1e-3, atol=0.5)


def test_sweep_frames_reuse_search_points_within_the_snap():
    row = sweep_lambdas(-80.0, 20.0, 11)  # spacing 10 on both sides
    assert row == [-80.0, -70.0, -60.0, -50.0, -40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0]
    known = [-68.0, -45.0, -29.0, 8.0, 13.0, -80.0, 20.0, 0.0]
    snapped = place_frames(-80.0, 20.0, 11, known, snap=0.25)
    assert snapped[0] == -80.0 and snapped[-1] == 20.0 and 0.0 in snapped
    moved = {a: b for a, b in zip(row, snapped, strict=True) if a != b}
    assert moved == {-70.0: -68.0, -30.0: -29.0, 10.0: 8.0}  # -45 and 13 are too far
    assert snapped == sorted(snapped)
    assert place_frames(-80.0, 20.0, 11, known, snap=0.0) == row
    assert place_frames(0.0, 0.0, 4, [1.0], snap=0.25) == [0.0] * 4


def test_every_snapped_frame_is_an_evaluated_point_and_bounds_do_not_move(tiny, positives):
    exact = LatentShift(*fresh(tiny), frame_snap=0.0).explain(positives, target=0)
    reuse = LatentShift(*fresh(tiny)).explain(positives, target=0)
    torch.testing.assert_close(reuse.bounds, exact.bounds)
    assert reuse.n_evaluations <= exact.n_evaluations
    for i in range(len(positives)):
        lam, ideal = reuse.lambdas[i].tolist(), exact.lambdas[i].tolist()
        lo, hi = ideal[0], ideal[-1]
        for a, b in zip(ideal, lam, strict=True):
            spacing = abs(lo if a < 0 else hi) / max(sum(1 for v in ideal if (v < 0) == (a < 0)), 1)
            assert abs(a - b) <= 0.25 * spacing + 1e-9


def drive(pred, config=SearchConfig()):
    calls: list[float] = []

    def evaluate(requests):
        calls.extend(lam for _, lam in requests)
        return [(pred(lam), 0.0) for _, lam in requests]

    p0, h = pred(0.0), 1e-4
    slope = abs(pred(h) - pred(-h)) / (2 * h)
    lanes = [Lane(0, side, p0, slope, config, "fast") for side in (-1, 1)]
    run_search(lanes, evaluate)
    return lanes, calls


@pytest.mark.parametrize("scale", [0.3, 4.0, 40.0, 300.0])
def test_a_logit_linear_curve_costs_one_evaluation_per_side(scale):
    offset = math.log(0.8 / 0.2)
    lanes, calls = drive(lambda lam: 1 / (1 + math.exp(-(offset + lam / scale))))
    assert [lane.reason for lane in lanes] == [StopReason.TARGET_REACHED] * 2
    assert len(calls) == 2, calls


def test_a_bent_curve_still_brackets_and_stays_within_the_tolerance():
    # The logit slows down away from 0 (as measured on real CXRs): guesses fall short.
    pred = lambda lam: 1 / (1 + math.exp(-(2.0 + 3 * math.tanh(lam / 50))))  # noqa: E731
    config = SearchConfig()
    lanes, calls = drive(pred, config)
    for lane in lanes:
        assert lane.reason is StopReason.TARGET_REACHED
        # The bound is past the goal and within rtol of where the goal is crossed.
        lo, hi = 0.0, abs(lane.bound)
        for _ in range(60):
            mid = (lo + hi) / 2
            p = pred(lane.side * mid)
            reached = p <= lane.goal if lane.side < 0 else p >= lane.goal
            lo, hi = (lo, mid) if reached else (mid, hi)
        assert abs(lane.bound) <= hi * (1 + config.rtol) or abs(
            pred(lane.bound) - lane.goal
        ) <= config.ftol * abs(lane.goal - lane.p0)
    assert len(calls) <= 10
