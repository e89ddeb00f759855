"""Images per minute of dataset runs: one process batch 1, one process batched, torchrun.

Runs ``gifsplanation.distributed.explain_dataset`` (what ``gifsplanation batch`` runs) on
the same images in three ways, each in fresh processes with ``--force`` so nothing is
skipped:

* ``reference``: one process, one image per engine call, no DataLoader workers (the
  reference implementation's loop: load, explain, write, next image);
* ``batched``: one process, ``--images-per-call`` images per engine call, DataLoader workers;
* ``torchrun``: ``torchrun --nproc-per-node N`` (gloo), each process batched, 1 thread each.

It reports images per minute (timed from a barrier after the models are loaded to the
merged manifest; full outputs: GIF, MP4, map, curve, flow, report), the end-to-end wall
time of the command, and peak memory (``resource.getrusage`` max RSS of every rank; the
JSON also has the largest child process, whose RSS counts pages shared with the rank).
The bundled models are used when their weights are installed; otherwise tiny models
(``gifsplanation.testing``) and the output says so.
Images are read at run time from the shared data (never copied into the repository).

Example:
    nice -n 10 python benchmarks/throughput.py --images 16 \\
        --data /work/shared/data/covid-qu-ex --json /work/logs/throughput.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("reference", "batched", "torchrun")


def _pick_images(data: Path, n: int) -> list[Path]:
    """``n`` images spread evenly over the sorted rows of ``train.csv`` (all labels)."""
    with open(data / "train.csv", newline="") as f:
        rows = sorted(r["image"] for r in csv.DictReader(f))
    step = max(len(rows) // n, 1)
    return [data / rows[k] for k in range(0, len(rows), step)][:n]


def _models(tiny: bool, device: str):
    """(classifier, autoencoder, label): bundled models, or tiny ones when unavailable."""
    if not tiny:
        try:
            from gifsplanation.models import get_autoencoder, get_classifier

            clf, ae = get_classifier(device=device), get_autoencoder(device=device)
            return clf, ae, f"bundled ({clf.name} + {ae.name}, {clf.input_size}px)"
        except Exception as e:  # noqa: BLE001 - any missing weight means: fall back
            print(f"bundled models unavailable ({e}); using tiny models", file=sys.stderr)
    from gifsplanation.testing import tiny_models

    clf, ae, _ = tiny_models()
    clf.input_size = 32
    return clf, ae, "tiny (gifsplanation.testing, 32px) - bundled weights not installed"


def _worker(args: argparse.Namespace) -> None:
    """One process of a measured run (rank of torchrun, or alone)."""
    import torch.distributed as dist

    from gifsplanation.distributed import explain_dataset, launch
    from gifsplanation.runs import ExplainOptions

    files = Path(args.list).read_text().split("\n")
    files = [f for f in files if f]
    with launch("cpu") as info:
        clf, ae, label = _models(args.tiny, info.device)
        options = ExplainOptions(
            n_frames=args.frames,
            images_per_call=args.images_per_call,
            force=True,
            mp4=not args.light,
            flow=not args.light,
        )
        if info.distributed:
            dist.barrier()
        start = time.perf_counter()
        result = explain_dataset(
            files, clf, ae, None, args.out, options, workers=args.workers, info=info
        )
        seconds = time.perf_counter() - start
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        record = {
            "rank": info.rank,
            "world_size": info.world_size,
            "seconds": seconds,
            "counts": result.counts,
            "local_counts": result.local_counts,
            "maxrss_mb": self_kb / 1024,
            "worker_maxrss_mb": child_kb / 1024,
            "models": label,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
        }
        (Path(args.out) / f"bench-rank{info.rank}.json").write_text(json.dumps(record))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(mode: str, args: argparse.Namespace, listing: Path, work: Path) -> dict:
    out = work / mode
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("bench-rank*.json"):
        old.unlink()
    per_call = 1 if mode == "reference" else args.images_per_call
    workers = 0 if mode == "reference" else args.workers
    worker_args = [
        str(Path(__file__).resolve()),
        "--worker",
        "--list",
        str(listing),
        "--out",
        str(out),
        "--frames",
        str(args.frames),
        "--images-per-call",
        str(per_call),
        "--workers",
        str(workers),
        *(["--tiny"] if args.tiny else []),
        *(["--light"] if args.light else []),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if mode == "torchrun":
        threads = max((os.cpu_count() or 1) // args.nproc, 1)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(args.nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            *worker_args,
        ]
    else:
        threads = os.cpu_count() or 1
        cmd = [sys.executable, *worker_args]
    env["OMP_NUM_THREADS"] = str(threads)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    # Other jobs on the machine skew the numbers: record the 1-minute load around the run.
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("bench-rank*.json"))]
    seconds = max(r["seconds"] for r in ranks)
    done = ranks[0]["counts"]["done"]
    return {
        "mode": mode,
        "processes": len(ranks),
        "threads_per_process": threads,
        "images_per_call": per_call,
        "workers": workers,
        "images": done,
        "failed": ranks[0]["counts"]["failed"],
        "seconds": round(seconds, 1),
        "images_per_minute": round(done / seconds * 60, 2),
        "wall_seconds": round(wall, 1),
        "load_average": load,
        "maxrss_mb": [round(r["maxrss_mb"]) for r in ranks],
        "worker_maxrss_mb": [round(r["worker_maxrss_mb"]) for r in ranks],
        "models": ranks[0]["models"],
        "command": " ".join(cmd),
    }


def _table(results: list[dict]) -> str:
    lines = [
        "| run | processes × threads | images/call | loader workers | images/min | "
        "speed-up | peak RSS per rank (MB) | load before/after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = results[0]["images_per_minute"]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['processes']} × {r['threads_per_process']} | "
            f"{r['images_per_call']} | {r['workers']} | {r['images_per_minute']:.1f} | "
            f"{r['images_per_minute'] / base:.2f}× | {', '.join(map(str, r['maxrss_mb']))} | "
            f"{' / '.join(map(str, r.get('load_average', [])))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/covid-qu-ex"))
    parser.add_argument("--images", type=int, default=16, help="images to explain")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--images-per-call", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--nproc", type=int, default=2, help="torchrun processes")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tiny", action="store_true", help="use the tiny test models")
    parser.add_argument("--light", action="store_true", help="no MP4 and no flow.png")
    parser.add_argument("--work", type=Path, default=None, help="output folder (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--table", type=Path, help="only re-print the table of a --json file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.table:
        print(_table(json.loads(args.table.read_text())))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="gifsplanation-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    images = _pick_images(args.data, args.images)
    listing = work / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    print(f"{len(images)} images from {args.data}; outputs in {work}", flush=True)
    results = []
    for mode in args.modes.split(","):
        r = _measure(mode, args, listing, work)
        print(json.dumps(r), flush=True)
        results.append(r)
    outputs = "GIF, map, curve, report (--light)" if args.light else "full outputs"
    print(f"\nmodels: {results[0]['models']}; {args.frames} frames; {outputs}\n")
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
