"""The reader study's statistics, as in the paper (§4.6, Fig. 6).

Each reader answers every case twice, once per method. For each (reader, case, question)
with both answers, the difference Method B − Method A is the unit of analysis. Reported
per reader and pooled over readers, for true positives and false positives separately (and
together): n, mean answer with each method, mean ± sd (ddof = 1) of the difference and the
two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon`` defaults: zero differences
dropped, scipy's automatic choice of the exact distribution for small samples and the
normal approximation for large ones). Pooled rows treat each reader's answer on a case
as one observation, as the paper did; they are not independent across readers. Agreement
between readers is Cohen's kappa with linear and quadratic weights
(``sklearn.metrics.cohen_kappa_score``) over the cases both readers answered, per method
and question. Results are written as Markdown, CSV and a per-target plot (the paper's
Fig. 6A).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..files import atomic_path, write_text
from .design import QUESTIONS
from .export import answer_table, write_csv
from .store import StudyStore

log = logging.getLogger(__name__)

POOLED = "pooled"
GROUPS = ("TP", "FP", "all")

DIFF_FIELDS = ("reader", "case_id", "target", "group", "question", "a", "b", "diff")
STAT_FIELDS = (
    "scope",
    "group",
    "question",
    "n",
    "mean_a",
    "mean_b",
    "mean_diff",
    "sd_diff",
    "n_nonzero",
    "wilcoxon_statistic",
    "p_value",
)
TARGET_FIELDS = ("target", "group", "question", "n", "mean_diff", "sd_diff")
AGREEMENT_FIELDS = (
    "reader_1",
    "reader_2",
    "method",
    "question",
    "n",
    "kappa_linear",
    "kappa_quadratic",
    "exact_agreement",
)


def paired_differences(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pair each reader's Method A and Method B answers on the same case and question.

    Args:
        rows: answers with at least ``reader, case_id, target, group, method, question,
            value`` (e.g. :func:`gifsplanation.study.export.answer_table`).

    Returns:
        One dict per complete pair: ``reader, case_id, target, group, question, a, b, diff``
        with ``diff = b − a``. Incomplete pairs (one method not answered yet) are left out.

    Example:
        >>> rows = [dict(reader="r", case_id="c", target="t", group="TP", question="feature",
        ...              method=m, value=v) for m, v in (("A", 2), ("B", 4))]
        >>> paired_differences(rows)[0]["diff"]
        2
    """
    pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["reader"]), str(row["case_id"]), str(row["question"]))
        entry = pairs.setdefault(
            key,
            {
                "reader": key[0],
                "case_id": key[1],
                "target": row["target"],
                "group": row["group"],
                "question": key[2],
            },
        )
        entry[str(row["method"]).lower()] = int(row["value"])
    out = []
    for entry in pairs.values():
        if "a" in entry and "b" in entry:
            entry["diff"] = entry["b"] - entry["a"]
            out.append(entry)
    out.sort(key=lambda e: (e["reader"], e["case_id"], e["question"]))
    return out


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def describe(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """n, means, mean ± sd of ``b − a`` and the Wilcoxon signed-rank test of ``b − a``.

    Args:
        a: Method A answers.
        b: Method B answers on the same cases, in the same order.

    Returns:
        ``n, mean_a, mean_b, mean_diff, sd_diff, n_nonzero, wilcoxon_statistic, p_value``;
        the test is NaN when no difference is non-zero.

    Example:
        >>> round(describe([1, 1, 1, 1], [2, 3, 4, 5])["p_value"], 3)
        0.125
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"describe: a and b differ in length ({a_arr.size} vs {b_arr.size})")
    diff = b_arr - a_arr
    n = int(diff.size)
    nonzero = int(np.count_nonzero(diff))
    statistic = p_value = math.nan
    if nonzero:
        result = stats.wilcoxon(diff)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return {
        "n": n,
        "mean_a": float(a_arr.mean()) if n else math.nan,
        "mean_b": float(b_arr.mean()) if n else math.nan,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "sd_diff": _sd(diff),
        "n_nonzero": nonzero,
        "wilcoxon_statistic": statistic,
        "p_value": p_value,
    }


def summary_table(diffs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per reader and pooled × TP/FP/all × question: :func:`describe` of the pairs."""
    readers = sorted({d["reader"] for d in diffs})
    out = []
    for scope in [*readers, POOLED]:
        for group in GROUPS:
            for question in QUESTIONS:
                sel = [
                    d
                    for d in diffs
                    if (scope == POOLED or d["reader"] == scope)
                    and (group == "all" or d["group"] == group)
                    and d["question"] == question
                ]
                if not sel:
                    continue
                row = {"scope": scope, "group": group, "question": question}
                row.update(describe([d["a"] for d in sel], [d["b"] for d in sel]))
                out.append(row)
    return out


def per_target_table(diffs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pooled over readers: mean ± sd of B − A per target, TP/FP and question."""
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for d in diffs:
        cells[(str(d["target"]), d["group"], d["question"])].append(d["diff"])
    return [
        {
            "target": t,
            "group": g,
            "question": q,
            "n": len(v),
            "mean_diff": float(np.mean(v)),
            "sd_diff": _sd(v),
        }
        for (t, g, q), v in sorted(cells.items())
    ]


def agreement_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Weighted Cohen's kappa for every pair of readers, per method and question."""
    from sklearn.metrics import cohen_kappa_score

    values: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for row in rows:
        values[(str(row["reader"]), str(row["method"]), str(row["question"]))][
            str(row["case_id"])
        ] = int(row["value"])
    readers = sorted({k[0] for k in values})
    out = []
    for r1, r2 in itertools.combinations(readers, 2):
        for method in ("A", "B"):
            for question in QUESTIONS:
                v1, v2 = (
                    values.get((r1, method, question), {}),
                    values.get((r2, method, question), {}),
                )
                common = sorted(set(v1) & set(v2))
                if not common:
                    continue
                x, y = [v1[c] for c in common], [v2[c] for c in common]
                kappas = {}
                for weights in ("linear", "quadratic"):
                    if len(set(x) | set(y)) < 2:
                        kappas[weights] = math.nan  # one category only: kappa undefined
                    else:
                        kappas[weights] = float(
                            cohen_kappa_score(x, y, weights=weights, labels=[1, 2, 3, 4, 5])
                        )
                out.append(
                    {
                        "reader_1": r1,
                        "reader_2": r2,
                        "method": method,
                        "question": question,
                        "n": len(common),
                        "kappa_linear": kappas["linear"],
                        "kappa_quadratic": kappas["quadratic"],
                        "exact_agreement": float(np.mean(np.equal(x, y))),
                    }
                )
    return out


@dataclass
class StudyAnalysis:
    """Everything ``analyze`` computes, and where it was written."""

    differences: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    per_target: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def _fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        if digits == 3 and x < 0.001:
            return "<0.001"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_report(result: StudyAnalysis, meta: Mapping[str, str] | None = None) -> str:
    """The analysis as a Markdown document."""
    lines = ["# Reader study analysis", ""]
    n_readers = len({d["reader"] for d in result.differences})
    n_cases = len({d["case_id"] for d in result.differences})
    lines += [
        f"{n_readers} reader(s), {n_cases} case(s) with answers under both methods, "
        f"{len(result.differences)} paired answers. Difference = Method B (Latent Shift) − "
        "Method A (gradient, guided backprop, integrated gradients) on a 1–5 scale; "
        "mean ± sd (ddof = 1); two-sided Wilcoxon signed-rank test (zeros dropped). "
        "TP/FP: ground truth of the predicted-positive case.",
        "",
    ]
    for question, text in QUESTIONS.items():
        lines += [
            f"## {text}",
            "",
            "| reader | group | n | mean A | mean B | B − A (mean ± sd) | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result.summary:
            if row["question"] != question:
                continue
            lines.append(
                f"| {row['scope']} | {row['group']} | {row['n']} | {_fmt(row['mean_a'])} | "
                f"{_fmt(row['mean_b'])} | {row['mean_diff']:+.2f} ± {_fmt(row['sd_diff'])} | "
                f"{_fmt(row['p_value'], 3)} |"
            )
        lines.append("")
    lines += [
        "## Per target (pooled)",
        "",
        "![per target](per_target.png)",
        "",
        "| target | group | question | n | B − A (mean ± sd) |",
        "|---|---|---|---|---|",
    ]
    for row in result.per_target:
        lines.append(
            f"| {row['target']} | {row['group']} | {row['question']} | {row['n']} | "
            f"{row['mean_diff']:+.2f} ± {_fmt(row['sd_diff'])} |"
        )
    lines += ["", "## Agreement between readers", ""]
    if result.agreement:
        lines += [
            "| readers | method | question | n | κ linear | κ quadratic | exact |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result.agreement:
            lines.append(
                f"| {row['reader_1']} / {row['reader_2']} | {row['method']} | {row['question']} "
                f"| {row['n']} | {_fmt(row['kappa_linear'])} | {_fmt(row['kappa_quadratic'])} "
                f"| {_fmt(row['exact_agreement'])} |"
            )
    else:
        lines.append("Needs at least two readers with answers on the same cases.")
    if meta:
        lines += ["", "## Study", ""]
        for key in ("created_at", "classifier", "autoencoder", "threshold"):
            if key in meta:
                lines.append(f"- {key}: {meta[key]}")
    return "\n".join(lines) + "\n"


def plot_per_target(per_target: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Bar chart of mean ± sd of B − A per target, TP and FP side by side, one panel per
    question (the paper's Fig. 6A). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    targets = sorted({r["target"] for r in per_target}) or ["(none)"]
    fig, axes = plt.subplots(1, len(QUESTIONS), figsize=(5 + 1.2 * len(targets), 4), squeeze=False)
    width = 0.38
    colors = {"TP": "#3b7dd8", "FP": "#e07b39"}
    for ax, (question, text) in zip(axes[0], QUESTIONS.items(), strict=True):
        for k, group in enumerate(("TP", "FP")):
            cells = {
                r["target"]: r
                for r in per_target
                if r["question"] == question and r["group"] == group
            }
            xs = [i + (k - 0.5) * width for i in range(len(targets))]
            means = [cells[t]["mean_diff"] if t in cells else np.nan for t in targets]
            sds = [cells[t]["sd_diff"] if t in cells else np.nan for t in targets]
            sds = [0.0 if (isinstance(s, float) and math.isnan(s)) else s for s in sds]
            ax.bar(
                xs,
                means,
                width,
                yerr=sds,
                capsize=3,
                color=colors[group],
                label=f"{group}",
                alpha=0.9,
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
        ax.set_title(text, fontsize=10)
        ax.set_ylabel("Method B − Method A (mean ± sd)")
        ax.set_ylim(-4.2, 4.2)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def analyze_rows(rows: Sequence[Mapping[str, Any]]) -> StudyAnalysis:
    """Compute every table from exported answer rows (no files written)."""
    diffs = paired_differences(rows)
    return StudyAnalysis(
        differences=diffs,
        summary=summary_table(diffs),
        per_target=per_target_table(diffs),
        agreement=agreement_table(rows),
    )


def analyze(
    study_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> StudyAnalysis:
    """Analyse a study and write ``summary.md``, ``stats.csv``, ``differences.csv``,
    ``per_target.csv``, ``agreement.csv`` and ``per_target.png``.

    Args:
        study_dir: the study folder.
        out: the output folder; default ``STUDY_DIR/analysis``.

    Returns:
        The tables and ``files`` (name → path written).

    Example:
        >>> result = analyze("my-study")  # doctest: +SKIP
        >>> result.files["summary"]  # doctest: +SKIP
        PosixPath('my-study/analysis/summary.md')
    """
    store = StudyStore(study_dir)
    out_dir = Path(out) if out is not None else store.root / "analysis"
    rows = answer_table(store)
    result = analyze_rows(rows)
    if not result.differences:
        log.warning("no case has answers under both methods yet; the tables are empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "stats": write_csv(out_dir / "stats.csv", result.summary, STAT_FIELDS),
        "differences": write_csv(out_dir / "differences.csv", result.differences, DIFF_FIELDS),
        "per_target": write_csv(out_dir / "per_target.csv", result.per_target, TARGET_FIELDS),
        "agreement": write_csv(out_dir / "agreement.csv", result.agreement, AGREEMENT_FIELDS),
        "plot": plot_per_target(result.per_target, out_dir / "per_target.png"),
    }
    files["summary"] = write_text(out_dir / "summary.md", markdown_report(result, store.meta()))
    result.files = files
    return result


__all__ = [
    "StudyAnalysis",
    "agreement_table",
    "analyze",
    "analyze_rows",
    "describe",
    "markdown_report",
    "paired_differences",
    "per_target_table",
    "plot_per_target",
    "summary_table",
]
