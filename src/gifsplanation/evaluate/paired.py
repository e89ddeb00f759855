"""Paired comparisons of the two frame modes on the same images.

When an experiment runs with ``--mode both``, every image is explained in residual and in
reconstruction mode. :func:`compare_modes` pairs the two per image and tests each metric
with the two-sided Wilcoxon signed-rank test (scipy; zero differences dropped, the
``wilcox`` zero method), reporting means, the mean difference (residual − reconstruction)
and how often residual mode scored higher.

Example:
    >>> rows = [
    ...     {"item": i, "target": "t", "mode": m, "ssim": s}
    ...     for i, (a, b) in enumerate([(0.97, 0.7), (0.98, 0.75), (0.96, 0.72)])
    ...     for m, s in (("residual", a), ("reconstruction", b))
    ... ]
    >>> (r,) = compare_modes(rows, ("target",), ["ssim"])
    >>> r["n"], round(r["mean_diff"], 3), r["residual_higher"]
    (3, 0.247, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.latent_shift import FRAME_MODES


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean of ``a`` and ``b``, their mean difference (a − b) with its sd, the share of
    pairs where a > b, and the two-sided Wilcoxon signed-rank p-value (NaN with fewer than
    two non-zero differences). Pairs with a non-finite value are dropped."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    nz = d[d != 0]
    return {
        "n": int(d.size),
        "mean_a": float(x.mean()) if d.size else math.nan,
        "mean_b": float(y.mean()) if d.size else math.nan,
        "mean_diff": float(d.mean()) if d.size else math.nan,
        "sd_diff": float(d.std(ddof=1)) if d.size > 1 else math.nan,
        "a_higher": float((d > 0).mean()) if d.size else math.nan,
        "p_value": float(wilcoxon(nz).pvalue) if nz.size >= 2 else math.nan,
    }


def compare_modes(
    rows: Sequence[dict[str, Any]],
    group: Sequence[str],
    metrics: Sequence[str],
    *,
    item: str = "item",
    mode: str = "mode",
) -> list[dict[str, Any]]:
    """Residual vs reconstruction mode on the same images, per group and metric.

    Args:
        rows: per-image records with ``item``, ``mode`` and the ``metrics`` (booleans
            count as 0/1).
        group: fields whose values define a comparison (e.g. ``("target",)`` or
            ``("target", "method")``); rows of one group are paired by ``item``.
        metrics: the fields to compare.

    Returns:
        One record per group and metric: the group's fields, ``metric``, ``n`` pairs,
        ``residual_mean``, ``reconstruction_mean``, ``mean_diff`` (residual −
        reconstruction), ``sd_diff``, ``residual_higher`` (share of pairs) and
        ``p_value``. Empty when the rows hold only one mode; a metric no pair has (NaN
        everywhere) is left out.
    """
    res, rec = FRAME_MODES
    groups: dict[tuple, dict[str, dict[Any, dict[str, Any]]]] = {}
    for r in rows:
        if r.get(mode) not in FRAME_MODES:
            continue
        key = tuple(r[g] for g in group)
        groups.setdefault(key, {res: {}, rec: {}})[r[mode]][r[item]] = r
    out = []
    for key, by_mode in groups.items():
        items = [i for i in by_mode[res] if i in by_mode[rec]]
        if not items:
            continue
        for metric in metrics:
            t = paired_test(
                [_num(by_mode[res][i].get(metric)) for i in items],
                [_num(by_mode[rec][i].get(metric)) for i in items],
            )
            if t["n"] == 0:
                continue  # no image has this metric (e.g. no lung masks)
            out.append(
                {
                    **dict(zip(group, key, strict=True)),
                    "metric": metric,
                    "n": t["n"],
                    "residual_mean": t["mean_a"],
                    "reconstruction_mean": t["mean_b"],
                    "mean_diff": t["mean_diff"],
                    "sd_diff": t["sd_diff"],
                    "residual_higher": t["a_higher"],
                    "p_value": t["p_value"],
                }
            )
    return out


def modes_markdown(paired: Sequence[dict[str, Any]], group: Sequence[str]) -> str:
    """A markdown table of :func:`compare_modes` records (empty string when none)."""
    from .run import markdown_table

    if not paired:
        return ""
    head = [
        *group,
        "metric",
        "n pairs",
        "residual",
        "reconstruction",
        "mean diff (res − rec)",
        "residual higher on",
        "Wilcoxon p",
    ]
    body = [
        [
            *(p[g] for g in group),
            p["metric"],
            p["n"],
            f"{p['residual_mean']:.3f}",
            f"{p['reconstruction_mean']:.3f}",
            f"{p['mean_diff']:+.3f} ± {p['sd_diff']:.3f}",
            f"{100 * p['residual_higher']:.0f}%",
            f"{p['p_value']:.2g}",
        ]
        for p in paired
    ]
    return (
        "\nResidual vs reconstruction mode on the same images (paired; two-sided Wilcoxon "
        "signed-rank test, zero differences dropped)\n\n" + markdown_table(head, body)
    )


def _num(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    return float(v)
