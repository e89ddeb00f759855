"""Experiment ``counterfactuals``: how good are Latent Shift's counterfactuals?

For up to ``limit`` positives per target, run the λ search and score the removal
counterfactual (the most negative λ) with :func:`gifsplanation.metrics.counterfactual_quality`:
validity (the prediction fell by the requested amount), the prediction change achieved,
proximity (mean |x_λ − x_0|) and the realism proxy (autoencoder reconstruction error of
the counterfactual relative to that of x_0). The table summarises them per target with the
stop reasons and the model calls spent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .._core.latent_shift import LatentShift
from ..metrics import counterfactual_quality
from .common import Setup
from .data import load_item
from .run import markdown_table, mean_sd, plt_agg


def run_counterfactuals(
    setup: Setup, engine_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the experiment; write ``per_item.csv``, ``summary.csv``, ``table.md``,
    ``counterfactuals.png`` and ``manifest.json``.

    Args:
        setup: the shared setup (its ``methods`` are ignored).
        engine_options: options of :class:`gifsplanation.LatentShift` (default: the
            ``latentshift-max`` options in ``setup.method_options``, else the defaults).
    """
    if setup.autoencoder is None:
        raise ValueError("counterfactuals needs an autoencoder")
    opts = dict(
        engine_options
        if engine_options is not None
        else setup.method_options.get("latentshift-max", {})
    )
    run = setup.start("counterfactuals", {"engine_options": opts})
    ds = setup.dataset
    items = setup.items(need_mask=False)
    engine = LatentShift(setup.classifier, setup.autoencoder, **opts)
    rows: list[dict[str, Any]] = []
    for item in run.progress(items, "counterfactuals"):
        key = f"{item.key}__cf"
        rec = run.get_record(key)
        if rec is None:
            x, _ = load_item(ds, item)
            exp = engine.explain(x, item.target)
            rec = counterfactual_quality(exp, 0, autoencoder=engine.autoencoder)
            rec.update(
                {
                    "upper_stop_reason": str(exp.stop_reasons[0]["upper"]),
                    "input_pred": float(exp.input_preds[0]),
                    "evaluations": int(exp.n_evaluations),
                    "seconds": float(exp.cost.seconds),
                }
            )
            run.put_record(key, rec)
        rows.append({"item": item.key, "target": item.target_name, **rec})
    summary = []
    for t in dict.fromkeys(r["target"] for r in rows):
        sel = [r for r in rows if r["target"] == t]
        reasons = Counter(r["stop_reason"] for r in sel)
        summary.append(
            {
                "target": t,
                "n": len(sel),
                "validity": float(np.mean([bool(r["valid"]) for r in sel])),
                "pred_change_mean": mean_sd(r["pred_change"] for r in sel)[0],
                "pred_change_sd": mean_sd(r["pred_change"] for r in sel)[1],
                "relative_change_mean": mean_sd(r["relative_change"] for r in sel)[0],
                "proximity_mean": mean_sd(r["proximity"] for r in sel)[0],
                "proximity_fraction_mean": mean_sd(r["proximity_fraction"] for r in sel)[0],
                "realism_mean": mean_sd(r["realism"] for r in sel)[0],
                "realism_sd": mean_sd(r["realism"] for r in sel)[1],
                "evaluations_median": float(np.median([r["evaluations"] for r in sel])),
                "seconds_mean": mean_sd(r["seconds"] for r in sel)[0],
                "stop_reasons": "; ".join(f"{k}: {v}" for k, v in reasons.most_common()),
            }
        )
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    head = [
        "target",
        "n",
        "valid",
        "Δp (f(x_0) − f(x_λ))",
        "relative Δp",
        "proximity (mean |x_λ − x_0|)",
        "as % of range",
        "realism (AE error ratio)",
        "evals (median)",
        "s / image",
        "lower stop reasons",
    ]
    body = [
        [
            s["target"],
            s["n"],
            f"{100 * s['validity']:.0f}%",
            f"{s['pred_change_mean']:.3f} ± {s['pred_change_sd']:.3f}",
            f"{s['relative_change_mean']:.2f}",
            f"{s['proximity_mean']:.1f}",
            f"{100 * s['proximity_fraction_mean']:.1f}%",
            f"{s['realism_mean']:.2f} ± {s['realism_sd']:.2f}",
            f"{s['evaluations_median']:.0f}",
            f"{s['seconds_mean']:.2f}",
            s["stop_reasons"],
        ]
        for s in summary
    ]
    run.write_text(
        "table.md",
        "Quality of the removal counterfactual (most negative λ); "
        f"engine options {opts or 'defaults'}\n\n" + markdown_table(head, body),
    )
    _plot(run, rows)
    run.write_manifest("done", n_items=len(items))
    return {"summary": summary, "rows": rows, "out": str(setup.out)}


def _plot(run: Any, rows: list[dict[str, Any]]) -> None:
    plt = plt_agg()
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (key, title) in zip(
        axes,
        (
            ("relative_change", "relative Δp achieved"),
            ("proximity_fraction", "proximity (fraction of range)"),
            ("realism", "realism (AE error ratio)"),
        ),
        strict=True,
    ):
        data = [[r[key] for r in rows if r["target"] == t and np.isfinite(r[key])] for t in targets]
        ax.boxplot(data, tick_labels=targets)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].axhline(0.3, ls=":", color="gray")
    fig.suptitle("Latent Shift counterfactual quality (distribution over images)")
    run.save_figure(fig, "counterfactuals.png")
