"""Benchmark the λ search: the fast strategy against the paper's serial schedule, in both
frame modes (residual and reconstruction).

Both strategies explain the same images with the same models in one run, once per frame
mode; per explanation it prints decoder+classifier evaluations (search, sweep), sequential
model calls, wall time and the fast/paper ratios, then checks the goals of issue #2 in each
mode: the fast strategy's total cost is at most 1.5x the cost of the sweep alone, and it
makes at least 3x fewer sequential model calls than the paper's schedule at the same bounds;
and the goal of issue #10: residual frames cost at most 10% more than reconstruction frames
(fast strategy; total evaluations and total wall time over the images).

"paper" runs our implementation of the paper's schedule serially (one image, one λ per
call). "as published" adds what the paper's code also spent: the sweep recomputed without
reusing the search, and λ = 0 decoded a second time. The fast strategy's wall time is the
median of ``--repeats`` runs, the modes interleaved per image (on a shared machine, compare
within one run).

Usage:
    python benchmarks/search.py --models tiny --images 8 \
        --json benchmarks/results/search-tiny.json
    python benchmarks/search.py --models bundled --images 8 --threads 1 \
        --json benchmarks/results/search-bundled.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from gifsplanation import FRAME_MODES, LatentShift


def load(models: str, n: int, seed: int):
    if models == "tiny":
        from gifsplanation.testing import BlobData, tiny_models

        clf, ae, _ = tiny_models()
        return clf, ae, BlobData(seed=seed).positive(n), 0
    if models == "bundled":
        from gifsplanation.models import demo_image, get_autoencoder, get_classifier

        clf, ae = get_classifier(), get_autoencoder()
        images = _shared_positives(n, seed)
        if images is None:
            images = demo_image().repeat(n, 1, 1, 1)
        return clf, ae, images, "COVID-19"
    if models == "xrv":
        import torchxrayvision as xrv

        torch.manual_seed(seed)
        clf = xrv.models.DenseNet(weights=None)
        clf.op_threshs = torch.full((18,), 0.5)  # calibrated-probability convention
        ae = xrv.autoencoders.ResNetAE(weights=None)
        images = (torch.rand(n, 1, 224, 224) * 2 - 1) * 1024
        return clf, ae, images, 0
    raise SystemExit(f"unknown --models {models!r}: choose tiny, bundled or xrv")


def _shared_positives(n: int, seed: int):
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid-qu-ex"
    if not (root / "train.csv").is_file():
        return None
    from gifsplanation.datasets import MaskedCXRDataset

    ds = MaskedCXRDataset(root / "train.csv", split="val", seed=0)
    covid = ds.labels.index("COVID-19")
    picked = [i for i, t in enumerate(ds.targets) if t == covid][:n]
    return torch.stack([ds[i]["image"] for i in picked])


def identities(clf, ae) -> dict:
    """Which models were used: name, class and the first 12 hex of the weights' SHA-256."""
    from gifsplanation.runs import model_identity

    out = {}
    for kind, model in (("classifier", clf), ("autoencoder", ae)):
        ident = model_identity(model)
        sha = ident.pop("weights_sha256")
        path = getattr(model, "weights_path", None)
        out[kind] = ident | {
            "weights_sha256_prefix": sha[:12] if sha else None,
            "weights_file": Path(path).name if path else None,
        }
    return out


def run(args) -> dict:
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    clf, ae, images, target = load(args.models, args.images, args.seed)
    n_frames = args.frames
    common = {"n_frames": n_frames, "max_lambda": args.max_lambda}
    engines = {
        mode: (
            LatentShift(clf, ae, mode=mode, strategy="fast", **common),
            LatentShift(clf, ae, mode=mode, strategy="paper", batch_size=1, **common),
        )
        for mode in args.modes
    }
    for fast_engine, _ in engines.values():  # one-time costs (allocator, kernels) untimed
        fast_engine.explain(images[:1], target)
    load_before = os.getloadavg()[0]
    rows = []
    for i in range(len(images)):
        x = images[i : i + 1]
        timings: dict[str, list[float]] = {mode: [] for mode in engines}
        fast_runs = {}
        for _ in range(args.repeats):
            for mode, (fast_engine, _) in engines.items():
                t0 = time.perf_counter()
                fast_runs[mode] = fast_engine.explain(x, target)
                timings[mode].append(time.perf_counter() - t0)
        for mode, (_, paper_engine) in engines.items():
            fast = fast_runs[mode]
            t_fast = statistics.median(timings[mode])
            t0 = time.perf_counter()
            paper = paper_engine.explain(x, target)
            t_paper = time.perf_counter() - t0
            rows.append(row(i, mode, fast, t_fast, timings[mode], paper, t_paper, n_frames))
    return {
        "models": args.models,
        "model_files": identities(clf, ae),
        "modes": list(engines),
        "frames": n_frames,
        "max_lambda": args.max_lambda,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "rows": rows,
    }


def row(i, mode, fast, t_fast, all_fast, paper, t_paper, n_frames) -> dict:
    """One image's numbers in one frame mode."""
    paper_search = paper.cost.search_evaluations[0]
    return {
        "image": i,
        "mode": mode,
        "bounds_fast": [round(float(v), 3) for v in fast.bounds[0]],
        "bounds_paper": [round(float(v), 3) for v in paper.bounds[0]],
        "reasons_fast": [str(r) for r in fast.stop_reasons[0].values()],
        "reasons_paper": [str(r) for r in paper.stop_reasons[0].values()],
        "fast_search": fast.cost.search_evaluations[0],
        "fast_sweep": fast.cost.sweep_evaluations[0],
        "fast_total": fast.n_evaluations,
        "fast_batches": fast.cost.batches,
        "fast_seconds": t_fast,
        "fast_seconds_all": all_fast,
        "paper_search": paper_search,
        "paper_total": paper.n_evaluations,
        "paper_batches": paper.cost.batches,
        "paper_seconds": t_paper,
        "published_total": paper_search + n_frames + 1,
        "published_batches": paper_search + n_frames + 1,
        "sweep_alone": n_frames - 1,  # λ = 0 comes with the gradient pass
    }


def report(result: dict, console: Console) -> bool:
    ok = True
    for mode in result["modes"]:
        ok &= report_mode(result, [r for r in result["rows"] if r["mode"] == mode], mode, console)
    if {"residual", "reconstruction"} <= set(result["modes"]):
        ok &= report_modes(result, console)
    return ok


def report_mode(result: dict, rows: list[dict], mode: str, console: Console) -> bool:
    title = (
        f"λ search, models={result['models']}, {mode} frames, frames={result['frames']}, "
        f"max_lambda={result['max_lambda']:g}"
    )
    table = Table(title=title)
    for col in (
        "img",
        "bounds fast",
        "bounds paper",
        "fast evals (search+sweep)",
        "paper evals",
        "as published",
        "fast calls",
        "paper calls",
        "fast s",
        "paper s",
        "cost / sweep",
        "calls paper/fast",
    ):
        table.add_column(col, justify="right")
    ratios_cost, ratios_calls, speedups = [], [], []
    for r in rows:
        cost_ratio = r["fast_total"] / r["sweep_alone"]
        calls_ratio = r["paper_batches"] / max(r["fast_batches"], 1)
        ratios_cost.append(cost_ratio)
        ratios_calls.append(calls_ratio)
        speedups.append(r["paper_seconds"] / r["fast_seconds"])
        table.add_row(
            str(r["image"]),
            f"{r['bounds_fast'][0]:g}, {r['bounds_fast'][1]:g}",
            f"{r['bounds_paper'][0]:g}, {r['bounds_paper'][1]:g}",
            f"{r['fast_search']}+{r['fast_sweep']}={r['fast_total']}",
            str(r["paper_total"]),
            str(r["published_total"]),
            str(r["fast_batches"]),
            str(r["paper_batches"]),
            f"{r['fast_seconds']:.3f}",
            f"{r['paper_seconds']:.3f}",
            f"{cost_ratio:.2f}",
            f"{calls_ratio:.1f}",
        )
    console.print(table)
    mean_cost = statistics.mean(ratios_cost)
    mean_calls = statistics.mean(ratios_calls)
    console.print(
        f"{mode}: mean fast cost / sweep alone = {mean_cost:.2f} (goal <= 1.5); "
        f"mean paper / fast sequential calls = {mean_calls:.1f} (goal >= 3); "
        f"median wall-time speed-up = {statistics.median(speedups):.1f}x"
    )
    return mean_cost <= 1.5 and mean_calls >= 3


def mode_summary(result: dict) -> dict:
    """Fast strategy, residual vs reconstruction frames: evaluations and wall time."""
    by_mode = {
        mode: sorted((r for r in result["rows"] if r["mode"] == mode), key=lambda r: r["image"])
        for mode in ("residual", "reconstruction")
    }
    out: dict = {}
    for mode, rows in by_mode.items():
        evals = [r["fast_total"] for r in rows]
        secs = [r["fast_seconds"] for r in rows]
        out[mode] = {
            "evaluations_median": statistics.median(evals),
            "evaluations_total": sum(evals),
            "calls_median": statistics.median(r["fast_batches"] + 1 for r in rows),
            "seconds_median": statistics.median(secs),
            "seconds_total": sum(secs),
            "seconds_per_evaluation": sum(secs) / sum(evals),
        }
    res, rec = out["residual"], out["reconstruction"]
    paired = [
        a["fast_seconds"] / b["fast_seconds"]
        for a, b in zip(by_mode["residual"], by_mode["reconstruction"], strict=True)
    ]
    out["residual_over_reconstruction"] = {
        "evaluations": res["evaluations_total"] / rec["evaluations_total"],
        "seconds": res["seconds_total"] / rec["seconds_total"],
        "seconds_median_of_paired_ratios": statistics.median(paired),
        "seconds_per_evaluation": res["seconds_per_evaluation"] / rec["seconds_per_evaluation"],
    }
    return out


def report_modes(result: dict, console: Console) -> bool:
    summary = result["mode_summary"] = mode_summary(result)
    table = Table(title="fast strategy, residual vs reconstruction frames (per explanation)")
    for col in (
        "frames",
        "evaluations (median)",
        "evaluations (total)",
        "sequential calls (median)",
        "s (median)",
        "s (total)",
        "ms / evaluation",
    ):
        table.add_column(col, justify="right")
    for mode in ("residual", "reconstruction"):
        m = summary[mode]
        table.add_row(
            mode,
            f"{m['evaluations_median']:g}",
            str(m["evaluations_total"]),
            f"{m['calls_median']:g}",
            f"{m['seconds_median']:.3f}",
            f"{m['seconds_total']:.3f}",
            f"{1000 * m['seconds_per_evaluation']:.1f}",
        )
    console.print(table)
    ratio = summary["residual_over_reconstruction"]
    console.print(
        f"residual / reconstruction: evaluations {ratio['evaluations']:.3f}, wall time "
        f"{ratio['seconds']:.3f} (median of per-image ratios "
        f"{ratio['seconds_median_of_paired_ratios']:.3f}), time per evaluation "
        f"{ratio['seconds_per_evaluation']:.3f} (goal: residual costs <= 1.10x)"
    )
    return ratio["evaluations"] <= 1.10 and ratio["seconds"] <= 1.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny", choices=["tiny", "bundled", "xrv"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-lambda",
        type=float,
        default=1000.0,
        help="cap on |λ| for both strategies (default 1000, the paper's)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(FRAME_MODES),
        help="frame modes to run, comma-separated (default: residual,reconstruction)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the fast strategy per image"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(FRAME_MODES))
    if unknown or not args.modes:
        parser.error(f"--modes: choose from {', '.join(FRAME_MODES)}")
    result = run(args)
    ok = report(result, Console(width=200))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({**result, "command": " ".join(sys.argv)}, indent=1))
        tmp.replace(args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
