"""Experiment ``ae-impact``: does the autoencoder preserve what the classifier sees? (the
paper's Table K.1).

Latent Shift explains f(D(E(x))), not f(x). For up to ``limit`` positives and ``limit``
negatives per target, the table compares mean f(x) with mean f(D(E(x))) and the
classifier's AUC on inputs with its AUC on reconstructions. A large gap means the
explanations describe a classifier input that differs from what the user gave it.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import torch

from .._core.adapters import Autoencoder
from ..metrics import roc_auc
from .common import Setup
from .data import load_item
from .run import markdown_table, mean_sd, plt_agg


def run_ae_impact(setup: Setup) -> dict[str, Any]:
    """Run the experiment; write ``per_item.csv``, ``summary.csv``, ``table.md``,
    ``ae_impact.png`` and ``manifest.json``."""
    if setup.autoencoder is None:
        raise ValueError("ae-impact needs an autoencoder")
    # No Latent Shift engine here: f(D(E(x))) is the λ = 0 frame of reconstruction mode
    # whatever the search settings (``counterfactuals`` reports it per mode as ae_effect).
    run = setup.start("ae-impact", uses_engine=False)
    ds = setup.dataset
    items = []
    for positives in (True, False):
        items += setup.items(positives=positives, need_mask=False, seed_offset=int(not positives))
    ae = Autoencoder(setup.autoencoder)
    rows: list[dict[str, Any]] = []
    for item in run.progress(items, "ae-impact"):
        key = f"{item.key}-{'pos' if item.positive else 'neg'}__ae"
        rec = run.get_record(key)
        if rec is None:
            x, _ = load_item(ds, item)
            with torch.no_grad():
                rx = ae.decode(ae.encode(x), tuple(x.shape[-2:]))
            rec = {
                "p_x": float(setup.predict(x)[0, item.target]),
                "p_recon": float(setup.predict(rx)[0, item.target]),
                "recon_mae": float((rx - x).abs().mean()),
            }
            run.put_record(key, rec)
        rows.append(
            {
                "item": item.key,
                "target": item.target_name,
                "group": "positive" if item.positive else "negative",
                **rec,
            }
        )
    summary = []
    for t in dict.fromkeys(r["target"] for r in rows):
        sel = [r for r in rows if r["target"] == t]
        labels = [int(r["group"] == "positive") for r in sel]
        auc_x = roc_auc([r["p_x"] for r in sel], labels)
        auc_r = roc_auc([r["p_recon"] for r in sel], labels)
        for group in ("positive", "negative"):
            g = [r for r in sel if r["group"] == group]
            if not g:
                continue
            px, pr = np.array([r["p_x"] for r in g]), np.array([r["p_recon"] for r in g])
            summary.append(
                {
                    "target": t,
                    "group": group,
                    "n": len(g),
                    "p_x_mean": float(px.mean()),
                    "p_x_sd": mean_sd(px)[1],
                    "p_recon_mean": float(pr.mean()),
                    "p_recon_sd": mean_sd(pr)[1],
                    "abs_diff_mean": float(np.abs(px - pr).mean()),
                    "recon_mae_mean": mean_sd(r["recon_mae"] for r in g)[0],
                    "auc_x": auc_x,
                    "auc_recon": auc_r,
                }
            )
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    head = [
        "target",
        "group",
        "n",
        "f(x)",
        "f(D(E(x)))",
        "mean |Δ|",
        "AUC f(x)",
        "AUC f(D(E(x)))",
        "recon MAE",
    ]
    body = [
        [
            s["target"],
            s["group"],
            s["n"],
            f"{s['p_x_mean']:.3f} ± {s['p_x_sd']:.3f}",
            f"{s['p_recon_mean']:.3f} ± {s['p_recon_sd']:.3f}",
            f"{s['abs_diff_mean']:.3f}",
            f"{s['auc_x']:.3f}",
            f"{s['auc_recon']:.3f}",
            f"{s['recon_mae_mean']:.1f}",
        ]
        for s in summary
    ]
    run.write_text(
        "table.md",
        "Classifier output on inputs vs on their reconstructions "
        "(recon MAE in [−1024, 1024] units)\n\n" + markdown_table(head, body),
    )
    _plot(run, summary)
    run.write_manifest("done", n_items=len(items))
    return {"summary": summary, "rows": rows, "out": str(setup.out)}


def _plot(run: Any, summary: list[dict[str, Any]]) -> None:
    plt = plt_agg()
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(summary), 3.6))
    labels = [f"{textwrap.fill(s['target'], 12)}\n{s['group']}" for s in summary]
    xs = np.arange(len(summary))
    ax.bar(
        xs - 0.2,
        [s["p_x_mean"] for s in summary],
        0.4,
        yerr=[s["p_x_sd"] for s in summary],
        capsize=3,
        label="f(x)",
    )
    ax.bar(
        xs + 0.2,
        [s["p_recon_mean"] for s in summary],
        0.4,
        yerr=[s["p_recon_sd"] for s in summary],
        capsize=3,
        label="f(D(E(x)))",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("mean prediction ± sd")
    ax.set_title("Classifier output on inputs vs reconstructions")
    ax.legend()
    run.save_figure(fig, "ae_impact.png")
