"""Issue #13 in one run: engine cost against the reference code's search, the paper's
schedule, render time per output, evaluations per explanation, throughput, start-up.

Sections (``--sections``, all by default):

* ``engine``: seconds and sequential model calls per explanation, side by side, for
  - this engine (``LatentShift`` defaults: fast search both ways, 10 frames, residual
    frames, channels_last, batch_size 16; the maps max and mean computed),
  - the same with reconstruction frames (the paper's frames: same work per evaluation,
    other bounds), with ``batch_size=2``, and without channels_last (``plain``; the
    latent gradient's cosine between the two paths is printed, and the cosine of the
    plain float32 gradient with float64),
  - the paper's schedule (``strategy="paper"``: |λ| = 1..10, 20, 30, ..., one λ per call,
    ``max_lambda=1000``, reconstruction frames, no channels_last) run by this engine
    (no autograd in its evaluations, the sweep reusing the search),
  - a faithful re-implementation of the reference package's search (latentshift 0.0.6,
    :func:`reference_explain`: one-sided serial search λ ← λ − 10 + ⌊λ/10⌋ stopping on a
    turn, p < 0.05, a drop of 0.8, |λ| ≥ 3000 or an L1 change > 5 % of Σ|D(z₀)|; sweep
    ``linspace(λ_min, 0, 10)``; every call with autograd on; λ = 0 decoded twice),
  on the paper's architectures (TorchXRayVision ResNetAE-101 + DenseNet-121 with random
  weights made non-degenerate, see :func:`xrv_models`) and on the bundled models. The
  methods are interleaved per image and repetition; the tables show medians.
* ``compile``: ``compile=True`` against eager on the paper's architectures: compilation
  time, seconds per explanation after it, and after how many images it pays off.
* ``render``: seconds per output for one explanation with the bundled models, measured as
  the run layer renders them (a rendering thread with one torch thread).
* ``evaluations``: evaluations per explanation on validation CXRs (COVID-QU-Ex, split
  ``val``, seed 0, spread evenly over the split), both frame modes, bundled models, each
  image's most confident target; and how far the bounds lie from a precise search
  (``rtol = ftol = 0.001``) of the same goals.
* ``throughput``: images per minute of ``gifsplanation batch`` (``explain_dataset``) with
  all outputs and with ``--no-mp4 --no-flow``, rendering overlapped (default) and serial.
* ``startup``: ``gifsplanation --help`` and ``gifsplanation models`` in fresh processes,
  and whether each imports torch.

The machine's load average is recorded before and after each section: timings on a shared
machine are noisy; compare within one run. The real images are read from
``../shared/data`` at run time (never copied); without them the engine section uses random
images and the data-bound sections are skipped. The JSON records which model files
(SHA-256) were used.

Example:
    python benchmarks/performance.py --threads 1 --json benchmarks/results/performance.json
    python benchmarks/performance.py --sections engine,render --xrv-images 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from gifsplanation import Autoencoder, Classifier, LatentShift

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GIFSPLANATION_SHARED_DATA", ROOT.parent / "shared" / "data"))
COVID = DATA / "covid-qu-ex"
SECTIONS = ("engine", "compile", "render", "evaluations", "throughput", "startup")
REFERENCE = "reference (latentshift 0.0.6)"
console = Console(width=160)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def timed(device: str, fn: Callable[..., Any], *fn_args: Any, **fn_kwargs: Any):
    """``fn(*fn_args, **fn_kwargs)`` and its wall time (CUDA work finished first)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn(*fn_args, **fn_kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


# -- data and models ----------------------------------------------------------------------
def validation_images(n: int) -> torch.Tensor | None:
    """``n`` validation CXRs (1×224×224, [−1024, 1024]) spread evenly over the split (all
    labels), or ``None`` without the data."""
    if not (COVID / "train.csv").is_file():
        return None
    from gifsplanation.datasets import MaskedCXRDataset

    ds = MaskedCXRDataset(COVID / "train.csv", size=224, split="val", seed=0, val_fraction=0.2)
    picked = sorted({k * len(ds) // n for k in range(n)})
    return torch.stack([ds[i]["image"] for i in picked])


def identity(model: Any) -> dict[str, Any]:
    """Which model this is: registry name, class and the first 12 hex of its file's SHA-256."""
    from gifsplanation.runs import model_identity

    ident = model_identity(model)
    sha = ident.pop("weights_sha256")
    path = getattr(model, "weights_path", None)
    return ident | {
        "weights_sha256_prefix": sha[:12] if sha else None,
        "weights_file": Path(path).name if path else None,
    }


def bundled_models() -> tuple[Any, Any, dict[str, Any]]:
    from gifsplanation.models import get_autoencoder, get_classifier

    clf, ae = get_classifier(), get_autoencoder()
    return clf, ae, {"classifier": identity(clf), "autoencoder": identity(ae)}


class LatentUnit(torch.nn.Module):
    """An autoencoder whose latent is measured in another unit: z' = z / scale.

    Shifting z' by λ·∂p/∂z' shifts z by λ·scale²·∂p/∂z, so λ's scale is multiplied by
    1 / scale²; the compute is the autoencoder's own plus two multiplications of the
    (B, 512, 3, 3) latent.
    """

    def __init__(self, autoencoder: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.scale = float(scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x) / self.scale

    def decode(self, z: torch.Tensor, image_size: list[int] | None = None) -> torch.Tensor:
        return self.autoencoder.decode(z * self.scale, image_size=image_size or [1, 1, 224, 224])


XRV_LAMBDA = 100.0
"""Median |λ_lo| the random TorchXRayVision models are brought to (reconstruction frames):
the paper's code stopped between λ = −100 and −1000 on its trained models."""


def xrv_models(calibration: torch.Tensor, seed: int = 0, p0: float = 0.7, scale: float = 4.0):
    """The paper's architectures with random weights, made non-degenerate.

    Random TorchXRayVision models are degenerate on CXRs: BatchNorm statistics that do not
    match [−1024, 1024] inputs give logits of ±600 (saturated sigmoid, zero gradient), and
    the random decoder's output is ~0.06 wide instead of ~2000. So: (1) the autoencoder's
    BatchNorm running statistics are re-estimated on ``calibration`` images (a forward
    pass in train mode, cumulative average) and its last layer is scaled so that
    reconstructions have the images' spread; (2) the classifier's BatchNorm statistics are
    re-estimated on the images *and* their reconstructions, and its last layer is
    re-initialised (random directions of norm ``scale`` / ‖features‖, bias so that the
    mean feature gives ``p0``), so predictions are mid-range and the gradient is non-zero
    on both kinds of frames; (3) λ's unit, arbitrary for random weights (here |λ| ~ 1e-4),
    is set by :class:`LatentUnit` so that the median lower bound of a reconstruction-mode
    search on the first calibration images is :data:`XRV_LAMBDA`, the scale the paper's
    fixed-step schedules were built for. Compute per call is the architectures' own.
    """
    import torchxrayvision as xrv

    torch.manual_seed(seed)
    clf = xrv.models.DenseNet(weights=None)
    ae = xrv.autoencoders.ResNetAE(weights=None)

    def calibrate(model: torch.nn.Module, run: Callable[[torch.Tensor], Any], data) -> None:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        with torch.no_grad():
            run(data)
        model.eval()

    calibrate(ae, lambda v: ae.decode(ae.encode(v)), calibration)
    with torch.no_grad():
        recon = ae.decode(ae.encode(calibration))
        ae.conv1_1.weight.mul_(calibration.std() / recon.std())
        both = torch.cat([calibration, ae.decode(ae.encode(calibration))])
    calibrate(clf, clf.features2, both)
    with torch.no_grad():
        feats = clf.features2(both)
        w = torch.randn(18, feats.shape[1]) / feats.norm(dim=1).mean() * scale
        clf.classifier.weight.copy_(w)
        clf.classifier.bias.copy_(math.log(p0 / (1 - p0)) - w @ feats.mean(0))
    probe = LatentShift(
        copy.deepcopy(clf), copy.deepcopy(ae), mode="reconstruction", max_lambda=1e12
    ).explain(calibration[:4], target=0)
    found = [abs(float(v)) for v in probe.bounds[:, 0] if v != 0]
    median = statistics.median(found) if found else XRV_LAMBDA
    return clf, LatentUnit(ae, math.sqrt(median / XRV_LAMBDA))


XRV_CALIBRATION = 16
XRV_IDENTITY = {
    "classifier": "torchxrayvision.models.DenseNet(weights=None) (DenseNet-121), seed 0, "
    f"BatchNorm re-estimated on {XRV_CALIBRATION} validation CXRs and their reconstructions, "
    "last layer re-initialised (p ≈ 0.7 on average)",
    "autoencoder": "torchxrayvision.autoencoders.ResNetAE(weights=None) (ResNetAE-101), "
    "seed 0, BatchNorm re-estimated, output layer scaled to the images' spread, latent unit "
    f"set so that the median reconstruction-mode |λ_lo| is {XRV_LAMBDA:g}",
}


def model_sets(args: argparse.Namespace) -> list[tuple[str, Any, Any, torch.Tensor, Any, dict]]:
    """(name, classifier, autoencoder, images, target, identity) for the engine section."""
    sets = []
    if "xrv" in args.models:
        images = validation_images(args.xrv_images + XRV_CALIBRATION)
        if images is None:
            images = (torch.rand(args.xrv_images + XRV_CALIBRATION, 1, 224, 224) * 2 - 1) * 1024
        clf, ae = xrv_models(images[args.xrv_images :])
        sets.append(
            ("xrv (paper archs, random)", clf, ae, images[: args.xrv_images], 0, XRV_IDENTITY)
        )
    if "bundled" in args.models:
        clf, ae, ident = bundled_models()
        images = validation_images(args.bundled_images)
        if images is None:
            from gifsplanation.models import demo_image

            images = demo_image().repeat(args.bundled_images, 1, 1, 1)
        sets.append(("bundled", clf, ae, images, None, ident))
    return [
        (name, clf.to(args.device), ae.to(args.device), x.to(args.device), t, ident)
        for name, clf, ae, x, t, ident in sets
    ]


# -- the reference package's search, re-implemented --------------------------------------
def reference_explain(classifier: Any, autoencoder: Any, x: torch.Tensor, target: int) -> dict:
    """latentshift 0.0.6's ``LatentShift.attribute`` for one image, as its defaults run it.

    ``classifier`` returns probabilities (a :class:`gifsplanation.Classifier`: the
    reference's ``apply_sigmoid`` set right for the model); ``autoencoder`` has
    ``encode``/``decode(z, size)`` (a :class:`gifsplanation.Autoencoder`). Autograd stays
    on for every call, as in the reference; λ = 0 is decoded twice (once for the gradient,
    once as the search's first point); calls are cached by λ as there.
    """
    size = tuple(x.shape[-2:])
    calls = 0
    z = autoencoder.encode(x).detach().requires_grad_(True)
    recon0 = autoencoder.decode(z, size)
    pred0 = classifier(recon0)[:, target]
    (dz,) = torch.autograd.grad(pred0.sum(), z)
    calls += 1
    cache: dict[float, tuple[torch.Tensor, float]] = {}

    def shift(lam: float) -> tuple[torch.Tensor, float]:
        nonlocal calls
        if lam not in cache:
            frame = autoencoder.decode(z + dz * lam, size).detach()
            cache[lam] = (frame, float(classifier(frame)[0, target].detach()))
            calls += 1
        return cache[lam]

    _, initial = shift(0.0)
    pixel_sum = float(recon0.detach().abs().sum())
    lbound, last = 0.0, initial
    while True:
        frame, pred = shift(lbound)
        change = float((recon0.detach() - frame).abs().sum())
        if (
            last < pred  # turned
            or pred < 0.05
            or initial - 0.8 > pred
            or lbound <= -3000
            or change > 0.05 * pixel_sum
        ):
            break
        last = pred
        lbound = lbound - 10 + math.floor(lbound / 10)
    lambdas = np.linspace(lbound, 0, 10)
    frames = [shift(float(v))[0] for v in lambdas]
    stack = torch.cat(frames)
    heatmap = (stack[1:] - stack[:-1]).abs().mean(0)  # the reference's default "int" map
    return {"calls": calls, "bound": lbound, "heatmap": heatmap}


# -- engine ---------------------------------------------------------------------------------
def engine_section(args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {}
    for name, clf, ae, images, target, ident in model_sets(args):
        engines = {
            "this engine": LatentShift(copy.deepcopy(clf), copy.deepcopy(ae)),
            "this engine, reconstruction frames": LatentShift(
                copy.deepcopy(clf), copy.deepcopy(ae), mode="reconstruction"
            ),
            "this engine, batch_size=2": LatentShift(
                copy.deepcopy(clf), copy.deepcopy(ae), batch_size=2
            ),
            "plain (no channels_last)": LatentShift(
                copy.deepcopy(clf), copy.deepcopy(ae), channels_last=False
            ),
            "paper schedule": LatentShift(
                copy.deepcopy(clf),
                copy.deepcopy(ae),
                strategy="paper",
                mode="reconstruction",
                batch_size=1,
                max_lambda=1000,
                channels_last=False,
            ),
        }
        ref = LatentShift(copy.deepcopy(clf), copy.deepcopy(ae), channels_last=False)
        labels = [*engines, REFERENCE]
        rows: dict[str, dict[str, list[Any]]] = {
            k: {"seconds": [], "calls": [], "evaluations": [], "bounds": []} for k in labels
        }
        cosines = []
        # One-time costs (allocator, oneDNN kernels) untimed.
        for ls in engines.values():
            ls.explain(images[:1], target=target)
        first_target = engines["this engine"].explain(images[:1], target=target).targets[0]
        reference_explain(ref.classifier, ref.autoencoder, images[:1], first_target)
        for rep in range(args.repeats):
            for i in range(len(images)):
                x = images[i : i + 1]
                tgt = None
                for label, ls in engines.items():
                    t = target if tgt is None else tgt
                    exp, seconds = timed(args.device, explain_with_maps, ls, x, t)
                    if tgt is None:  # the others explain the target this engine chose
                        tgt = exp.targets[0]
                    row = rows[label]
                    row["seconds"].append(seconds)
                    row["calls"].append(exp.cost.batches + 1)  # + the gradient pass
                    row["evaluations"].append(exp.n_evaluations)
                    row["bounds"].append([float(v) for v in exp.bounds[0]])
                result, seconds = timed(
                    args.device, reference_explain, ref.classifier, ref.autoencoder, x, tgt
                )
                row = rows[REFERENCE]
                row["seconds"].append(seconds)
                row["calls"].append(result["calls"])
                row["evaluations"].append(result["calls"] - 1)
                row["bounds"].append([float(result["bound"]), 0.0])
                if rep == 0:
                    cosines.append(gradient_agreement(engines, x, tgt))
        out[name] = {
            "models": ident,
            "images": len(images),
            "repeats": args.repeats,
            "rows": {
                k: {
                    "seconds": statistics.median(r["seconds"]),
                    "calls": statistics.median(r["calls"]),
                    "calls_mean": statistics.mean(r["calls"]),
                    "evaluations": statistics.median(r["evaluations"]),
                    "all_seconds": r["seconds"],
                    "all_calls": r["calls"],
                    "bounds": r["bounds"][: len(images)],
                }
                for k, r in rows.items()
            },
            "gradient": cosines,
        }
        print_engine(name, out[name])
    return out


def explain_with_maps(ls: LatentShift, x: torch.Tensor, target: Any) -> Any:
    """One explanation and its max and mean maps (what every output folder needs)."""
    exp = ls.explain(x, target=target)
    exp.heatmap("max"), exp.heatmap("mean")
    return exp


def latent_gradient(
    classifier: Classifier, autoencoder: Autoencoder, x: torch.Tensor, target: int, nhwc: bool
) -> torch.Tensor:
    """∂p/∂z at z₀ = E(x) for residual frames (the classifier sees x + D(z) − D(z₀)),
    computed from the public adapters, in NHWC (``nhwc``) or the default memory format."""

    def fmt(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if nhwc and t.ndim == 4 else t

    with torch.no_grad():
        z = autoencoder.encode(fmt(x))
    z = fmt(z.detach()).requires_grad_(True)
    recon = autoencoder.decode(z, tuple(x.shape[-2:]))
    frame = x + (recon - recon.detach())
    (dz,) = torch.autograd.grad(classifier(fmt(frame))[0, target], z)
    return dz


def gradient_agreement(engines: dict[str, LatentShift], x: torch.Tensor, target: int) -> dict:
    """Cosine of the latent gradient: channels_last vs plain, and plain float32 vs float64."""
    fast, plain = engines["this engine"], engines["plain (no channels_last)"]
    g_fast = latent_gradient(fast.classifier, fast.autoencoder, x, target, nhwc=True)
    g_plain = latent_gradient(plain.classifier, plain.autoencoder, x, target, nhwc=False)
    c64 = Classifier(
        copy.deepcopy(plain.classifier.model).double(),
        output=plain.classifier.output_kind,
        targets=plain.classifier.targets,
    )
    a64 = Autoencoder(copy.deepcopy(plain.autoencoder.model).double())
    g64 = latent_gradient(c64, a64, x.double(), target, nhwc=False)

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(
            torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0)
        )

    return {
        "channels_last_vs_plain": cos(g_fast, g_plain),
        "plain_vs_float64": cos(g_plain, g64),
        "channels_last_vs_float64": cos(g_fast, g64),
    }


def print_engine(name: str, result: dict) -> None:
    table = Table(title=f"engine, {name}: {result['images']} image(s) × {result['repeats']}")
    for col in ("method", "s / explanation", "sequential model calls", "evaluations"):
        table.add_column(col, justify="right")
    base = result["rows"]["this engine"]["seconds"]
    for label, r in result["rows"].items():
        table.add_row(
            label,
            f"{r['seconds']:.3f} ({r['seconds'] / base:.2f}×)",
            f"{r['calls']:g} (mean {r['calls_mean']:.1f})",
            f"{r['evaluations']:g}",
        )
    console.print(table)
    for g in result["gradient"]:
        console.print(
            "  latent gradient cosine: channels_last vs plain {channels_last_vs_plain:.6f}; "
            "plain float32 vs float64 {plain_vs_float64:.6f}; channels_last vs float64 "
            "{channels_last_vs_float64:.6f}".format(**g)
        )


# -- compile --------------------------------------------------------------------------------
def compile_section(args: argparse.Namespace) -> dict:
    images = validation_images(args.compile_images + XRV_CALIBRATION)
    if images is None:
        n = args.compile_images + XRV_CALIBRATION
        images = (torch.rand(n, 1, 224, 224) * 2 - 1) * 1024
    clf, ae = xrv_models(images[args.compile_images :])
    clf, ae = clf.to(args.device), ae.to(args.device)
    images = images[: args.compile_images].to(args.device)
    eager = LatentShift(copy.deepcopy(clf), copy.deepcopy(ae))
    compiled = LatentShift(copy.deepcopy(clf), copy.deepcopy(ae), compile=True)
    eager.explain(images[:1], target=0)  # eager's own one-time costs, untimed
    _, first = timed(args.device, compiled.explain, images[:1], target=0)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        for i in range(len(images)):
            for label, ls in (("eager", eager), ("compiled", compiled)):
                _, seconds = timed(args.device, ls.explain, images[i : i + 1], target=0)
                times[label].append(seconds)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    gain = e - c
    overhead = first - c
    pays_off = math.ceil(overhead / gain) if gain > 0 else None
    result = {
        "models": XRV_IDENTITY,
        "first_call_seconds": first,
        "eager_seconds": e,
        "compiled_seconds": c,
        "speedup": e / c,
        "pays_off_after_images": pays_off,
        "all": times,
    }
    console.print(
        f"compile (paper archs): first call {first:.1f} s (compilation), then "
        f"{c:.3f} s vs eager {e:.3f} s per explanation ({e / c:.2f}×): pays off after "
        f"{pays_off if pays_off else 'never (no gain)'} images"
    )
    return result


# -- render ---------------------------------------------------------------------------------
def render_section(args: argparse.Namespace) -> dict:
    from gifsplanation.render import (
        save_curve,
        save_flow,
        save_gif,
        save_mp4,
        save_overlay,
        write_report,
    )
    from gifsplanation.runs import ExplainOptions, write_explanation

    images = validation_images(args.render_images)
    if images is None:
        from gifsplanation.models import demo_image

        images = demo_image()
    clf, ae, ident = bundled_models()
    ls = LatentShift(clf, ae)
    explanations = [ls.explain(images[i : i + 1]) for i in range(len(images))]
    work = Path(tempfile.mkdtemp(prefix="gifsplanation-render-"))
    result: dict[str, Any] = {"models": ident, "images": len(explanations)}

    def measure() -> None:
        torch.set_num_threads(1)  # as in the run layer's rendering threads
        start = time.perf_counter()
        save_curve(explanations[0], 0, work / "first-curve.png")
        result["curve_first_call"] = time.perf_counter() - start

        def report(exp: Any, d: Path) -> Any:
            # What write_explanation does last: the record and every asset it shows.
            full = d / "full"
            record = json.loads((full / "explanation.json").read_text())
            assets = {k: full / v for k, v in record["outputs"].items() if k != "report"}
            shown = {k: v for k, v in assets.items() if not k.startswith("npy-")}
            return write_report(record, shown, d / "report.html")

        outputs: dict[str, Callable[[Any, Path], Any]] = {
            "all outputs (write_explanation)": lambda exp, d: write_explanation(
                exp, 0, d / "full", ExplainOptions()
            ),
            "--no-mp4 --no-flow (write_explanation)": lambda exp, d: write_explanation(
                exp, 0, d / "light", ExplainOptions(mp4=False, flow=False)
            ),
            "gif": lambda exp, d: save_gif(exp, 0, d / "latentshift.gif"),
            "mp4": lambda exp, d: save_mp4(exp, 0, d / "latentshift.mp4"),
            "map max (overlay + heatmap)": lambda exp, d: save_overlay(
                exp.images[0].mean(0), exp.heatmap("max")[0], d / "map-max.png"
            ),
            "curve": lambda exp, d: save_curve(exp, 0, d / "curve.png"),
            "flow": lambda exp, d: save_flow(exp, 0, d / "flow.png"),
            "flow, pairs='consecutive' (before #13)": lambda exp, d: save_flow(
                exp, 0, d / "flow-consecutive.png", pairs="consecutive"
            ),
            "report (with its assets)": report,
        }
        times: dict[str, list[float]] = {k: [] for k in outputs}
        for rep in range(max(args.repeats, 3)):
            for k, exp in enumerate(explanations):
                folder = work / f"{rep}-{k}"
                folder.mkdir()
                for label, fn in outputs.items():
                    start = time.perf_counter()
                    fn(exp, folder)
                    times[label].append(time.perf_counter() - start)
        result["seconds"] = {k: statistics.median(v) for k, v in times.items()}
        result["explain_seconds"] = statistics.median(e.cost.seconds for e in explanations)
        result["all"] = times

    try:
        thread = threading.Thread(target=measure)
        thread.start()
        thread.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.flow_figure:
        flow_figure(ls, args.flow_figure)
        result["flow_figure"] = str(args.flow_figure)
    table = Table(
        title=f"render, bundled models, {len(explanations)} explanation(s), rendering thread"
    )
    table.add_column("output")
    table.add_column("seconds (median)", justify="right")
    for k, v in result["seconds"].items():
        table.add_row(k, f"{v:.3f}")
    table.add_row("curve, first call in a process", f"{result['curve_first_call']:.3f}")
    table.add_row("(the explanation itself, engine)", f"{result['explain_seconds']:.3f}")
    console.print(table)
    return result


def flow_figure(ls: LatentShift, path: Path) -> None:
    """The demo image's flow (synthetic: made by the bundled autoencoder, no patient's
    pixels), from the end frames (default) and summed over consecutive pairs, side by side."""
    from PIL import Image, ImageDraw

    from gifsplanation.models import demo_image
    from gifsplanation.render import save_flow

    exp = ls.explain(demo_image(), target="COVID-19")  # what `gifsplanation demo` explains
    with tempfile.TemporaryDirectory() as tmp:
        panels = []
        for pairs, label in (
            ("ends", "pairs='ends' (default): one TV-L1 flow, first -> last frame"),
            ("consecutive", "pairs='consecutive' (before): sum over the 9 frame pairs"),
        ):
            save_flow(exp, 0, Path(tmp) / f"{pairs}.png", pairs=pairs)
            panel = Image.open(Path(tmp) / f"{pairs}.png").convert("RGB")
            labelled = Image.new("RGB", (panel.width, panel.height + 24), "white")
            labelled.paste(panel, (0, 24))
            ImageDraw.Draw(labelled).text((6, 6), label, fill="black")
            panels.append(labelled)
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, optimize=True)


# -- evaluations ----------------------------------------------------------------------------
def evaluations_section(args: argparse.Namespace) -> dict | None:
    images = validation_images(args.validation_images)
    if images is None:
        console.print("evaluations: skipped (no ../shared/data)")
        return None
    clf, ae, ident = bundled_models()
    result: dict[str, Any] = {"models": ident}
    for mode in ("residual", "reconstruction"):
        ls = LatentShift(clf, ae, mode=mode)
        precise = LatentShift(clf, ae, mode=mode, rtol=0.001, ftol=0.001)
        totals, reasons, refused = [], Counter(), 0
        deviations: list[float] = []
        for i in range(len(images)):
            x = images[i : i + 1]
            exp = ls.explain(x)
            if exp.refused[0]:
                refused += 1
                continue
            totals.append(exp.n_evaluations)
            reasons.update(str(r) for r in exp.stop_reasons[0].values())
            ref = precise.explain(x, target=exp.targets[0])
            for side, key in ((0, "lower"), (1, "upper")):
                if str(exp.stop_reasons[0][key]) != "target_reached":
                    continue
                b, p = float(exp.bounds[0, side]), float(ref.bounds[0, side])
                if str(ref.stop_reasons[0][key]) == "target_reached" and p != 0:
                    deviations.append(abs(b - p) / abs(p))
        result[mode] = {
            "n": len(totals),
            "refused": refused,
            "median": statistics.median(totals),
            "mean": statistics.mean(totals),
            "p90": sorted(totals)[int(0.9 * len(totals))],
            "max": max(totals),
            "distribution": dict(sorted(Counter(totals).items())),
            "stop_reasons": dict(reasons),
            "bound_deviation_vs_precise": {
                "sides": len(deviations),
                "median": statistics.median(deviations) if deviations else None,
                "p90": sorted(deviations)[int(0.9 * len(deviations))] if deviations else None,
                "max": max(deviations) if deviations else None,
                "within_5pct": sum(d <= 0.05 for d in deviations),
            },
        }
        r = result[mode]
        d = r["bound_deviation_vs_precise"]
        console.print(
            f"evaluations per explanation, {mode}: n={r['n']} (refused {refused}) median "
            f"{r['median']:g} mean {r['mean']:.2f} p90 {r['p90']} max {r['max']} distribution "
            f"{r['distribution']}; bounds vs precise search ({d['sides']} sides reaching "
            f"their goal): median {d['median']:.4f}, max {d['max']:.4f}, "
            f"{d['within_5pct']} within 5%"
        )
    return result


# -- throughput -----------------------------------------------------------------------------
@contextlib.contextmanager
def rendering_overlap(overlap: bool) -> Iterator[None]:
    """Make every :class:`gifsplanation.runs.Runner` built inside use ``overlap`` (the
    ``batch`` command always overlaps; the serial run is for comparison only)."""
    from gifsplanation.runs import Runner

    original = Runner.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        original(self, *a, **{**kw, "overlap": overlap})

    Runner.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        Runner.__init__ = original  # type: ignore[method-assign]


def throughput_section(args: argparse.Namespace) -> dict | None:
    import logging

    from gifsplanation import distributed
    from gifsplanation.runs import ExplainOptions

    if not (COVID / "train.csv").is_file():
        console.print("throughput: skipped (no ../shared/data)")
        return None
    with open(COVID / "train.csv", newline="") as f:
        rows = sorted(r["image"] for r in csv.DictReader(f))
    step = max(len(rows) // args.throughput_images, 1)
    files = [str(COVID / rows[k]) for k in range(0, len(rows), step)][: args.throughput_images]
    clf, ae, ident = bundled_models()
    per_min: dict[str, list[float]] = {}
    runs = [
        (overlap, kind, options)
        for overlap in (True, False)
        for kind, options in (
            ("all outputs", {}),
            ("--no-mp4 --no-flow", {"mp4": False, "flow": False}),
        )
    ]

    def run(overlap: bool, options: dict[str, Any], inputs: list[str]) -> float:
        out = tempfile.mkdtemp(prefix="gifsplanation-throughput-")
        try:
            with rendering_overlap(overlap):
                start = time.perf_counter()
                res = distributed.explain_dataset(
                    inputs, clf, ae, None, out, ExplainOptions(**options), workers=2
                )
                seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if res.counts["failed"]:
            raise RuntimeError(f"throughput run failed on some images: {res.counts}")
        return seconds

    logging.disable(logging.WARNING)  # the per-image notes are not what is measured
    try:
        for overlap, _, options in runs:  # process-wide first-call costs, untimed
            run(overlap, options, files[:2])
        for rep in range(args.throughput_repeats):
            for overlap, kind, options in runs if rep % 2 == 0 else runs[::-1]:
                seconds = run(overlap, options, files)
                label = f"{'overlap' if overlap else 'serial'}, {kind}"
                per_min.setdefault(label, []).append(len(files) / seconds * 60)
    finally:
        logging.disable(logging.NOTSET)
    result: dict[str, Any] = {k: statistics.median(v) for k, v in per_min.items()}
    for mode in ("overlap", "serial"):
        result[f"{mode} ratio"] = (
            result[f"{mode}, all outputs"] / result[f"{mode}, --no-mp4 --no-flow"]
        )
    table = Table(title=f"throughput, {len(files)} CXRs, bundled models, 2 loader workers")
    table.add_column("run")
    table.add_column("images/min (median)", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:.3f}" if "ratio" in k else f"{v:.1f}")
    console.print(table)
    return result | {
        "images": len(files),
        "repeats": args.throughput_repeats,
        "models": ident,
        "all": per_min,
    }


# -- start-up -------------------------------------------------------------------------------
def startup_section(args: argparse.Namespace) -> dict:
    exe = Path(sys.executable).with_name("gifsplanation")
    commands = {
        "gifsplanation --help": [str(exe), "--help"],
        "gifsplanation models": [str(exe), "models"],
        "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
    }
    result: dict[str, Any] = {}
    for label, cmd in commands.items():
        times = []
        for _ in range(max(args.repeats, 3)):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        result[label] = statistics.median(times)
        console.print(f"start-up: {label}: {result[label]:.2f} s")
    imports = {}
    for label, cli_args in (
        ("gifsplanation --help", ["--help"]),
        ("gifsplanation models", ["models"]),
    ):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "gifsplanation", *cli_args],
            capture_output=True,
            text=True,
            check=True,
        )
        modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
        imports[label] = {m: m in modules for m in ("torch", "torchxrayvision", "matplotlib")}
        console.print(f"start-up: {label} imports {imports[label]}")
    return result | {"imports": imports}


# -- main -----------------------------------------------------------------------------------
RUNNERS = {
    "engine": engine_section,
    "compile": compile_section,
    "render": render_section,
    "evaluations": evaluations_section,
    "throughput": throughput_section,
    "startup": startup_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--models", default="xrv,bundled", help="xrv and/or bundled")
    parser.add_argument("--xrv-images", type=int, default=3)
    parser.add_argument("--bundled-images", type=int, default=8)
    parser.add_argument("--compile-images", type=int, default=3)
    parser.add_argument("--render-images", type=int, default=2)
    parser.add_argument("--validation-images", type=int, default=100)
    parser.add_argument("--throughput-images", type=int, default=24)
    parser.add_argument("--throughput-repeats", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda[:N]: where the engine and compile sections run (models and "
        "images are moved there); render, evaluations and throughput stay on the CPU",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (default: torch's own choice). On a machine shared "
        "with other jobs, 1 avoids OpenMP threads waiting for each other.",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections already in --json (run sections separately)",
    )
    parser.add_argument(
        "--tag", default="", help="store the sections as 'NAME [TAG]' (e.g. another thread count)"
    )
    parser.add_argument(
        "--flow-figure",
        type=Path,
        help="render section: also write the demo image's flow, end frames vs consecutive "
        "pairs, side by side, to this PNG (synthetic image: safe to commit)",
    )
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    result: dict[str, Any] = {}
    if args.merge and args.json and args.json.is_file():
        result = json.loads(args.json.read_text())
    result["machine"] = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
    for name in sections:
        key = f"{name} [{args.tag}]" if args.tag else name
        before = load_average()
        start = time.perf_counter()
        section = RUNNERS[name](args)
        result[key] = {
            "result": section,
            "command": " ".join(["python", *sys.argv]),
            "git_commit": commit,
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_before": before,
            "load_after": load_average(),
            "wall_seconds": time.perf_counter() - start,
            "max_rss_mb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        console.print(
            f"[{key}] {result[key]['wall_seconds']:.0f} s; load average {before} → "
            f"{result[key]['load_after']}"
        )
        if args.json:  # after every section: a late failure keeps the earlier ones
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
            tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
