"""Benchmark the λ search: the fast strategy against the paper's serial schedule.

Both strategies explain the same images with the same models in one run; per explanation
it prints decoder+classifier evaluations (search, sweep), sequential model calls, wall time
and the fast/paper ratios, then checks the goals of issue #2: the fast strategy's total
cost is at most 1.5x the cost of the sweep alone, and it makes at least 3x fewer sequential
model calls than the paper's schedule at the same bounds.

"paper" runs our implementation of the paper's schedule serially (one image, one λ per
call). "as published" adds what the paper's code also spent: the sweep recomputed without
reusing the search, and λ = 0 decoded a second time.

Usage:
    python benchmarks/search.py --models tiny --images 8
    python benchmarks/search.py --models bundled --images 8 \
        --json benchmarks/results/search-bundled.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from gifsplanation import LatentShift


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


def run(args) -> dict:
    torch.set_flush_denormal(True)
    clf, ae, images, target = load(args.models, args.images, args.seed)
    n_frames = args.frames
    rows = []
    for i in range(len(images)):
        x = images[i : i + 1]
        t0 = time.perf_counter()
        common = {"n_frames": n_frames, "max_lambda": args.max_lambda}
        fast = LatentShift(clf, ae, strategy="fast", **common).explain(x, target)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        paper = LatentShift(clf, ae, strategy="paper", batch_size=1, **common).explain(x, target)
        t_paper = time.perf_counter() - t0
        sweep_alone = n_frames - 1  # λ = 0 comes with the gradient pass
        paper_search = paper.cost.search_evaluations[0]
        rows.append(
            {
                "image": i,
                "bounds_fast": [round(float(v), 3) for v in fast.bounds[0]],
                "bounds_paper": [round(float(v), 3) for v in paper.bounds[0]],
                "reasons_fast": [str(r) for r in fast.stop_reasons[0].values()],
                "reasons_paper": [str(r) for r in paper.stop_reasons[0].values()],
                "fast_search": fast.cost.search_evaluations[0],
                "fast_sweep": fast.cost.sweep_evaluations[0],
                "fast_total": fast.n_evaluations,
                "fast_batches": fast.cost.batches,
                "fast_seconds": t_fast,
                "paper_search": paper_search,
                "paper_total": paper.n_evaluations,
                "paper_batches": paper.cost.batches,
                "paper_seconds": t_paper,
                "published_total": paper_search + n_frames + 1,
                "published_batches": paper_search + n_frames + 1,
                "sweep_alone": sweep_alone,
            }
        )
    return {"models": args.models, "frames": n_frames, "max_lambda": args.max_lambda, "rows": rows}


def report(result: dict, console: Console) -> bool:
    title = (
        f"λ search, models={result['models']}, frames={result['frames']}, "
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
    for r in result["rows"]:
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
        f"mean fast cost / sweep alone = {mean_cost:.2f} (goal <= 1.5); "
        f"mean paper / fast sequential calls = {mean_calls:.1f} (goal >= 3); "
        f"median wall-time speed-up = {statistics.median(speedups):.1f}x"
    )
    return mean_cost <= 1.5 and mean_calls >= 3


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
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
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
