"""Experiment ``iou``: the paper's Table 1 — how well each method's map localises the mask.

Per classifier target, up to ``limit`` positives with a non-empty mask are drawn (seeded);
every method's map is scored against the mask with the top-p IoU (p = mask pixels), the
pointing game and relevance mass. The table reports mean ± sd IoU per method per target,
with the classifier's AUC for the target on the same positives plus as many negatives
(images with other labels, drawn with the same seed) — the paper reports AUC on its
evaluation set; positives alone have no AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..metrics import chance_iou, iou_top_p, pointing_game, relevance_mass, roc_auc
from .common import Setup
from .data import load_item
from .engine import split_variant
from .maps import build_methods, compute_maps
from .paired import compare_modes, modes_markdown
from .run import fmt_mean_sd, markdown_table, mean_sd, plt_agg


def run_iou(setup: Setup) -> dict[str, Any]:
    """Run the IoU experiment; write ``per_item.csv``, ``summary.csv``, ``table.md``,
    ``iou.png`` and ``manifest.json`` in ``setup.out``. Returns the summary rows."""
    run = setup.start("iou", uses_engine=bool(setup.needs_ae))
    ds = setup.dataset
    items = setup.items(required_by="iou")
    negatives = setup.items(
        positives=False,
        need_mask=False,
        seed_offset=1,
        targets=sorted({i.target_name for i in items}),
    )
    methods = build_methods(
        setup.methods, setup.classifier, setup.autoencoder, setup.method_options
    )
    rows: list[dict[str, Any]] = []
    scores: dict[str, list[tuple[int, float]]] = {}
    for item in run.progress(items, f"iou: {len(items)} positives × {len(methods)} methods"):
        x, mask = load_item(ds, item)
        pred = _cached_pred(run, setup, item.key, lambda x=x: x)[item.target]
        scores.setdefault(item.target_name, []).append((1, pred))
        maps, secs, _ = compute_maps(methods, x, item.target, run=run, key=item.key)
        for name, m in maps.items():
            rows.append(
                {
                    "item": item.key,
                    "target": item.target_name,
                    "method": name,
                    "mode": setup.mode_of(name),
                    "iou": iou_top_p(m, mask),
                    "pointing_game": pointing_game(m, mask),
                    "relevance_mass": relevance_mass(m, mask),
                    "chance_iou": chance_iou(mask),
                    "mask_fraction": float(mask.mean()),
                    "pred": pred,
                    "seconds": secs[name],
                }
            )
    for item in run.progress(negatives, f"iou: AUC negatives ({len(negatives)})"):
        # Only a cache miss reads the image: a resumed run skips decoding the negatives.
        probs = _cached_pred(run, setup, item.key + "-neg", lambda i=item: load_item(ds, i)[0])
        scores.setdefault(item.target_name, []).append((0, probs[item.target]))

    summary = summarise(rows, scores, setup.methods)
    run.write_csv("per_item.csv", rows)
    run.write_csv("summary.csv", summary)
    run.write_csv("paired.csv", paired_comparison(rows, setup.methods))
    by_mode = mode_comparison(rows)
    if by_mode:
        run.write_csv("paired_modes.csv", by_mode)
    text = table_markdown(summary, rows, setup.methods)
    if setup.needs_ae:
        text = setup.engine.describe() + ".\n\n" + text
    run.write_text("table.md", text + modes_markdown(by_mode, ("target", "method")))
    _plot(run, summary, setup.methods)
    run.write_manifest("done", n_positives=len(items), n_negatives=len(negatives))
    return {"summary": summary, "rows": rows, "paired_modes": by_mode, "out": str(setup.out)}


MODE_METRICS = ("iou", "pointing_game", "relevance_mass")
"""Metrics compared between frame modes when a run has both."""


def mode_comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and Latent Shift method, residual vs reconstruction mode on the same
    images (:func:`~.paired.compare_modes` over :data:`MODE_METRICS`); empty unless the
    rows hold both modes."""
    ls = [{**r, "method": split_variant(r["method"])[0]} for r in rows if r.get("mode")]
    return compare_modes(ls, ("target", "method"), MODE_METRICS)


def _cached_pred(
    run: Any, setup: Setup, key: str, image: Callable[[], torch.Tensor]
) -> list[float]:
    """The classifier's probabilities for one image, from the run's cache or ``image()``."""
    rec = run.get_record(f"{key}__pred")
    if rec is None:
        rec = {"probs": [float(v) for v in setup.predict(image())[0]]}
        run.put_record(f"{key}__pred", rec)
    return rec["probs"]


def summarise(
    rows: list[dict[str, Any]], scores: dict[str, list[tuple[int, float]]], methods: list[str]
) -> list[dict[str, Any]]:
    out = []
    for target in scores:
        labels = [y for y, _ in scores[target]]
        auc = roc_auc([s for _, s in scores[target]], labels)
        for name in methods:
            sel = [r for r in rows if r["target"] == target and r["method"] == name]
            if not sel:
                continue
            iou_m, iou_s, n = mean_sd(r["iou"] for r in sel)
            mass_m, mass_s, _ = mean_sd(r["relevance_mass"] for r in sel)
            out.append(
                {
                    "target": target,
                    "method": name,
                    "n": n,
                    "iou_mean": iou_m,
                    "iou_sd": iou_s,
                    "pointing_game": mean_sd(r["pointing_game"] for r in sel)[0],
                    "relevance_mass_mean": mass_m,
                    "relevance_mass_sd": mass_s,
                    "chance_iou": mean_sd(r["chance_iou"] for r in sel)[0],
                    "seconds_mean": mean_sd(r["seconds"] for r in sel)[0],
                    "auc": auc,
                    "auc_n_pos": int(sum(labels)),
                    "auc_n_neg": int(len(labels) - sum(labels)),
                }
            )
    return out


def table_markdown(
    summary: list[dict[str, Any]], rows: list[dict[str, Any]], methods: list[str]
) -> str:
    targets = list(dict.fromkeys(s["target"] for s in summary))
    head = ["method"] + [f"{t} IoU" for t in targets]
    body = []
    for name in methods:
        cells = [name]
        for t in targets:
            sel = [r["iou"] for r in rows if r["target"] == t and r["method"] == name]
            cells.append(fmt_mean_sd(sel))
        body.append(cells)
    first = {t: next(s for s in summary if s["target"] == t) for t in targets}
    body.append(["chance (a/(2−a))"] + [f"{first[t]['chance_iou']:.3f}" for t in targets])
    body.append(["n positives"] + [str(first[t]["n"]) for t in targets])
    body.append(
        ["classifier AUC (n pos / n neg)"]
        + [
            f"{first[t]['auc']:.3f} ({first[t]['auc_n_pos']}/{first[t]['auc_n_neg']})"
            for t in targets
        ]
    )
    text = "IoU (top-p rule), mean ± sd over positives with masks\n\n" + markdown_table(head, body)
    head2 = (
        ["method"]
        + [f"{t} pointing game" for t in targets]
        + [f"{t} relevance mass" for t in targets]
        + ["s / image"]
    )
    body2 = []
    for name in methods:
        sel = {t: [s for s in summary if s["target"] == t and s["method"] == name] for t in targets}
        pg = [f"{sel[t][0]['pointing_game']:.3f}" if sel[t] else "–" for t in targets]
        rm = [
            f"{sel[t][0]['relevance_mass_mean']:.3f} ± {sel[t][0]['relevance_mass_sd']:.3f}"
            if sel[t]
            else "–"
            for t in targets
        ]
        secs = [s["seconds_mean"] for t in targets for s in sel[t]]
        body2.append([name] + pg + rm + [f"{float(np.mean(secs)):.2f}" if secs else "–"])
    text += "\nPointing game (hit rate) and relevance mass (share of the map inside the mask)\n\n"
    text += markdown_table(head2, body2)
    paired = paired_comparison(rows, methods)
    if paired:
        ref = paired[0]["reference"]
        head3 = [
            "target",
            "method",
            "n",
            f"mean IoU({ref}) − IoU(method)",
            "sd",
            f"{ref} better on",
            "Wilcoxon p",
        ]
        body3 = [
            [
                p["target"],
                p["method"],
                p["n"],
                f"{p['mean_diff']:+.3f}",
                f"{p['sd_diff']:.3f}",
                f"{100 * p['win_rate']:.0f}%",
                f"{p['p_value']:.2g}",
            ]
            for p in paired
        ]
        text += (
            f"\nPaired comparison with {ref} (same images; two-sided Wilcoxon "
            "signed-rank test, ties dropped)\n\n" + markdown_table(head3, body3)
        )
    return text


def paired_comparison(
    rows: list[dict[str, Any]], methods: list[str], reference: str | None = None
) -> list[dict[str, Any]]:
    """Per target, IoU of ``reference`` (default the first Latent Shift method) minus each
    other method's, on the same images: mean, sd, share of images where the reference
    wins, and the Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    ref = reference or next((m for m in methods if m.startswith("latentshift")), None)
    if ref is None:
        return []
    out = []
    for t in dict.fromkeys(r["target"] for r in rows):
        by = {(r["item"], r["method"]): r["iou"] for r in rows if r["target"] == t}
        items = [i for (i, m) in by if m == ref]
        for name in methods:
            if name == ref:
                continue
            d = np.array([by[(i, ref)] - by[(i, name)] for i in items if (i, name) in by])
            if d.size == 0:
                continue
            nz = d[d != 0]
            p = float(wilcoxon(nz).pvalue) if nz.size >= 2 else float("nan")
            out.append(
                {
                    "reference": ref,
                    "target": t,
                    "method": name,
                    "n": int(d.size),
                    "mean_diff": float(d.mean()),
                    "sd_diff": float(d.std(ddof=1)) if d.size > 1 else 0.0,
                    "win_rate": float((d > 0).mean()),
                    "p_value": p,
                }
            )
    return out


def _plot(run: Any, summary: list[dict[str, Any]], methods: list[str]) -> None:
    plt = plt_agg()
    targets = list(dict.fromkeys(s["target"] for s in summary))
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(methods), 3.6))
    width = 0.8 / max(len(targets), 1)
    for k, t in enumerate(targets):
        sel = {s["method"]: s for s in summary if s["target"] == t}
        xs = [i + k * width for i, m in enumerate(methods) if m in sel]
        ax.bar(
            xs,
            [sel[m]["iou_mean"] for m in methods if m in sel],
            width,
            yerr=[sel[m]["iou_sd"] for m in methods if m in sel],
            capsize=3,
            label=t,
        )
        chance = next(iter(sel.values()))["chance_iou"]
        ax.axhline(chance, ls=":", lw=1, color="gray")
    ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(methods))])
    ax.set_xticklabels(methods, rotation=35, ha="right")
    ax.set_ylabel("IoU (top-p), mean ± sd")
    ax.set_title("Localisation of the mask (dotted: chance)")
    if len(targets) > 1:
        ax.legend()
    run.save_figure(fig, "iou.png")
