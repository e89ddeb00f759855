"""The numbers of the model card, measured on the held-out split of the training data.

:func:`measure` takes a classifier, one or more autoencoders and a
:class:`~gifsplanation.datasets.MaskedCXRDataset` and reports: the classifier's per-target
one-vs-rest AUC, accuracy and calibration; each autoencoder's reconstruction MAE; the
autoencoder's effect on predictions (the paper's Table K.1: mean f(x) against
f(D(E(x))) for positives and negatives of each target, and AUC on reconstructions); and
how well Latent Shift ``heatmap("max")`` maps overlap the infection masks (IoU with the
top-p rule, p = mask pixel count) for mask-bearing positives. Run it as
``python -m gifsplanation.models.validation --help``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..datasets import MaskedCXRDataset, uint8_to_model
from ..files import write_json, write_text
from ..metrics import iou_top_p, roc_auc
from .metrics import classifier_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, bs: int = 32) -> torch.Tensor:
    return torch.cat([fn(uint8_to_model(x[i : i + bs])) for i in range(0, len(x), bs)])


@torch.no_grad()
def measure(
    classifier: nn.Module,
    autoencoders: dict[str, Any],
    dataset: MaskedCXRDataset,
    iou_target: str = "COVID-19",
    n_iou: int = 80,
    strategy: str = "fast",
) -> dict[str, Any]:
    """Measure classifier and autoencoders on ``dataset`` (normally the val split).

    Args:
        classifier: a probability classifier whose ``targets`` match ``dataset.labels``.
        autoencoders: name -> autoencoder (``encode``/``decode``).
        dataset: the held-out split.
        iou_target: target explained for the IoU comparison (its items must have masks).
        n_iou: mask-bearing positives used for the IoU (first ``n_iou`` in a seeded order).
        strategy: Latent Shift search strategy for the maps.

    Returns:
        A JSON-ready dict: ``classifier`` metrics and, per autoencoder, ``mae``,
        ``effect`` (per target) and ``iou`` (mean, sd, n; and a random-map reference).
    """
    from .. import LatentShift

    images, targets = dataset.cached()
    names = dataset.labels
    probs = _batched(classifier, images)
    out: dict[str, Any] = {
        "data": {"source": str(dataset.source), "split": dataset.split, "n": len(dataset)},
        "classifier": {
            "name": getattr(classifier, "name", None),
            "sha256": getattr(classifier, "weights_sha256", None),
            **classifier_metrics(probs, targets, names),
        },
        "autoencoders": {},
    }
    ti = names.index(iou_target)
    pos = [i for i in range(len(dataset)) if int(targets[i]) == ti]
    rng = np.random.default_rng(0)
    pos = [pos[j] for j in rng.permutation(len(pos))]
    iou_items = []
    for i in pos:
        m = dataset.load_mask(i)
        if m is not None and m.any():
            iou_items.append((i, m))
        if len(iou_items) >= n_iou:
            break
    for name, ae in autoencoders.items():
        t0 = time.time()
        abs_err, n_px = 0.0, 0
        recon_probs = []
        for s in range(0, len(images), 32):
            x = uint8_to_model(images[s : s + 32])
            r = ae.decode(ae.encode(x))
            abs_err += float((r - x).abs().sum())
            n_px += x.numel()
            recon_probs.append(classifier(r))
        rp = torch.cat(recon_probs)
        effect = {}
        for k, t in enumerate(names):
            is_pos = (targets == k).numpy()
            effect[t] = {
                "n_pos": int(is_pos.sum()),
                "n_neg": int((~is_pos).sum()),
                "pos_f_x": float(probs[is_pos, k].mean()),
                "pos_f_recon": float(rp[is_pos, k].mean()),
                "neg_f_x": float(probs[~is_pos, k].mean()),
                "neg_f_recon": float(rp[~is_pos, k].mean()),
                "auc_x": roc_auc(probs[:, k].numpy(), is_pos),
                "auc_recon": roc_auc(rp[:, k].numpy(), is_pos),
            }
            e = effect[t]
            e["pos_change"] = e["pos_f_recon"] - e["pos_f_x"]
            e["neg_change"] = e["neg_f_recon"] - e["neg_f_x"]
        ls = LatentShift(classifier, ae, strategy=strategy)
        ious, random_ref, evals, reached = [], [], 0, 0
        for s in range(0, len(iou_items), 8):
            chunk = iou_items[s : s + 8]
            x = torch.stack([uint8_to_model(images[i]) for i, _ in chunk])
            with torch.enable_grad():
                exp = ls.explain(x, target=iou_target)
            maps = exp.heatmap("max")
            evals += int(exp.n_evaluations)
            for j, (_, m) in enumerate(chunk):
                ious.append(iou_top_p(maps[j].numpy(), m))
                a = float(m.mean())
                random_ref.append(a / (2 - a))
                reached += int(exp.stop_reasons[j]["lower"].reached)
        out["autoencoders"][name] = {
            "sha256": getattr(ae, "weights_sha256", None),
            "latent_shape": list(getattr(ae, "latent_shape", ()) or []),
            "mae": abs_err / n_px,
            "effect": effect,
            "iou": {
                "target": iou_target,
                "n": len(ious),
                "mean": float(np.mean(ious)) if ious else float("nan"),
                "sd": float(np.std(ious)) if ious else float("nan"),
                "random_map_mean": float(np.mean(random_ref)) if ious else float("nan"),
                "lower_goal_reached": reached,
                "evaluations": evals,
                "strategy": strategy,
                "per_item": [float(v) for v in ious],
            },
            "seconds": time.time() - t0,
        }
        log.info(
            "%s: MAE %.1f, IoU %.3f", name, abs_err / n_px, out["autoencoders"][name]["iou"]["mean"]
        )
    names_ae = list(out["autoencoders"])
    if len(names_ae) >= 2:  # paired comparison of the first two on the same images
        from scipy.stats import wilcoxon

        a = np.array(out["autoencoders"][names_ae[0]]["iou"]["per_item"])
        b = np.array(out["autoencoders"][names_ae[1]]["iou"]["per_item"])
        if len(a) == len(b) and len(a) > 0:
            out["iou_paired"] = {
                "a": names_ae[0],
                "b": names_ae[1],
                "mean_difference_b_minus_a": float((b - a).mean()),
                "b_better_count": int((b > a).sum()),
                "n": int(len(a)),
                "wilcoxon_p": float(wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0,
            }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The measured numbers as Markdown tables (for docs/model-card.md)."""
    c = result["classifier"]
    lines = ["| target | AUC (one vs rest) |", "|---|---|"]
    lines += [f"| {t} | {v:.3f} |" for t, v in c["auc"].items()]
    lines += [
        "",
        f"Accuracy {c['accuracy']:.3f}, NLL {c['nll']:.3f}, top-label ECE {c['ece']:.3f} "
        f"(n = {result['data']['n']}).",
        "",
        "| autoencoder | latent | MAE | IoU latentshift-max (n) | random map "
        "| lower goal reached |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in result["autoencoders"].items():
        lat = "x".join(str(v) for v in a["latent_shape"]) or "?"
        lines.append(
            f"| {name} | {lat} | {a['mae']:.1f} | {a['iou']['mean']:.3f} ± {a['iou']['sd']:.3f} "
            f"({a['iou']['n']}) | {a['iou']['random_map_mean']:.3f} | "
            f"{a['iou']['lower_goal_reached']}/{a['iou']['n']} |"
        )
    if "iou_paired" in result:
        d = result["iou_paired"]
        lines += [
            "",
            f"Paired IoU difference {d['b']} − {d['a']}: {d['mean_difference_b_minus_a']:+.3f} "
            f"({d['b']} higher on {d['b_better_count']}/{d['n']} images; Wilcoxon "
            f"p = {d['wilcoxon_p']:.3g}).",
        ]
    for name, a in result["autoencoders"].items():
        lines += [
            "",
            f"Effect of {name} on predictions (mean probability of the target):",
            "",
            "| target | positives f(x) | f(D(E(x))) | change | negatives f(x) | f(D(E(x))) "
            "| change | AUC x | AUC recon |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t, e in a["effect"].items():
            lines.append(
                f"| {t} (n+ {e['n_pos']}) | {e['pos_f_x']:.3f} | {e['pos_f_recon']:.3f} | "
                f"{e['pos_change']:+.3f} | {e['neg_f_x']:.3f} | {e['neg_f_recon']:.3f} | "
                f"{e['neg_change']:+.3f} | {e['auc_x']:.3f} | {e['auc_recon']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: measure models on a dataset split and write JSON + Markdown."""
    from .registry import get_autoencoder, get_classifier

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset CSV or folder")
    p.add_argument("--classifier", default="cxr-classifier")
    p.add_argument("--ae", action="append", help="autoencoder name or path (repeatable)")
    p.add_argument("--split", default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-iou", type=int, default=80)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, help="output JSON (Markdown next to it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = get_classifier(args.classifier)
    aes = {name: get_autoencoder(name) for name in (args.ae or ["cxr-ae"])}
    ds = MaskedCXRDataset(args.data, split=args.split, seed=args.seed)
    result = measure(clf, aes, ds, n_iou=args.n_iou)
    result["command"] = "python -m gifsplanation.models.validation " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    write_json(args.out, result)
    md = Path(args.out).with_suffix(".md")
    write_text(md, markdown(result))
    print(markdown(result))  # noqa: T201 - command-line output


if __name__ == "__main__":
    main()
