"""Experiment ``robustness``: maps under input noise and blur (the paper's Fig. G.1).

Each positive with a mask is perturbed with uniform noise, x + U[0, 1)·100·k, and with a
Gaussian blur of σ pixels (the paper: k and σ/10 in 0–4, σ ∈ {0, 10, 20, 30, 40} at 224²).
The perturbed image is not clipped (as in the paper). Every method's map of the perturbed
image is scored against the *clean* image's mask (top-p IoU) and compared with the clean
image's map (Spearman rank correlation). A method whose IoU holds and whose map stays
similar is robust; one whose map follows the noise is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..metrics import iou_top_p, spearman_similarity
from .common import Setup
from .data import load_item
from .maps import build_methods, compute_maps
from .run import markdown_table, mean_sd, plt_agg

DEFAULT_NOISE = (0.0, 1.0, 2.0, 3.0, 4.0)
DEFAULT_BLUR = (0.0, 10.0, 20.0, 30.0, 40.0)


def perturb(x: torch.Tensor, kind: str, level: float, seed: int) -> torch.Tensor:
    """``x`` with uniform noise ``U[0,1)·100·level`` (``kind="noise"``) or a Gaussian blur
    of ``level`` pixels (``kind="blur"``); level 0 returns ``x``."""
    if level == 0:
        return x
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return x + torch.rand(x.shape, generator=g).to(x) * 100.0 * level
    if kind == "blur":
        arr = x.detach().cpu().numpy()
        out = ndimage.gaussian_filter(arr, sigma=(0, 0, level, level), mode="reflect")
        return torch.from_numpy(out).to(x)
    raise ValueError(f"kind must be 'noise' or 'blur', got {kind!r}")


def run_robustness(
    setup: Setup,
    noise_levels: tuple[float, ...] = DEFAULT_NOISE,
    blur_sigmas: tuple[float, ...] = DEFAULT_BLUR,
) -> dict[str, Any]:
    """Run the robustness experiment; write ``per_item.csv``, ``summary.csv``, ``table.md``,
    ``robustness.png`` and ``manifest.json``."""
    run = setup.start(
        "robustness",
        {"noise_levels": list(noise_levels), "blur_sigmas": list(blur_sigmas)},
        uses_engine=bool(setup.needs_ae),
    )
    ds = setup.dataset
    items = setup.items(required_by="robustness")
    methods = build_methods(
        setup.methods, setup.classifier, setup.autoencoder, setup.method_options
    )
    variants = (
        [("clean", 0.0)]
        + [("noise", float(k)) for k in noise_levels if k > 0]
        + [("blur", float(s)) for s in blur_sigmas if s > 0]
    )
    rows: list[dict[str, Any]] = []
    pairs = [(item, v) for item in items for v in variants]
    clean: dict[str, dict[str, np.ndarray]] = {}
    loaded: tuple[Any, Any, Any] = (None, None, None)
    for item, (kind, level) in run.progress(pairs, "robustness"):
        if loaded[0] is not item:  # pairs run item by item: read each image once
            loaded = (item, *load_item(ds, item))
        _, x, mask = loaded
        xp = perturb(x, kind, level, seed=setup.seed * 7919 + item.index)
        maps, _, _ = compute_maps(
            methods, xp, item.target, run=run, key=f"{item.key}__{kind}{level:g}"
        )
        if kind == "clean":
            clean[item.key] = maps
        pred = float(setup.predict(xp)[0, item.target])
        for name, m in maps.items():
            for k in ["noise", "blur"] if kind == "clean" else [kind]:
                rows.append(
                    {
                        "item": item.key,
                        "target": item.target_name,
                        "method": name,
                        "mode": setup.mode_of(name),
                        "kind": k,
                        "level": level,
                        "iou": iou_top_p(m, mask),
                        "spearman_vs_clean": spearman_similarity(clean[item.key][name], m),
                        "pred": pred,
                    }
                )
    summary = []
    for name in setup.methods:
        for kind in ("noise", "blur"):
            for level in sorted({r["level"] for r in rows if r["kind"] == kind}):
                sel = [
                    r
                    for r in rows
                    if r["method"] == name and r["kind"] == kind and r["level"] == level
                ]
                im, isd, n = mean_sd(r["iou"] for r in sel)
                sm, ssd, _ = mean_sd(r["spearman_vs_clean"] for r in sel)
                summary.append(
                    {
                        "method": name,
                        "kind": kind,
                        "level": level,
                        "n": n,
                        "iou_mean": im,
                        "iou_sd": isd,
                        "spearman_mean": sm,
                        "spearman_sd": ssd,
                        "pred_mean": mean_sd(r["pred"] for r in sel)[0],
                    }
                )
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    text = _table(summary, setup.methods)
    if setup.needs_ae:
        text = setup.engine.describe() + ".\n\n" + text
    run.write_text("table.md", text)
    _plot(run, summary, setup.methods)
    run.write_manifest("done", n_items=len(items))
    return {"summary": summary, "rows": rows, "out": str(setup.out)}


def _table(summary: list[dict[str, Any]], methods: list[str]) -> str:
    text = ""
    for kind, label in (
        ("noise", "uniform noise k (x + U[0,1)·100·k)"),
        ("blur", "Gaussian blur σ (px)"),
    ):
        levels = sorted({s["level"] for s in summary if s["kind"] == kind})
        for metric, title in (
            ("iou", "IoU with the clean mask"),
            ("spearman", "Spearman ρ with the clean map"),
        ):
            head = ["method"] + [f"{label.split(' (')[0]} {lv:g}" for lv in levels]
            body = []
            for name in methods:
                cells = [name]
                for lv in levels:
                    s = next(
                        r
                        for r in summary
                        if r["method"] == name and r["kind"] == kind and r["level"] == lv
                    )
                    cells.append(f"{s[metric + '_mean']:.3f} ± {s[metric + '_sd']:.3f}")
                body.append(cells)
            preds = {r["level"]: r["pred_mean"] for r in summary if r["kind"] == kind}
            body.append(["mean p(target)"] + [f"{preds[lv]:.3f}" for lv in levels])
            text += f"{title} under {label}\n\n" + markdown_table(head, body) + "\n"
    return text


def _plot(run: Any, summary: list[dict[str, Any]], methods: list[str]) -> None:
    plt = plt_agg()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for col, (kind, xlabel) in enumerate((("noise", "noise level k"), ("blur", "blur σ (px)"))):
        for row, (metric, ylabel) in enumerate(
            (("iou", "IoU (clean mask)"), ("spearman", "Spearman ρ vs clean map"))
        ):
            ax = axes[row, col]
            for name in methods:
                sel = sorted(
                    (s for s in summary if s["method"] == name and s["kind"] == kind),
                    key=lambda s: s["level"],
                )
                ax.plot(
                    [s["level"] for s in sel],
                    [s[f"{metric}_mean"] for s in sel],
                    marker="o",
                    label=name,
                    ls="-" if name.startswith("latentshift") else "--",
                )
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle("Robustness to noise and blur (means over images)")
    run.save_figure(fig, "robustness.png")
