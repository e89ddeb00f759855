"""Measure the out-of-distribution gate on images it was neither trained nor tuned on.

For each group of images it counts how many each signal refuses — the detector
(p(not a frontal CXR) above its calibrated threshold), the autoencoder's reconstruction
error (mean |D(E(x)) − x| above the threshold calibrated on the training split) — and the
gate that refuses when either does:

* should pass: every validation CXR (the split no bundled model trained on), the real
  files of ``xrv-test-images`` (NIH, PadChest, SIIM DICOM, a COVID-19 case), mirrored
  validation CXRs;
* should be refused: every scikit-image sample image that loads offline (never used in
  training), synthetic patterns from generators the detector never saw (plus two trained
  families drawn with another seed), and inverted / rotated / upside-down validation CXRs.

Every image goes through :func:`gifsplanation.io.load_image` or the dataset reader, as a
user's would. ``Fake_MONOHR1.dcm`` (the SIIM pixels relabelled MONOCHROME1, so that a
correct reader shows them inverted) is reported on its own line.

Usage:
    python benchmarks/ood_gate.py --data ../shared/data/covid-qu-ex/train.csv \
        --cache-dir /work/cache --json benchmarks/results/ood-gate.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from gifsplanation.io import load_image
from gifsplanation.models import get_autoencoder
from gifsplanation.models.gate import (
    autoencoder_ood_record,
    calibrate_autoencoder,
    detector_scores,
    load_detector,
    reconstruction_errors,
    training_images,
)
from gifsplanation.pixels import uint8_to_model

SIZE = 224
FAKE_MONOCHROME1 = "Fake_MONOHR1.dcm"


# -- held-out synthetic patterns (generators not in gifsplanation.models.gate) ---------------


def _grid(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    return t.view(s, 1).expand(s, s), t.view(1, s).expand(s, s)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)


def voronoi(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    k = int(torch.randint(5, 60, (1,), generator=g))
    pts = torch.rand(k, 2, generator=g) * 2 - 1
    d = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    return torch.rand(k, generator=g)[d.argmin(0)]


def rings(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    c = torch.rand(2, generator=g) * 2 - 1
    r = torch.sqrt((yy - c[0]) ** 2 + (xx - c[1]) ** 2)
    f = float(torch.rand(1, generator=g)) * 40 + 5
    spiral = float(torch.randint(0, 4, (1,), generator=g))
    return (torch.sin(f * r + spiral * torch.atan2(yy - c[0], xx - c[1])) + 1) / 2


def value_noise(g: torch.Generator, s: int) -> torch.Tensor:
    out = torch.zeros(s, s)
    for o, cells in enumerate((3, 6, 12, 24, 48)):
        lattice = torch.rand(1, 1, cells, cells, generator=g)
        up = F.interpolate(lattice, size=(s, s), mode="bicubic", align_corners=True)[0, 0]
        out += up / 2**o
    return _minmax(out)


def julia(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    zoom = float(torch.rand(1, generator=g)) * 1.2 + 0.3
    z = torch.complex(xx * zoom, yy * zoom)
    a = float(torch.rand(1, generator=g)) * 2 * math.pi
    c = complex(0.7885 * math.cos(a), 0.7885 * math.sin(a))
    count = torch.zeros(s, s)
    for _ in range(40):
        z = torch.where(z.abs() < 4, z * z + c, z)
        count += (z.abs() < 4).float()
    return _minmax(count)


def lines(g: torch.Generator, s: int) -> torch.Tensor:
    from PIL import Image, ImageDraw

    bg = int(torch.randint(0, 256, (1,), generator=g))
    im = Image.new("L", (s, s), bg)
    draw = ImageDraw.Draw(im)
    for _ in range(int(torch.randint(3, 40, (1,), generator=g))):
        x0, y0, x1, y1 = (int(v) for v in torch.randint(0, s, (4,), generator=g))
        fill = int(torch.randint(0, 256, (1,), generator=g))
        draw.line((x0, y0, x1, y1), fill=fill, width=int(torch.randint(1, 7, (1,), generator=g)))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255)


def dots(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    out = torch.full((s, s), float(torch.rand(1, generator=g)) * 0.3)
    for _ in range(int(torch.randint(20, 200, (1,), generator=g))):
        c = torch.rand(2, generator=g) * 2 - 1
        r = float(torch.rand(1, generator=g)) * 0.03 + 0.005
        out = torch.where(
            (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r**2, torch.rand(1, generator=g), out
        )
    return out


def plasma(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    out = torch.zeros(s, s)
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
        a, f, p = (float(v) for v in torch.rand(3, generator=g))
        out += torch.sin((math.cos(6.3 * a) * xx + math.sin(6.3 * a) * yy) * (2 + 20 * f) + 6.3 * p)
    return _minmax(out)


def uniform_noise(g: torch.Generator, s: int) -> torch.Tensor:
    return torch.rand(s, s, generator=g)


def checkerboard(g: torch.Generator, s: int) -> torch.Tensor:
    yy, xx = _grid(s)
    f = float(torch.randint(2, 24, (1,), generator=g)) * math.pi / 2
    return ((torch.sin(f * xx) * torch.sin(f * yy)) > 0).float()


NEW_GENERATORS = {
    "voronoi": voronoi,
    "rings_spirals": rings,
    "value_noise": value_noise,
    "julia_fractal": julia,
    "lines": lines,
    "dots": dots,
    "plasma": plasma,
}
TRAINED_FAMILIES_NEW_SEED = {"uniform_noise": uniform_noise, "checkerboard": checkerboard}


def synthetic(seed: int, per_generator: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, fn in {**NEW_GENERATORS, **TRAINED_FAMILIES_NEW_SEED}.items():
        imgs = torch.stack([fn(g, SIZE) for _ in range(per_generator)])[:, None]
        out[name] = imgs * 2048 - 1024
    return out


# -- post-processed radiographs (should still pass) ------------------------------------------


def _per_image(x: torch.Tensor, fn) -> torch.Tensor:
    u = ((x + 1024) / 2048).clamp(0, 1).numpy()
    out = np.stack([fn(a[0])[None] for a in u]).astype(np.float32)
    return torch.from_numpy(out).clamp(0, 1) * 2048 - 1024


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((a * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255


def _zoom_out(a: np.ndarray, scale: float) -> np.ndarray:
    small = F.interpolate(torch.from_numpy(a)[None, None], scale_factor=scale, mode="area")[0, 0]
    out = np.zeros_like(a)
    h, w = small.shape
    y, x = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    out[y : y + h, x : x + w] = small.numpy()
    return out


def _crop(a: np.ndarray, keep: float) -> np.ndarray:
    s = a.shape[0]
    c = int(round(s * keep))
    o = (s - c) // 2
    t = torch.from_numpy(np.ascontiguousarray(a[o : o + c, o : o + c]))[None, None]
    return F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False)[0, 0].numpy()


def _low_resolution(a: np.ndarray, side: int) -> np.ndarray:
    t = torch.from_numpy(a)[None, None]
    small = F.interpolate(t, size=(side, side), mode="area")
    return F.interpolate(small, size=a.shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def post_processed(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Radiographs as other hospitals and viewers may deliver them."""
    from scipy import ndimage
    from skimage import exposure

    g = torch.Generator().manual_seed(seed)
    return {
        "CLAHE (adaptive equalisation, clip 0.03)": _per_image(
            x, lambda a: exposure.equalize_adapthist(a, clip_limit=0.03)
        ),
        "histogram-equalised": _per_image(x, exposure.equalize_hist),
        "gamma 0.5 (brighter)": _per_image(x, lambda a: a**0.5),
        "gamma 2 (darker)": _per_image(x, lambda a: a**2),
        "Gaussian noise σ = 60": (x + 60 * torch.randn(x.shape, generator=g)).clamp(-1024, 1024),
        "blurred (σ = 3 px)": _per_image(x, lambda a: ndimage.gaussian_filter(a, 3)),
        "unsharp-masked (amount 2, σ = 4 px)": _per_image(
            x, lambda a: a + 2 * (a - ndimage.gaussian_filter(a, 4))
        ),
        "JPEG quality 10": _per_image(x, lambda a: _jpeg(a, 10)),
        "resolution 48 px, upsampled": _per_image(x, lambda a: _low_resolution(a, 48)),
        "zoomed out to 60% on black": _per_image(x, lambda a: _zoom_out(a, 0.6)),
        "zoomed out to 45% on black": _per_image(x, lambda a: _zoom_out(a, 0.45)),
        "central 70% crop (zoomed in)": _per_image(x, lambda a: _crop(a, 0.7)),
        "rotated 15°": _per_image(x, lambda a: ndimage.rotate(a, 15, reshape=False, order=1)),
        "rotated 25°": _per_image(x, lambda a: ndimage.rotate(a, 25, reshape=False, order=1)),
    }


# -- real images -----------------------------------------------------------------------------


def skimage_photos() -> dict[str, torch.Tensor]:
    """Every scikit-image sample that loads without a download, through ``load_image``."""
    import skimage.data
    from PIL import Image

    skip = {"download_all", "load", "data_dir", "lbp_frontal_face_cascade_filename", "file_hash"}
    skip |= {"binary_blobs"}  # a generator with arguments, not a sample image
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(n for n in dir(skimage.data) if not n.startswith("_")):
            fn = getattr(skimage.data, name)
            if name in skip or not callable(fn):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = fn()
            except Exception:  # needs pooch (a download): not available offline
                continue
            if isinstance(a, tuple):
                a = a[0]
            a = np.asarray(a)
            if name == "lfw_subset":
                a = a[0]  # a stack of 25x25 faces: the first one
            if a.ndim == 3 and a.shape[-1] not in (3, 4):
                continue  # volumes
            if a.dtype == bool:
                a = a.astype(np.uint8) * 255
            elif a.dtype != np.uint8:
                a = (255 * (a.astype(np.float64) - a.min()) / max(np.ptp(a), 1e-12)).astype(
                    np.uint8
                )
            path = Path(tmp) / f"{name}.png"
            Image.fromarray(a).save(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # colour images warn; that is expected here
                out[name] = load_image(path)
    return out


def xrv_images(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for p in sorted(folder.iterdir()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[p.name] = load_image(p)
    return out


# -- measurement -----------------------------------------------------------------------------


def score(detector, ae, x: torch.Tensor, batch: int = 32) -> tuple[list[float], list[float]]:
    det = detector_scores(detector, x, batch_size=batch).tolist()
    rec = reconstruction_errors(ae, x, batch_size=batch).tolist()
    return det, rec


def summarise(name, det, rec, t_det, t_rec, expect, detail=None):
    d = [v > t_det for v in det]
    r = [v > t_rec for v in rec]
    both = [a or b for a, b in zip(d, r, strict=True)]
    row = {
        "group": name,
        "expect": expect,
        "n": len(det),
        "refused_detector": sum(d),
        "refused_recon": sum(r),
        "refused_either": sum(both),
        "detector_median": statistics.median(det),
        "recon_median": statistics.median(rec),
    }
    if detail is not None:
        row["images"] = {
            k: {"detector": a, "recon_error": b, "refused": c}
            for k, a, b, c in zip(detail, det, rec, both, strict=True)
        }
    return row


def timing(detector) -> dict[str, float]:
    x1 = torch.randn(1, 1, SIZE, SIZE) * 300
    xb = torch.randn(64, 1, SIZE, SIZE) * 300
    with torch.no_grad():
        for _ in range(5):
            detector(x1)
        one = []
        for _ in range(200):
            t = time.perf_counter()
            detector(x1)
            one.append(time.perf_counter() - t)
        batch = []
        for _ in range(10):
            t = time.perf_counter()
            detector(xb)
            batch.append((time.perf_counter() - t) / 64)
    return {
        "batch1_median_ms": 1000 * statistics.median(one),
        "batch1_p95_ms": 1000 * float(np.percentile(one, 95)),
        "batch64_per_image_median_ms": 1000 * statistics.median(batch),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/covid-qu-ex/train.csv")
    p.add_argument("--xrv-images", default=None, help="default: DATA's ../../xrv-test-images")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--ae", default="cxr-ae-7x7", help="autoencoder for the reconstruction error")
    p.add_argument("--detector", default=None, help="detector weights (default: bundled)")
    p.add_argument("--seed", type=int, default=20261129, help="seed of the synthetic patterns")
    p.add_argument("--per-generator", type=int, default=24)
    p.add_argument("--stress-images", type=int, default=200, help="validation CXRs per stress test")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    detector = load_detector(args.detector)
    ae = get_autoencoder(args.ae)
    record = autoencoder_ood_record(ae)
    if record is None:
        print(f"{args.ae} has no 'ood' record: calibrating now", file=sys.stderr)
        record = calibrate_autoencoder(args.ae, args.data, cache_dir=args.cache_dir)
    t_det, t_rec = detector.threshold, float(record["recon_threshold"])

    val, _ = training_images(args.data, "val", args.cache_dir)
    val = uint8_to_model(val)
    xrv_dir = Path(args.xrv_images or Path(args.data).resolve().parents[1] / "xrv-test-images")

    rows = []

    def run(name, x, expect, detail=None):
        det, rec = score(detector, ae, x)
        rows.append(summarise(name, det, rec, t_det, t_rec, expect, detail))
        r = rows[-1]
        print(
            f"{name:38s} n={r['n']:4d}  detector {r['refused_detector']:4d}  "
            f"recon {r['refused_recon']:4d}  either {r['refused_either']:4d}",
            file=sys.stderr,
        )

    run("validation CXRs", val, "pass")
    run("mirrored validation CXRs", val.flip(3), "pass")
    xrv = xrv_images(xrv_dir)
    real = {k: v for k, v in xrv.items() if k != FAKE_MONOCHROME1}
    run("xrv-test-images (real)", torch.cat(list(real.values())), "pass", list(real))
    if FAKE_MONOCHROME1 in xrv:
        run("xrv Fake_MONOHR1.dcm (loads inverted)", xrv[FAKE_MONOCHROME1], "refuse",
            [FAKE_MONOCHROME1])  # fmt: skip
    photos = skimage_photos()
    run("scikit-image samples", torch.cat(list(photos.values())), "refuse", list(photos))
    synth = synthetic(args.seed, args.per_generator)
    new = torch.cat([synth[k] for k in NEW_GENERATORS])
    run("synthetic, unseen generators", new, "refuse")
    for k in NEW_GENERATORS:
        run(f"  {k}", synth[k], "refuse")
    for k in TRAINED_FAMILIES_NEW_SEED:
        run(f"synthetic {k} (trained family, new seed)", synth[k], "refuse")
    sub = val[torch.randperm(val.shape[0], generator=torch.Generator().manual_seed(0))]
    sub = sub[: args.stress_images]
    for k, x in post_processed(sub, args.seed).items():
        run(f"validation CXRs, {k}", x, "pass (stress)")
    run("inverted validation CXRs", -val, "refuse")
    run("rotated 90° validation CXRs", torch.rot90(val, 1, dims=(2, 3)), "refuse")
    run("rotated 270° validation CXRs", torch.rot90(val, 3, dims=(2, 3)), "refuse")
    run("upside-down validation CXRs", val.flip(2), "refuse")
    run("rotated 180° validation CXRs", torch.rot90(val, 2, dims=(2, 3)), "refuse")

    result = {
        "command": "python benchmarks/ood_gate.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "detector": {
            "weights_sha256": detector.weights_sha256,
            "threshold": t_det,
        },
        "autoencoder": {"name": args.ae, "weights_sha256": ae.weights_sha256, "ood": record},
        "groups": rows,
        "detector_timing": timing(detector),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(markdown(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict) -> str:
    lines = [
        f"detector threshold {result['detector']['threshold']:.3f}, "
        f"{result['autoencoder']['name']} reconstruction-error threshold "
        f"{result['autoencoder']['ood']['recon_threshold']:.1f}",
        "",
        "| images | should | n | refused: detector | recon error | either (gate) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["groups"]:
        n = r["n"]

        def cell(k, n=n, r=r):
            return f"{r[k]} ({100 * r[k] / n:.1f}%)"

        lines.append(
            f"| {r['group'].strip()} | {r['expect']} | {n} | {cell('refused_detector')} | "
            f"{cell('refused_recon')} | {cell('refused_either')} |"
        )
    t = result["detector_timing"]
    lines += [
        "",
        f"Detector time on CPU ({t['threads']} thread): {t['batch1_median_ms']:.2f} ms per image "
        f"at batch 1 (p95 {t['batch1_p95_ms']:.2f} ms), "
        f"{t['batch64_per_image_median_ms']:.2f} ms per image at batch 64.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
