"""Residual and reconstruction frames, absent targets, fixed λ ranges and the OOD gate,
through the engine on the tiny trained models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gifsplanation import LatentShift, OODGate, StopReason
from gifsplanation._core.heatmaps import HEATMAPS
from gifsplanation.testing import BlobData


@pytest.fixture(scope="module")
def positives():
    x, _, masks = BlobData(seed=11).batch(6, positive=True)
    return x, masks


def test_residual_zero_frame_is_the_input_bit_for_bit(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    exp = LatentShift(clf, ae, mode="residual").explain(x, target=0)
    for i in range(len(x)):
        z = int(exp.zero_index[i])
        assert torch.equal(exp.frames[i, z], x[i])
        assert float(exp.preds[i, z]) == float(exp.input_preds[i])
    assert torch.equal(exp.initial_preds, exp.input_preds)


def test_reconstruction_zero_frame_is_the_reconstruction(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    exp = LatentShift(clf, ae, mode="reconstruction").explain(x, target=0)
    with torch.no_grad():
        recon = ae.decode(ae.encode(x))
    for i in range(len(x)):
        torch.testing.assert_close(exp.frames[i, int(exp.zero_index[i])], recon[i])
    torch.testing.assert_close(exp.reconstructions, recon)
    assert not torch.equal(exp.initial_preds, exp.input_preds)


def test_residual_frames_are_the_input_plus_the_decoded_change(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    residual = LatentShift(clf, ae, mode="residual", pixel_range=None).explain(x[:2], target=0)
    with torch.no_grad():
        z = ae.encode(x[:2])
        r0 = ae.decode(z)
    # Same gradient direction: decoding z + λ dz with the reported λs reproduces the frames.
    recon = LatentShift(clf, ae, mode="reconstruction").explain(x[:2], target=0)
    assert residual.stop_reasons[0]["lower"] is StopReason.TARGET_REACHED
    for i in range(2):
        for k in range(residual.frames.shape[1]):
            change = residual.frames[i, k] - x[i]
            assert change.abs().max() < 2048
        # The change frames relative to λ = 0 are decoded images minus the reconstruction.
        zero = int(residual.zero_index[i])
        delta_last = residual.frames[i, -1] - residual.frames[i, zero]
        assert delta_last.abs().sum() > 0
    assert residual.mode == "residual" and recon.mode == "reconstruction"
    assert torch.equal(residual.reconstructions, r0)


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_removing_lowers_and_the_map_lands_on_the_blob(tiny, positives, mode):
    clf, ae, _ = tiny
    x, masks = positives
    exp = LatentShift(clf, ae, mode=mode).explain(x, target="blob")
    assert sum(exp.reached("lower")) >= 5
    for i in range(len(x)):
        if exp.reached("lower")[i]:
            assert exp.preds[i, 0] < exp.preds[i, int(exp.zero_index[i])]
    maps = exp.heatmap("max")
    hits = []
    for m, mask in zip(maps, masks, strict=True):
        top = m.flatten().topk(int(mask.sum())).indices
        hits.append(mask.flatten()[top].float().mean())
    assert torch.stack(hits).mean() > 0.5 > 5 * masks.float().mean()


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_batch_equals_one_image_per_call(tiny, positives, mode):
    clf, ae, _ = tiny
    x, _ = positives
    ls = LatentShift(clf, ae, mode=mode, batch_size=4)
    batch = ls.explain(x[:3], target=0)
    for i in range(3):
        single = ls.explain(x[i : i + 1], target=0)
        assert single.stop_reasons[0] == batch.stop_reasons[i]
        torch.testing.assert_close(single.bounds[0], batch.bounds[i], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(single.frames[0], batch.frames[i], rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_maps_equal_their_definitions_on_the_frames(tiny, positives, mode):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae, mode=mode).explain(positives[0][:2], target=0)
    f = exp.frames
    for i in range(2):
        x0 = f[i, int(exp.zero_index[i])]
        diff = (f[i] - x0).abs().mean(1)  # (T, H, W)
        torch.testing.assert_close(exp.heatmap("max")[i], diff.amax(0))
        torch.testing.assert_close(exp.heatmap("mean")[i], diff.sum(0) / (f.shape[1] - 1))
        torch.testing.assert_close(exp.heatmap("minmax")[i], (f[i, 0] - f[i, -1]).abs().mean(0))
    assert set(HEATMAPS) >= {"max", "mean", "minmax", "interval"}


def test_residual_frames_stay_in_the_pixel_range(tiny, positives):
    clf, ae, _ = tiny
    x, _ = positives
    ls = LatentShift(clf, ae, mode="residual", max_image_change=None, max_lambda=1e6)
    exp = ls.explain(x[:2], target=0, n_frames=5)
    assert exp.frames.min() >= -1024 and exp.frames.max() <= 1024
    assert exp.pixel_range == (-1024.0, 1024.0)
    tight = LatentShift(clf, ae, pixel_range=(-500.0, 500.0)).explain(x[:1], target=0)
    zero = int(tight.zero_index[0])
    shifted = tight.frames[0, [k for k in range(tight.frames.shape[1]) if k != zero]]
    assert shifted.min() >= -500 and shifted.max() <= 500  # every shifted frame is clamped
    assert x[0].min() < -500  # ... while λ = 0 stays the input, unclamped


def test_mode_is_in_the_summary(tiny, positives):
    clf, ae, _ = tiny
    for mode in ("residual", "reconstruction"):
        s = LatentShift(clf, ae, mode=mode).explain(positives[0][:1], target=0).summary(0)
        assert s["mode"] == mode


def test_unknown_mode_is_refused(tiny):
    clf, ae, _ = tiny
    with pytest.raises(ValueError, match="frame mode 'paper'.*residual, reconstruction"):
        LatentShift(clf, ae, mode="paper")


def test_absent_target_is_said_and_the_upper_side_aims_at_the_operating_point(tiny):
    from gifsplanation.testing import BlobData

    clf, ae, _ = tiny
    x, _, _ = BlobData(seed=5).batch(4, positive=False)
    exp = LatentShift(clf, ae, operating_points=[0.5]).explain(x, target=0)
    for i in range(4):
        assert float(exp.input_preds[i]) < 0.5
        assert exp.target_present[i] is False
        assert float(exp.goals[i, 1]) == pytest.approx(0.5)
        assert any("does not find blob" in n for n in exp.notes(i))
        assert exp.summary(i)["target_present"] is False
    # The informative side is the upper one: the frames reach the operating point.
    assert sum(exp.reached("upper")) >= 3
    for i in range(4):
        if exp.reached("upper")[i]:
            assert float(exp.preds[i, -1]) >= 0.5


def test_present_target_keeps_the_relative_goals(tiny, positives):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae, operating_points=[0.5]).explain(positives[0][:2], target=0)
    for i in range(2):
        p0 = float(exp.input_preds[i])
        assert exp.target_present[i]
        assert float(exp.goals[i, 0]) == pytest.approx(0.7 * p0)


def test_fixed_lambda_range_is_swept_without_search(tiny, positives):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae, lambda_range=(-4.0, 2.0)).explain(positives[0][:2], target=0)
    assert exp.cost.search_evaluations == [0, 0]
    for i in range(2):
        assert exp.stop_reasons[i] == {
            "lower": StopReason.FIXED_RANGE,
            "upper": StopReason.FIXED_RANGE,
        }
        assert float(exp.lambdas[i, 0]) == -4.0 and float(exp.lambdas[i, -1]) == 2.0
        assert exp.notes(i) == []
    with pytest.raises(ValueError, match="lambda_range"):
        LatentShift(clf, ae, lambda_range=(1.0, 2.0))


class Flag(nn.Module):
    """A stand-in detector: 'not a CXR' when the image's mean is above 0."""

    def forward(self, x):
        return (x.mean((1, 2, 3)) > 0).float()


def test_gate_refuses_flagged_inputs_without_evaluating_them(tiny, positives):
    clf, ae, _ = tiny
    x = positives[0][:2].clone()
    x[1] = 1000.0  # a flat bright image: flagged by the stand-in detector
    gate = OODGate(detector=Flag(), detector_threshold=0.5)
    exp = LatentShift(clf, ae, gate=gate).explain(x, target=0)
    assert exp.refused == [False, True]
    assert exp.stop_reasons[1] == {
        "lower": StopReason.OUT_OF_DISTRIBUTION,
        "upper": StopReason.OUT_OF_DISTRIBUTION,
    }
    assert exp.cost.search_evaluations[1] == 0 and exp.cost.sweep_evaluations[1] == 0
    assert "refused" in exp.notes(1)[0] and "p(not a frontal CXR) 1" in exp.notes(1)[0]
    assert exp.summary(1)["ood"]["flagged"] is True
    warned = LatentShift(clf, ae, gate=gate, ood="warn").explain(x, target=0)
    assert warned.refused == [False, False]
    assert "explained anyway" in warned.notes(1)[0]
    assert warned.cost.search_evaluations[1] > 0
    off = LatentShift(clf, ae, gate=gate, ood="off").explain(x, target=0)
    assert off.ood is None


def test_gate_on_reconstruction_error(tiny, positives):
    clf, ae, _ = tiny
    x = positives[0][:1]
    exp = LatentShift(clf, ae, gate=OODGate(recon_threshold=1e-3)).explain(x, target=0)
    assert exp.refused == [True]
    assert exp.ood.scores["recon_error"][0] > 1e-3


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_a_flat_image_ends_with_a_finite_search(tiny, mode):
    """A constant image has no dynamic range: the image-change rule must not fire at every
    λ and drive the refinement towards 0 forever."""
    clf, ae, _ = tiny
    x = torch.full((1, 1, 32, 32), -384.0)
    exp = LatentShift(clf, ae, mode=mode).explain(x, target=0)
    assert exp.n_evaluations < 60
    assert all(
        r is not StopReason.IMAGE_CHANGE or abs(b) > 1e-6
        for r, b in zip(exp.stop_reasons[0].values(), exp.bounds[0], strict=True)
    )


def test_a_side_that_falls_short_says_how_far_it_got(tiny32):
    """A removal stopped by the λ cap names the prediction reached against its goal."""
    clf, ae = tiny32
    x, _, _ = BlobData(seed=3).batch(1, positive=True)
    exp = LatentShift(clf, ae, max_lambda=1e-3).explain(x, target="blob")
    assert exp.stop_reasons[0]["lower"] == StopReason.LAMBDA_CAP
    note = next(n for n in exp.notes(0) if n.startswith("removal"))
    start, end, goal = (f"{v:.3g}" for v in (exp.input_preds[0], exp.preds[0][0], exp.goals[0, 0]))
    assert f"p(blob) went from {start} to {end} against a goal of {goal}" in note
    assert "max_lambda" in note and "not a counterfactual" in note
