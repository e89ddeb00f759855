"""Experiment ``counterfactuals``: how good are Latent Shift's counterfactuals, and what do
they change?

For up to ``limit`` positives per target, run the λ search in each frame mode of the run
(``--mode residual``, ``reconstruction`` or ``both`` on the same images) and score the
removal counterfactual x_λ (the lower bound, the most negative λ) against the λ = 0 frame
x_0 (the input in residual mode, its reconstruction in reconstruction mode):

* quality (:func:`gifsplanation.metrics.counterfactual_quality`): validity (the lower
  search reached its goal), the target's fall f(x_0) − f(x_λ), proximity (mean
  |x_λ − x_0|), SSIM and fine-edge ratio of x_λ against the *input*, the autoencoder effect
  at λ = 0 (f(x_0) − f(x); 0 in residual mode) and the realism proxy;
* what the removal does (:func:`removal_effects`): the change f_k(x_λ) − f_k(x_0) of
  *every* classifier output k (a softmax moves probability to the other classes; a
  sigmoid head may move others too), and the mean grey-level change x_λ − x_0 in 8-bit
  grey levels (×255/2048) inside the lungs, inside the infection mask and outside the
  lungs (lung masks when the dataset has them, e.g. COVID-QU-Ex). Removing an opacity
  should darken the lung: a negative change inside the lungs.

The table summarises each (mode, target) as mean ± sd over images with n; with both modes
it adds paired Wilcoxon tests (``paired_modes.csv``).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._core.latent_shift import LatentShift
from ..metrics import counterfactual_quality
from ..pixels import GREY_PER_UNIT
from .common import Setup
from .data import load_item, load_lung_mask
from .paired import compare_modes, modes_markdown
from .run import markdown_table, mean_sd, plt_agg

"""8-bit grey levels per unit of the [−1024, 1024] model range."""

#: Region → column of :func:`removal_effects`.
GREY_REGIONS = {
    "lungs": "grey_lungs",
    "infection mask": "grey_infection",
    "outside lungs": "grey_outside_lungs",
}

#: Quality metrics summarised per (mode, target) and compared between modes.
QUALITY_METRICS = (
    "valid",
    "pred_change",
    "relative_change",
    "proximity",
    "proximity_fraction",
    "ssim",
    "sharpness",
    "ae_effect",
    "realism",
)
#: Metrics of the paired residual-vs-reconstruction comparison.
PAIRED_METRICS = (
    "valid",
    "ssim",
    "sharpness",
    "proximity",
    "pred_change",
    "ae_effect",
    "grey_lungs",
    "grey_infection",
    "grey_outside_lungs",
)


def output_column(name: str) -> str:
    """The column holding the change of classifier output ``name``: ``dp[name]``."""
    return f"dp[{name}]"


def removal_effects(
    exp: Any,
    index: int,
    predict: Callable[[torch.Tensor], np.ndarray],
    output_names: Sequence[str],
    *,
    infection: np.ndarray | None = None,
    lungs: np.ndarray | None = None,
) -> dict[str, float]:
    """What the removal counterfactual of image ``index`` changes, relative to λ = 0.

    Args:
        exp: a :class:`gifsplanation.Explanation`.
        index: the image in the batch.
        predict: images ``(B, C, H, W)`` → probabilities ``(B, n_outputs)`` (e.g.
            :meth:`Setup.predict`).
        output_names: the classifier's output names, in order.
        infection: the infection mask (bool ``(H, W)``), if any.
        lungs: the lung mask (bool ``(H, W)``), if any.

    Returns:
        ``dp[name]`` = f_name(x_λ) − f_name(x_0) for every output (negative: it fell), and
        the mean grey-level change (x_λ − x_0)·255/2048 in ``grey_lungs``,
        ``grey_infection`` and ``grey_outside_lungs`` (NaN where the mask is missing or
        the region empty), plus ``grey_image`` over the whole image.
    """
    zi = int(exp.zero_index[index])
    frames = exp.frames[index]
    xl, x0 = frames[0], frames[zi]
    probs = predict(torch.stack([xl, x0]))
    if probs.shape[1] != len(output_names):
        raise ValueError(
            f"the classifier returned {probs.shape[1]} outputs but {len(output_names)} "
            "names were given"
        )
    out: dict[str, float] = {
        output_column(name): float(probs[0, k] - probs[1, k]) for k, name in enumerate(output_names)
    }
    diff = ((xl - x0).float().mean(0) * GREY_PER_UNIT).cpu().numpy().astype(np.float64)

    def region(mask: np.ndarray | None) -> float:
        if mask is None:
            return math.nan
        m = np.asarray(mask, dtype=bool)
        if m.shape != diff.shape:
            raise ValueError(f"mask {m.shape} and image {diff.shape} differ in shape")
        return float(diff[m].mean()) if m.any() else math.nan

    out["grey_image"] = float(diff.mean())
    out["grey_lungs"] = region(lungs)
    out["grey_infection"] = region(infection)
    out["grey_outside_lungs"] = region(None if lungs is None else ~np.asarray(lungs, bool))
    return out


def run_counterfactuals(setup: Setup) -> dict[str, Any]:
    """Run the experiment; write ``per_item.csv``, ``summary.csv``, ``table.md``,
    ``counterfactuals.png``, ``manifest.json`` (and ``paired_modes.csv`` with both modes).

    The Latent Shift engine is built from ``setup.engine`` (one per frame mode); the
    manifest records every engine setting.
    """
    if setup.autoencoder is None:
        raise ValueError("counterfactuals needs an autoencoder")
    eng = setup.engine
    run = setup.start("counterfactuals")
    ds = setup.dataset
    items = setup.items(need_mask=False, required_by="counterfactuals")
    names = setup.classifier_targets
    engines = {
        m: LatentShift(setup.classifier, setup.autoencoder, **eng.kwargs(m)) for m in eng.modes
    }
    rows: list[dict[str, Any]] = []
    for item in run.progress(items, f"counterfactuals ({', '.join(eng.modes)})"):
        loaded: tuple[Any, Any, Any] | None = None
        for mode, engine in engines.items():
            key = f"{item.key}__cf__{mode}"
            rec = run.get_record(key)
            if rec is None:
                if loaded is None:
                    x, infection = load_item(ds, item)
                    loaded = (x, infection, load_lung_mask(ds, item.index))
                x, infection, lungs = loaded
                rec = _score(engine, setup, x, item.target, names, infection, lungs)
                rec["engine"] = json.dumps(eng.kwargs(mode), separators=(",", ":"))
                run.put_record(key, rec)
            rows.append({"item": item.key, "target": item.target_name, **rec})
    summary = summarise(rows, names)
    paired = compare_modes(rows, ("target",), PAIRED_METRICS) if len(eng.modes) > 1 else []
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    if paired:
        run.write_csv("paired_modes.csv", paired)
    run.write_text("table.md", table_markdown(summary, names, eng.describe(), paired))
    _plot(run, rows)
    with_lungs = {r["item"] for r in rows if np.isfinite(r["grey_lungs"])}
    run.write_manifest("done", n_items=len(items), n_items_with_lung_mask=len(with_lungs))
    return {"summary": summary, "rows": rows, "paired": paired, "out": str(setup.out)}


def _score(
    engine: LatentShift,
    setup: Setup,
    x: torch.Tensor,
    target: int,
    names: list[str],
    infection: np.ndarray | None,
    lungs: np.ndarray | None,
) -> dict[str, Any]:
    exp = engine.explain(x, target)
    rec = counterfactual_quality(exp, 0, autoencoder=engine.autoencoder)
    rec.update(removal_effects(exp, 0, setup.predict, names, infection=infection, lungs=lungs))
    rec.update(
        {
            "mode": exp.mode,
            "target_present": bool(exp.target_present[0]),
            "ood_flagged": None if exp.ood is None else bool(exp.ood.flagged[0]),
            "refused": bool(exp.refused[0]),
            "lambda_upper": float(exp.bounds[0, 1]),
            "upper_stop_reason": str(exp.stop_reasons[0]["upper"]),
            "input_pred": float(exp.input_preds[0]),
            "evaluations": int(exp.n_evaluations),
            "seconds": float(exp.cost.seconds),
        }
    )
    return rec


def summarise(rows: list[dict[str, Any]], output_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per (mode, target): n, validity, stop reasons, median evaluations, and mean / sd /
    n of every quality metric, every output's change and every region's grey change."""
    metrics = [
        *QUALITY_METRICS,
        *(output_column(n) for n in output_names),
        "grey_image",
        *GREY_REGIONS.values(),
        "seconds",
    ]
    out = []
    groups = dict.fromkeys((r["mode"], r["target"]) for r in rows)
    for mode, target in groups:
        sel = [r for r in rows if r["mode"] == mode and r["target"] == target]
        reasons = Counter(r["stop_reason"] for r in sel)
        s: dict[str, Any] = {
            "mode": mode,
            "target": target,
            "n": len(sel),
            "validity": float(np.mean([_truthy(r["valid"]) for r in sel])),
            "n_target_absent": sum(not _truthy(r["target_present"]) for r in sel),
            "n_refused": sum(_truthy(r["refused"]) for r in sel),
            "evaluations_median": float(np.median([r["evaluations"] for r in sel])),
            "stop_reasons": "; ".join(f"{k}: {v}" for k, v in reasons.most_common()),
        }
        for m in metrics:
            vals = [float(_truthy(r[m])) if m == "valid" else r.get(m) for r in sel]
            s[f"{m}_mean"], s[f"{m}_sd"], s[f"{m}_n"] = mean_sd(v for v in vals if v is not None)
        out.append(s)
    return out


def _truthy(v: Any) -> bool:
    """A boolean from a record (cached JSON keeps ``True``; CSV would say ``"True"``)."""
    return v is True or v == "True" or v == 1


def _cell(s: dict[str, Any], metric: str, digits: int = 3, with_n: bool = False) -> str:
    m, sd, n = s[f"{metric}_mean"], s[f"{metric}_sd"], s[f"{metric}_n"]
    if not n:
        return "–"
    text = (
        f"{m:+.{digits}f} ± {sd:.{digits}f}"
        if metric.startswith(("dp[", "grey"))
        else (f"{m:.{digits}f} ± {sd:.{digits}f}")
    )
    return f"{text} ({n})" if with_n else text


def table_markdown(
    summary: list[dict[str, Any]],
    output_names: Sequence[str],
    engine: str,
    paired: list[dict[str, Any]] | None = None,
) -> str:
    """The run's ``table.md``: quality, what the removal changes, and (with both modes)
    the paired comparison."""
    head = [
        "mode",
        "target",
        "n",
        "valid",
        "Δp target f(x_0) − f(x_λ)",
        "proximity mean \\|x_λ − x_0\\|",
        "SSIM(x_λ, x)",
        "fine-edge ratio x_λ / x",
        "AE effect f(x_0) − f(x)",
        "realism (AE error ratio)",
        "evals (median)",
        "lower stop reasons",
    ]
    body = [
        [
            s["mode"],
            s["target"],
            s["n"],
            f"{100 * s['validity']:.0f}%",
            _cell(s, "pred_change"),
            _cell(s, "proximity", 1),
            _cell(s, "ssim"),
            _cell(s, "sharpness", 2),
            _cell(s, "ae_effect"),
            _cell(s, "realism", 2),
            f"{s['evaluations_median']:.0f}",
            s["stop_reasons"],
        ]
        for s in summary
    ]
    text = (
        "Quality of the removal counterfactual x_λ (lower bound, most negative λ) against "
        "x_0 (the λ = 0 frame: the input in residual mode, its reconstruction in "
        f"reconstruction mode); mean ± sd over images.\n{engine}.\n\n" + markdown_table(head, body)
    )
    head2 = [
        "mode",
        "target",
        *(f"Δ {n}" for n in output_names),
        *(f"grey Δ {r}" for r in GREY_REGIONS),
    ]
    body2 = [
        [
            s["mode"],
            s["target"],
            *(_cell(s, output_column(n)) for n in output_names),
            *(_cell(s, col, 2, with_n=True) for col in GREY_REGIONS.values()),
        ]
        for s in summary
    ]
    text += (
        "\nWhat the removal changes: f_k(x_λ) − f_k(x_0) for every classifier output k, and "
        "the mean grey-level change x_λ − x_0 in 8-bit levels (×255/2048; negative = "
        "darker) per region, mean ± sd (n images with that mask).\n\n"
        + markdown_table(head2, body2)
    )
    return text + modes_markdown(paired or [], ("target",))


def _plot(run: Any, rows: list[dict[str, Any]]) -> None:
    plt = plt_agg()
    groups = list(dict.fromkeys((r["target"], r["mode"]) for r in rows))
    panels = (
        ("relative_change", "relative Δp achieved"),
        ("proximity_fraction", "proximity (fraction of range)"),
        ("ssim", "SSIM(x_λ, x)"),
        ("sharpness", "fine-edge ratio x_λ / x"),
        ("grey_lungs", "grey Δ in the lungs (8-bit)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6))
    labels = ["\n".join([*textwrap.wrap(str(t), 12), str(m)]) for t, m in groups]
    for ax, (key, title) in zip(axes, panels, strict=True):
        data = [
            [
                r[key]
                for r in rows
                if (r["target"], r["mode"]) == g and r[key] is not None and np.isfinite(r[key])
            ]
            for g in groups
        ]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=labels)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
    axes[0].axhline(0.3, ls=":", color="gray")
    axes[-1].axhline(0.0, ls=":", color="gray")
    fig.suptitle("Latent Shift removal counterfactuals (distribution over images)")
    run.save_figure(fig, "counterfactuals.png")
