"""Experiment ``randomization``: the model-parameter randomisation test (the paper's Fig. 5,
after Adebayo et al. 2018).

A map that explains the classifier must change when the classifier's weights are
destroyed. Layers are re-initialised cumulatively from the top (the output layer first);
after each step every method's map is recomputed and compared with the map of the intact
model by Spearman rank correlation (maps are non-negative, i.e. |map|). Low correlation is
good: the map depends on what the model learned.

Which layers count: the layers that compute (``Conv*d``, ``ConvTranspose*d``, ``Linear``),
in the order the model registers them, reversed. Normalisation layers (BatchNorm & co.) are
deliberately left intact: re-initialising a BatchNorm resets its running statistics to
mean 0 / variance 1, which in eval mode lets activations of the randomised network grow
without bound and turns outputs into inf/NaN — a failure of the test, not of the method.
If an output still turns non-finite, that step's correlations are recorded as NaN and
counted (``n_nonfinite``), never silently dropped. Re-initialisation uses each layer's own
``reset_parameters`` under a seeded generator, so runs are reproducible.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics import iou_top_p, spearman_similarity
from .common import Setup
from .data import load_item
from .maps import build_methods, compute_maps
from .run import markdown_table, mean_sd, plt_agg

log = logging.getLogger(__name__)

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def cascade_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's computing layers, top (output) first."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]
    return layers[::-1]


def cascade_steps(model: nn.Module, n_steps: int | None) -> list[list[str]]:
    """Layer names reset at each cumulative step (step k resets groups 1..k).

    ``n_steps=None`` gives one layer per step; otherwise the layers are split into
    ``n_steps`` groups of near-equal size, top first.
    """
    names = [n for n, _ in cascade_layers(model)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv/Linear layer to re-initialise")
    if n_steps is None or n_steps >= len(names):
        return [[n] for n in names]
    return [list(g) for g in np.array_split(np.array(names, dtype=object), n_steps)]


def randomized_copy(model: nn.Module, names: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` with the layers ``names`` re-initialised (seeded)."""
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    with torch.random.fork_rng():
        for k, name in enumerate(names):
            torch.manual_seed(seed * 100_003 + k)
            modules[name].reset_parameters()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


def run_randomization(setup: Setup, n_steps: int | None = 6) -> dict[str, Any]:
    """Run the cascading randomisation; write ``per_item.csv``, ``summary.csv``,
    ``table.md``, ``randomization.png`` and ``manifest.json``."""
    run = setup.start("randomization", {"n_steps": n_steps}, uses_engine=bool(setup.needs_ae))
    ds = setup.dataset
    items = setup.items(required_by="randomization")
    steps = cascade_steps(setup.classifier, n_steps)
    models: list[tuple[int, list[str], nn.Module]] = [(0, [], setup.classifier)]
    reset: list[str] = []
    for k, group in enumerate(steps, start=1):
        reset = reset + group
        models.append((k, list(reset), randomized_copy(setup.classifier, reset, setup.seed)))
    rows: list[dict[str, Any]] = []
    total = len(items) * len(models)
    pairs = [(item, step) for item in items for step in models]
    originals: dict[str, dict[str, np.ndarray]] = {}
    loaded: tuple[Any, Any, Any] = (None, None, None)
    for item, (k, names, model) in run.progress(pairs, "randomization", total=total):
        if loaded[0] is not item:  # pairs run item by item: read each image once
            loaded = (item, *load_item(ds, item))
        _, x, mask = loaded
        probs = setup.predict(x, model)[0]
        finite = bool(np.isfinite(probs).all())
        methods = build_methods(setup.methods, model, setup.autoencoder, setup.method_options)
        if finite:
            maps, _, _ = compute_maps(methods, x, item.target, run=run, key=f"{item.key}__s{k}")
        else:
            log.warning("step %d: the randomised classifier's output is not finite", k)
            maps = {n: np.full(x.shape[-2:], np.nan, np.float32) for n in methods}
        if k == 0:
            originals[item.key] = maps
        for name, m in maps.items():
            ok = finite and bool(np.isfinite(m).all())
            rows.append(
                {
                    "item": item.key,
                    "target": item.target_name,
                    "method": name,
                    "mode": setup.mode_of(name),
                    "step": k,
                    "layers_reset": len(names),
                    "last_layer_reset": names[-1] if names else "",
                    "spearman": spearman_similarity(originals[item.key][name], m)
                    if ok
                    else float("nan"),
                    "iou": iou_top_p(m, mask) if ok else float("nan"),
                    "pred": float(probs[item.target]),
                    "finite": ok,
                }
            )
    summary = []
    for name in setup.methods:
        for k, names, _ in models:
            sel = [r for r in rows if r["method"] == name and r["step"] == k]
            m, s, n = mean_sd(r["spearman"] for r in sel)
            summary.append(
                {
                    "method": name,
                    "mode": setup.mode_of(name),
                    "step": k,
                    "layers_reset": len(names),
                    "last_layer_reset": names[-1] if names else "",
                    "spearman_mean": m,
                    "spearman_sd": s,
                    "n": n,
                    "n_nonfinite": sum(not r["finite"] for r in sel),
                    "iou_mean": mean_sd(r["iou"] for r in sel)[0],
                    "pred_mean": mean_sd(r["pred"] for r in sel)[0],
                }
            )
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    text = _table(summary, models, setup.methods)
    if setup.needs_ae:
        text = setup.engine.describe() + ".\n\n" + text
    run.write_text("table.md", text)
    _plot(run, summary, models, setup.methods)
    run.write_manifest(
        "done", n_items=len(items), steps=[{"step": k, "layers_reset": n} for k, n, _ in models]
    )
    return {"summary": summary, "rows": rows, "out": str(setup.out)}


def _table(summary: list[dict[str, Any]], models: list, methods: list[str]) -> str:
    head = ["method"] + [f"{len(n)} reset" for _, n, _ in models]
    body = []
    for name in methods:
        cells = [name]
        for k, _, _ in models:
            s = next(r for r in summary if r["method"] == name and r["step"] == k)
            cells.append(
                "–" if s["n"] == 0 else f"{s['spearman_mean']:.2f} ± {s['spearman_sd']:.2f}"
            )
        body.append(cells)
    preds = ["mean p(target)"] + [
        f"{next(r for r in summary if r['step'] == k)['pred_mean']:.3f}" for k, _, _ in models
    ]
    body.append(preds)
    last = ["last layer reset"] + [n[-1] if n else "(none)" for _, n, _ in models]
    body.append(last)
    return (
        "Spearman rank correlation of each map with the intact model's map, as layers are "
        "re-initialised cumulatively from the top (lower = more sensitive to the "
        "model)\n\n" + markdown_table(head, body)
    )


def _plot(run: Any, summary: list[dict[str, Any]], models: list, methods: list[str]) -> None:
    plt = plt_agg()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [len(n) for _, n, _ in models]
    for name in methods:
        sel = [
            next(r for r in summary if r["method"] == name and r["step"] == k) for k, _, _ in models
        ]
        ax.errorbar(
            xs,
            [s["spearman_mean"] for s in sel],
            yerr=[s["spearman_sd"] for s in sel],
            marker="o",
            capsize=2,
            label=name,
            ls="-" if name.startswith("latentshift") else "--",
        )
    ax.set_xlabel("layers re-initialised (cumulative, from the top)")
    ax.set_ylabel("Spearman ρ with the intact model's map")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_title("Cascading randomisation")
    ax.legend(fontsize=7, ncol=2)
    run.save_figure(fig, "randomization.png")
