"""The numbers of the model card, measured on the held-out split of the training data.

:func:`measure` takes a classifier, one or more autoencoders and a
:class:`~gifsplanation.datasets.MaskedCXRDataset` and reports: the classifier's per-output
AUC, accuracy and calibration; each autoencoder's reconstruction MAE, SSIM and fine-edge
ratio; the autoencoder's effect on predictions (the paper's Table K.1: mean f(x) against
f(D(E(x))) for positives and negatives of each output, and AUC on reconstructions); and,
per frame mode (``residual``, ``reconstruction``), how well Latent Shift
``heatmap("max")`` maps overlap the infection masks (IoU with the top-p rule, p = mask
pixel count) for mask-bearing positives, how often the lower search reached its goal and
how many evaluations it took. Run it as ``python -m gifsplanation.models.validation --help``.

Classifier outputs need not be the dataset labels: a multi-label classifier's outputs are
mapped to labels by a label→output matrix (:func:`output_mapping`), given as
``--output NAME=LABEL|LABEL`` like ``gifsplanation train classifier --output``; an output
named like a dataset label maps to that label by default.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..datasets import MaskedCXRDataset, uint8_to_model
from ..files import write_json, write_text
from ..metrics import iou_top_p, roc_auc
from .metrics import classifier_metrics, reconstruction_realism
from .training import TrainConfig, output_matrix

log = logging.getLogger(__name__)

#: Latent Shift frame modes measured (``--mode both`` measures every one, in this order).
MODES: tuple[str, ...] = ("residual", "reconstruction")


@dataclass(frozen=True)
class OutputMapping:
    """How the classifier's outputs relate to the dataset's labels.

    Attributes:
        names: the classifier's outputs, in output order.
        labels: the dataset's labels, in label-index order.
        matrix: ``(n_labels, n_outputs)`` 0/1: label ``i`` makes output ``k`` positive.
        exclusive: the outputs are the labels themselves, as mutually exclusive classes (a
            softmax): scored with top-label accuracy and ECE rather than per output.
    """

    names: list[str]
    labels: list[str]
    matrix: torch.Tensor
    exclusive: bool

    def positive_labels(self, output: str) -> list[str]:
        """The labels that make ``output`` positive."""
        k = self.names.index(output)
        return [lab for i, lab in enumerate(self.labels) if self.matrix[i, k] > 0.5]

    def positives(self, targets: torch.Tensor) -> torch.Tensor:
        """``(N, n_outputs)`` bool: item ``n`` (label index ``targets[n]``) is a positive of
        output ``k``."""
        return self.matrix[targets.long()] > 0.5


def output_mapping(
    outputs: Sequence[str],
    labels: Sequence[str],
    specs: Sequence[str] | None = None,
    head: str | None = None,
) -> OutputMapping:
    """The label→output mapping of a classifier with ``outputs`` on a dataset with ``labels``.

    Args:
        outputs: the classifier's output names (its ``targets``).
        labels: the dataset's labels.
        specs: ``"NAME=LABEL[|LABEL...]"`` per output to map explicitly (the syntax of
            ``gifsplanation train classifier --output``, parsed by
            :func:`~gifsplanation.models.training.output_matrix`). An output not given here
            maps to the label of the same name.
        head: the classifier's ``head`` (``"softmax"``, ``"sigmoid"``, ...; ``None`` if
            unknown). Outputs equal to the labels, none given in ``specs``, and a head
            other than ``"sigmoid"`` make the outputs exclusive classes (today's softmax
            classifiers).

    Raises:
        ValueError: (one line) for an output that matches no label and is not in
            ``specs`` (naming it and suggesting ``--output``), a spec naming no output of
            the classifier or an unknown label, or an output given twice.

    Example:
        >>> m = output_mapping(["COVID-19", "Pneumonia"], ["COVID-19", "Other", "Normal"],
        ...                    ["Pneumonia=COVID-19|Other"])
        >>> m.matrix.tolist(), m.positive_labels("Pneumonia")
        ([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], ['COVID-19', 'Other'])
    """
    outputs, labels, specs = list(outputs), list(labels), list(specs or [])
    cfg = TrainConfig("classifier", "", "", head="sigmoid", outputs=specs)
    given_names, given = output_matrix(cfg, labels) if specs else ([], torch.zeros(0, 0))
    for name in given_names:
        if name not in outputs:
            raise ValueError(
                f"--output {name}=...: the classifier has no output {name!r}; "
                f"its outputs: {', '.join(outputs)}"
            )
        if given_names.count(name) > 1:
            raise ValueError(f"--output {name}=... is given more than once")
    columns, unmapped = [], []
    for name in outputs:
        if name in given_names:
            columns.append(given[:, given_names.index(name)])
        elif name in labels:
            columns.append(torch.tensor([float(lab == name) for lab in labels]))
        else:
            unmapped.append(name)
    if unmapped:
        example = unmapped[0]
        raise ValueError(
            f"classifier output(s) {', '.join(repr(n) for n in unmapped)} match no dataset "
            f"label ({', '.join(labels)}); map each with --output, e.g. "
            f"--output '{example}={'|'.join(labels[:2])}'"
        )
    matrix = torch.stack(columns, 1) if columns else torch.zeros(len(labels), 0)
    exclusive = not specs and outputs == labels and head != "sigmoid"
    return OutputMapping(outputs, labels, matrix, exclusive)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, bs: int = 32) -> torch.Tensor:
    return torch.cat([fn(uint8_to_model(x[i : i + bs])) for i in range(0, len(x), bs)])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def paired(a_name: str, a: list[float], b_name: str, b: list[float], what: str) -> dict:
    """Paired comparison of per-image IoUs ``b`` against ``a`` (Wilcoxon signed-rank)."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, float), np.asarray(b, float)
    return {
        "what": what,
        "a": a_name,
        "b": b_name,
        "n": int(len(x)),
        "mean_difference_b_minus_a": float((y - x).mean()),
        "b_better_count": int((y > x).sum()),
        "wilcoxon_p": float(wilcoxon(x, y).pvalue) if np.any(x != y) else 1.0,
    }


@torch.no_grad()
def measure(
    classifier: nn.Module,
    autoencoders: dict[str, Any],
    dataset: MaskedCXRDataset,
    iou_target: str = "COVID-19",
    n_iou: int = 80,
    strategy: str = "fast",
    outputs: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
) -> dict[str, Any]:
    """Measure classifier and autoencoders on ``dataset`` (normally the val split).

    Args:
        classifier: a probability classifier with ``targets`` (its output names).
        autoencoders: name -> autoencoder (``encode``/``decode``).
        dataset: the held-out split.
        iou_target: classifier output explained for the IoU comparison; its images are
            those whose label makes it positive and that have a non-empty infection mask.
        n_iou: mask-bearing positives used for the IoU (first ``n_iou`` in a seeded order).
        strategy: Latent Shift search strategy for the maps.
        outputs: ``NAME=LABEL|LABEL`` per classifier output (see :func:`output_mapping`).
        modes: Latent Shift frame modes to measure, on the same images.

    Returns:
        A JSON-ready dict: ``outputs`` (the label→output mapping), ``classifier`` metrics
        and, per autoencoder, ``mae``, ``ssim``, ``edge_ratio``, ``effect`` (per output)
        and ``iou`` (target, images, random-map reference and per mode: mean, sd, lower
        goal reached, evaluations); ``iou_paired``: paired tests between modes (per
        autoencoder) and between the first two autoencoders (per mode).
    """
    from .. import LatentShift

    targets_attr = getattr(classifier, "targets", None)
    if targets_attr is None:
        raise ValueError("the classifier has no targets (output names)")
    mapping = output_mapping(
        list(targets_attr), dataset.labels, outputs, getattr(classifier, "head", None)
    )
    if iou_target not in mapping.names:
        raise ValueError(
            f"IoU target {iou_target!r} is not a classifier output ({', '.join(mapping.names)})"
        )
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes must be among {', '.join(MODES)}, got {list(modes)}")

    images, targets = dataset.cached()
    names = mapping.names
    is_pos = mapping.positives(targets).numpy()
    probs = _batched(classifier, images)
    out: dict[str, Any] = {
        "data": {
            "source": str(dataset.source),
            "split": dataset.split,
            "n": len(dataset),
            "labels": list(dataset.labels),
        },
        "outputs": {n: mapping.positive_labels(n) for n in names},  # output -> labels
        "scoring": "exclusive classes" if mapping.exclusive else "per output (multi-label)",
        "classifier": {
            "name": getattr(classifier, "name", None),
            "sha256": getattr(classifier, "weights_sha256", None),
            **classifier_metrics(
                probs, targets, names, None if mapping.exclusive else mapping.matrix
            ),
        },
        "autoencoders": {},
    }
    ti = names.index(iou_target)
    pos = [i for i in range(len(dataset)) if is_pos[i, ti]]
    rng = np.random.default_rng(0)
    pos = [pos[j] for j in rng.permutation(len(pos))]
    iou_items = []
    for i in pos:
        m = dataset.load_mask(i)
        if m is not None and m.any():
            iou_items.append((i, m))
        if len(iou_items) >= n_iou:
            break
    random_ref = [float(m.mean()) / (2 - float(m.mean())) for _, m in iou_items]
    for name, ae in autoencoders.items():
        t0 = time.time()
        abs_err, n_px = 0.0, 0
        recon_probs, recons = [], []
        for s in range(0, len(images), 32):
            x = uint8_to_model(images[s : s + 32])
            r = ae.decode(ae.encode(x))
            abs_err += float((r - x).abs().sum())
            n_px += x.numel()
            recon_probs.append(classifier(r))
            recons.append(r)
        rp = torch.cat(recon_probs)
        effect = {}
        for k, t in enumerate(names):
            p = is_pos[:, k]
            effect[t] = {
                "positive_labels": mapping.positive_labels(t),
                "n_pos": int(p.sum()),
                "n_neg": int((~p).sum()),
                "pos_f_x": float(probs[p, k].mean()) if p.any() else float("nan"),
                "pos_f_recon": float(rp[p, k].mean()) if p.any() else float("nan"),
                "neg_f_x": float(probs[~p, k].mean()) if (~p).any() else float("nan"),
                "neg_f_recon": float(rp[~p, k].mean()) if (~p).any() else float("nan"),
                "auc_x": roc_auc(probs[:, k].numpy(), p),
                "auc_recon": roc_auc(rp[:, k].numpy(), p),
            }
            e = effect[t]
            e["pos_change"] = e["pos_f_recon"] - e["pos_f_x"]
            e["neg_change"] = e["neg_f_recon"] - e["neg_f_x"]
        real = reconstruction_realism(torch.cat(recons), uint8_to_model(images))
        del recons
        per_mode, search = {}, None
        for mode in modes:
            ls = LatentShift(classifier, ae, mode=mode, strategy=strategy)
            search = asdict(ls.config)  # the engine's defaults when this ran
            ious, evals, reached, refused = [], [], 0, 0
            for s in range(0, len(iou_items), 8):
                chunk = iou_items[s : s + 8]
                x = torch.stack([uint8_to_model(images[i]) for i, _ in chunk])
                with torch.enable_grad():
                    exp = ls.explain(x, target=iou_target)
                maps = exp.heatmap("max")
                for j, (_, m) in enumerate(chunk):
                    ious.append(iou_top_p(maps[j].numpy(), m))
                    evals.append(exp.cost.search_evaluations[j] + exp.cost.sweep_evaluations[j])
                    reached += int(exp.stop_reasons[j]["lower"].reached)
                    refused += int(exp.ood is not None and exp.ood.flagged[j])
            per_mode[mode] = {
                "n": len(ious),
                "mean": _mean(ious),
                "sd": float(np.std(ious)) if ious else float("nan"),
                "lower_goal_reached": reached,
                "ood_flagged": refused,
                "evaluations_median": float(np.median(evals)) if evals else float("nan"),
                "evaluations_total": int(sum(evals)),
                "per_item": [float(v) for v in ious],
            }
            log.info(
                "%s %s: IoU %.3f, lower goal %d/%d",
                name,
                mode,
                per_mode[mode]["mean"],
                reached,
                len(ious),
            )
        out["autoencoders"][name] = {
            "sha256": getattr(ae, "weights_sha256", None),
            "latent_shape": list(getattr(ae, "latent_shape", ()) or []),
            "mae": abs_err / n_px,
            "ssim": real["ssim"],
            "edge_ratio": real["edge_ratio"],
            "effect": effect,
            "iou": {
                "target": iou_target,
                "positive_labels": mapping.positive_labels(iou_target),
                "n": len(iou_items),
                "items": [str(dataset.records[i].image.name) for i, _ in iou_items],
                "random_map_mean": _mean(random_ref),
                "strategy": strategy,
                "search": search,
                "modes": per_mode,
            },
            "seconds": time.time() - t0,
        }
        log.info("%s: MAE %.1f, SSIM %.3f, edge ratio %.3f", name, abs_err / n_px, *real.values())
    tests = []
    aes = out["autoencoders"]
    if len(modes) >= 2 and iou_items:  # the two modes of each autoencoder, same images
        for name, a in aes.items():
            m = a["iou"]["modes"]
            tests.append(
                paired(modes[0], m[modes[0]]["per_item"], modes[1], m[modes[1]]["per_item"], name)
            )
    names_ae = list(aes)
    if len(names_ae) >= 2 and iou_items:  # the first two autoencoders, per mode
        a, b = (aes[n]["iou"]["modes"] for n in names_ae[:2])
        for mode in modes:
            tests.append(
                paired(names_ae[0], a[mode]["per_item"], names_ae[1], b[mode]["per_item"], mode)
            )
    out["iou_paired"] = tests
    return out


def _f(v: float, fmt: str = ".3f") -> str:
    return "–" if v != v else format(v, fmt)  # NaN -> dash


def _search_line(search: dict[str, Any] | None) -> str:
    if not search:
        return ""
    return (
        f", lower goal {search['lower_change']:g} ({search['threshold_mode']}), "
        f"image-change stop {search['max_image_change'] or 'off'}, |λ| ≤ {search['max_lambda']:g}"
    )


def markdown(result: dict[str, Any]) -> str:
    """The measured numbers as Markdown (for docs/model-card.md): a line on the classifier,
    one table of autoencoders × frame modes, the paired tests, and per autoencoder the
    effect on predictions (Table K.1) per classifier output."""
    c = result["classifier"]
    aucs = ", ".join(f"{t} {_f(v)}" for t, v in c["auc"].items())
    kind = result.get("scoring", "exclusive classes")
    calib = "top-label ECE" if kind == "exclusive classes" else "mean per-output ECE"
    first = next(iter(result["autoencoders"].values()), None)
    lines = [
        f"Classifier {c.get('name') or '?'} ({kind}; n = {result['data']['n']}): AUC {aucs}; "
        f"accuracy {c['accuracy']:.3f}, NLL {c['nll']:.3f}, {calib} {c['ece']:.3f}.",
        "",
    ]
    if first is not None:
        iou = first["iou"]
        lines += [
            f"IoU: latentshift-max map for {iou['target']} vs infection mask (top-p rule) on "
            f"{iou['n']} {' / '.join(iou['positive_labels'])} images with masks; "
            f"strategy {iou['strategy']}{_search_line(iou.get('search'))}.",
            "",
        ]
    lines += [
        "| autoencoder | latent | MAE | SSIM | fine-edge ratio | mode | IoU (n) | random map "
        "| lower goal reached | evaluations (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in result["autoencoders"].items():
        lat = "×".join(str(v) for v in a["latent_shape"]) or "?"
        for mode, m in a["iou"]["modes"].items():
            lines.append(
                f"| {name} | {lat} | {a['mae']:.1f} | {_f(a['ssim'])} | {_f(a['edge_ratio'])} "
                f"| {mode} | {_f(m['mean'])} ± {_f(m['sd'])} ({m['n']}) "
                f"| {_f(a['iou']['random_map_mean'])} | {m['lower_goal_reached']}/{m['n']} "
                f"| {_f(m['evaluations_median'], 'g')} |"
            )
    tests = result.get("iou_paired", [])
    if tests:
        lines.append("")
    for d in tests:
        lines.append(
            f"- Paired IoU ({d['what']}), {d['b']} − {d['a']}: "
            f"{d['mean_difference_b_minus_a']:+.3f} ({d['b']} higher on "
            f"{d['b_better_count']}/{d['n']} images; Wilcoxon p = {d['wilcoxon_p']:.3g})."
        )
    for name, a in result["autoencoders"].items():
        lines += [
            "",
            f"Effect of {name} on predictions (mean probability of each output; positives: "
            "images with the listed labels):",
            "",
            "| output (positive labels) | positives f(x) | f(D(E(x))) | change | negatives f(x) "
            "| f(D(E(x))) | change | AUC x | AUC recon |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t, e in a["effect"].items():
            labels = " \\| ".join(e.get("positive_labels", [t]))
            lines.append(
                f"| {t} ({labels}; n+ {e['n_pos']}) | {_f(e['pos_f_x'])} "
                f"| {_f(e['pos_f_recon'])} | {_f(e['pos_change'], '+.3f')} "
                f"| {_f(e['neg_f_x'])} | {_f(e['neg_f_recon'])} | {_f(e['neg_change'], '+.3f')} "
                f"| {_f(e['auc_x'])} | {_f(e['auc_recon'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: measure models on a dataset split and write JSON + Markdown."""
    from .registry import get_autoencoder, get_classifier

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset CSV or folder")
    p.add_argument("--classifier", default="cxr-classifier")
    p.add_argument(
        "--output",
        action="append",
        metavar="NAME=LABEL|LABEL",
        help="classifier output NAME is positive for these dataset labels (repeatable; "
        "default: an output named like a label maps to it)",
    )
    p.add_argument("--ae", action="append", help="autoencoder name or path (repeatable)")
    p.add_argument(
        "--mode",
        choices=[*MODES, "both"],
        default="both",
        help="Latent Shift frame mode(s) for the IoU (default both)",
    )
    p.add_argument("--iou-target", default="COVID-19", help="classifier output for the IoU")
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
    ds = MaskedCXRDataset(args.data, split=args.split, seed=args.seed)
    try:  # fail in one line, before any image is decoded
        output_mapping(clf.targets, ds.labels, args.output, getattr(clf, "head", None))
        if args.iou_target not in clf.targets:
            raise ValueError(
                f"--iou-target {args.iou_target!r} is not a classifier output "
                f"({', '.join(clf.targets)})"
            )
    except ValueError as e:
        raise SystemExit(f"gifsplanation.models.validation: error: {e}") from None
    aes = {name: get_autoencoder(name) for name in (args.ae or ["cxr-ae"])}
    modes = MODES if args.mode == "both" else (args.mode,)
    result = measure(
        clf, aes, ds, iou_target=args.iou_target, n_iou=args.n_iou, outputs=args.output,
        modes=modes,
    )  # fmt: skip
    result["command"] = "python -m gifsplanation.models.validation " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    write_json(args.out, result)
    md = Path(args.out).with_suffix(".md")
    write_text(md, markdown(result))
    print(markdown(result))  # noqa: T201 - command-line output


if __name__ == "__main__":
    main()
