"""The engine end to end on tiny trained models: counterfactuals move the prediction, maps
land on the blob, strategies agree, batching is exact, evaluations are never repeated."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from gifsplanation import LatentShift, StopReason, paper_schedule, sweep_lambdas


@pytest.fixture(scope="module")
def positives():
    from gifsplanation.testing import BlobData

    x, _, masks = BlobData(seed=7).batch(8, positive=True)
    return x, masks


def test_removing_lowers_and_adding_raises_the_prediction(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    exp = LatentShift(clf, ae).explain(x, target="blob")
    assert exp.frames.shape == (8, 10, 1, 32, 32)
    assert exp.preds.shape == exp.lambdas.shape == (8, 10)
    for i in range(8):
        z = int(exp.zero_index[i])
        assert exp.lambdas[i, z] == 0
        assert torch.all(exp.lambdas[i].diff() >= 0)
        if exp.stop_reasons[i]["lower"].reached:
            assert exp.preds[i, 0] <= exp.goals[i, 0] + 1e-6
            assert exp.preds[i, 0] < exp.preds[i, z]
        if exp.stop_reasons[i]["upper"].reached:
            assert exp.preds[i, -1] >= exp.goals[i, 1] - 1e-6
            assert exp.preds[i, -1] > exp.preds[i, z]
    assert sum(exp.reached("lower")) >= 6 and sum(exp.reached("upper")) >= 6


def test_max_map_lands_on_the_blob(tiny, positives):
    clf, ae, _ = tiny
    x, masks = positives
    maps = LatentShift(clf, ae).attribute(x, target=0, method="max")
    assert maps.shape == (8, 1, 32, 32)
    hits = []
    for m, mask in zip(maps[:, 0], masks, strict=True):
        top = m.flatten().topk(int(mask.sum())).indices
        hits.append(mask.flatten()[top].float().mean())
    chance = masks.float().mean()
    assert torch.stack(hits).mean() > 0.5 > 5 * chance


def test_max_differs_from_mean(tiny, positives):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae).explain(positives[0][:2], target=0)
    assert not torch.allclose(exp.heatmap("max"), exp.heatmap("mean"))
    # each is its definition (the paper's §3), computed here from the frames themselves
    for i in range(2):
        x0 = exp.frames[i, int(exp.zero_index[i])]
        shifts = [(frame - x0).abs() for frame in exp.frames[i]]
        assert torch.allclose(exp.heatmap("max")[i], torch.stack(shifts).amax(0).mean(0))
        mean = sum(shifts) / (len(shifts) - 1)  # over λ ≠ 0: the λ = 0 frame adds nothing
        assert torch.allclose(exp.heatmap("mean")[i], mean.mean(0))


def test_strategies_find_the_same_bounds(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    fast = LatentShift(clf, ae, strategy="fast").explain(x, target=0)
    paper = LatentShift(clf, ae, strategy="paper").explain(x, target=0)
    grid = [0.0] + paper_schedule(fast.config.max_lambda)
    rtol = fast.config.rtol
    for i in range(len(x)):
        for side, col in (("lower", 0), ("upper", 1)):
            rf, rp = fast.stop_reasons[i][side], paper.stop_reasons[i][side]
            assert rf is rp, (i, side)
            bf, bp = abs(float(fast.bounds[i, col])), abs(float(paper.bounds[i, col]))
            if rf is StopReason.TARGET_REACHED:
                prev = grid[grid.index(bp) - 1]
                assert prev * (1 - rtol) <= bf <= bp * (1 + rtol), (i, side, bf, bp)
            elif rf is StopReason.LAMBDA_CAP:
                assert bf == bp


def test_fast_strategy_costs_far_fewer_sequential_calls(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    fast = LatentShift(clf, ae, strategy="fast").explain(x, target=0)
    paper = LatentShift(clf, ae, strategy="paper").explain(x, target=0)
    assert fast.cost.batches * 3 <= paper.cost.batches
    assert sum(fast.cost.search_evaluations) <= sum(paper.cost.search_evaluations)


def test_batch_equals_one_by_one(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    ls = LatentShift(clf, ae, batch_size=5)
    batch = ls.explain(x[:4], target=0)
    for i in range(4):
        single = ls.explain(x[i : i + 1], target=0)
        assert single.stop_reasons[0] == batch.stop_reasons[i]
        torch.testing.assert_close(single.bounds[0], batch.bounds[i], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(single.frames[0], batch.frames[i], rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(single.preds[0], batch.preds[i], rtol=1e-4, atol=1e-5)


def test_deterministic(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    a = LatentShift(clf, ae).explain(x[:3], target=0)
    b = LatentShift(clf, ae).explain(x[:3], target=0)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.lambdas, b.lambdas)


class CountingAE(nn.Module):
    """Wraps an autoencoder and records every latent it decodes."""

    def __init__(self, ae):
        super().__init__()
        self.ae, self.decoded = ae, []

    def encode(self, x):
        return self.ae.encode(x)

    def decode(self, z):
        self.decoded.append(z.shape[0])
        return self.ae.decode(z)


def test_every_decode_is_counted_and_none_repeated(tiny, positives):
    clf, ae, _ = tiny
    counting = CountingAE(ae)
    exp = LatentShift(clf, counting, batch_size=4).explain(positives[0][:3], target=0)
    # One batched decode for the gradient pass (λ = 0), then exactly the counted ones.
    assert counting.decoded[0] == 3
    assert sum(counting.decoded[1:]) == exp.n_evaluations
    assert len(counting.decoded) - 1 == exp.cost.batches
    assert all(n <= 4 for n in counting.decoded[1:])
    # The sweep reuses the search: the bounds and λ = 0 are never decoded twice.
    for i in range(3):
        assert exp.cost.sweep_evaluations[i] <= 10 - 3


def test_fast_total_cost_is_close_to_the_sweep_alone(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    exp = LatentShift(clf, ae).explain(x, target=0)
    sweep_alone = len(x) * (exp.frames.shape[1] - 1)  # λ = 0 comes with the gradient pass
    assert exp.n_evaluations <= 1.6 * sweep_alone


def test_probabilities_are_never_squashed_twice(tiny, positives):
    clf, ae, _ = tiny
    x = positives[0][:2]
    exp = LatentShift(clf, ae).explain(x, target=0)
    with torch.no_grad():
        direct = clf(x)[:, 0]
    torch.testing.assert_close(exp.input_preds, direct)

    class Logits(nn.Module):
        output_kind = "logit"

        def forward(self, images):
            return clf.logits(images)

    exp2 = LatentShift(Logits(), ae).explain(x, target=0)
    torch.testing.assert_close(exp2.input_preds, direct)
    torch.testing.assert_close(exp2.preds, exp.preds)


def test_default_target_is_the_most_confident(tiny):
    clf, ae, _ = tiny

    class Two(nn.Module):
        output_kind = "probability"
        targets = ["blob", "no blob"]

        def forward(self, images):
            p = clf(images)
            return torch.cat([p, 1 - p], 1)

    from gifsplanation.testing import BlobData

    x, y, _ = BlobData(seed=3).batch(6)
    exp = LatentShift(Two(), ae).explain(x)
    with torch.no_grad():
        expected = Two()(x).argmax(1).tolist()
    assert exp.targets == expected
    assert exp.target_names == [["blob", "no blob"][t] for t in expected]
    per_image = LatentShift(Two(), ae).explain(x[:2], target=["no blob", 0])
    assert per_image.targets == [1, 0]


class Constant(nn.Module):
    output_kind = "probability"
    targets = ["x"]

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return torch.sigmoid(self.w * images.mean((1, 2, 3)))[:, None] * 0 + 0.7


def test_no_gradient_is_reported_not_silent(tiny, positives, caplog):
    _, ae, _ = tiny
    with caplog.at_level(logging.WARNING, logger="gifsplanation"):
        exp = LatentShift(Constant(), ae).explain(positives[0][:1], target=0)
    assert exp.stop_reasons[0] == {
        "lower": StopReason.NO_GRADIENT,
        "upper": StopReason.NO_GRADIENT,
    }
    assert exp.n_evaluations == 0 and (exp.lambdas == 0).all()
    # Not logged by the engine: the Explanation says it, in words a caller can show.
    assert caplog.text == ""
    assert any("gradient" in note for note in exp.notes(0))


@pytest.mark.parametrize(
    ("options", "side", "reason"),
    [
        ({"max_lambda": 1e-4}, "lower", StopReason.LAMBDA_CAP),
        ({"max_image_change": 1e-4}, "lower", StopReason.IMAGE_CHANGE),
        ({"upper_change": None}, "upper", StopReason.DISABLED),
        ({}, "lower", StopReason.TARGET_REACHED),
    ],
)
def test_each_stop_reason_through_the_engine(tiny, positives, options, side, reason):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae, **options).explain(positives[0][:2], target=0)
    assert all(r[side] is reason for r in exp.stop_reasons)
    assert exp.summary(0)["stop_reasons"][side] == reason.value


def test_turned_through_the_engine(tiny, positives):
    _, ae, _ = tiny

    class Bump(nn.Module):
        """Prediction peaks at the reconstruction's brightness: any shift lowers it."""

        output_kind = "probability"
        targets = ["bump"]

        def __init__(self, center):
            super().__init__()
            self.center = center

        def forward(self, images):
            m = images.mean((1, 2, 3)) / 1024
            return (0.9 - 40 * (m - self.center) ** 2)[:, None]

    x = positives[0][:1]
    with torch.no_grad():
        center = float(ae.decode(ae.encode(x)).mean() / 1024) + 0.01
    exp = LatentShift(Bump(center), ae).explain(x, target=0)
    assert exp.stop_reasons[0]["upper"] is StopReason.TURNED


def test_sweep_lambdas_include_zero_and_both_bounds():
    assert sweep_lambdas(-90, 10, 11) == [-90, -80, -70, -60, -50, -40, -30, -20, -10, 0, 10]
    row = sweep_lambdas(-0.3, 0.1, 10)
    assert row[0] == -0.3 and row[-1] == 0.1 and 0.0 in row and len(row) == 10
    assert sweep_lambdas(-5, 0, 4) == [-5, -5 * 2 / 3, -5 / 3, 0]
    assert sweep_lambdas(0, 0, 3) == [0, 0, 0]


def test_saturated_logit_still_has_a_direction(tiny, positives):
    """σ(20) rounds to 1 in float32, so autograd through the sigmoid gives dz = 0; the
    engine differentiates the logit instead and still finds a counterfactual direction."""
    clf, ae, _ = tiny

    class Saturated(nn.Module):
        output_kind = "logit"

        def forward(self, images):
            return clf.logits(images) * 8 + 20

    exp = LatentShift(Saturated(), ae).explain(positives[0][:1], target=0)
    assert exp.stop_reasons[0]["lower"] is not StopReason.NO_GRADIENT
