"""The built-in demo input: a synthetic chest X-ray made by the bundled models.

No real image ships with the package. :func:`demo_image` decodes a stored latent
(``weights/cxr-demo-latent.pt``) with the bundled autoencoder; :func:`make_demo_latent`
makes that latent from the bundled models alone, and :func:`save_demo_latent` stores it
(``scripts/train-bundled-models.sh`` runs it after retraining).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from ..files import write_json, write_torch
from .checkpoint import sha256_file
from .registry import (
    DEFAULT_AUTOENCODER,
    DEFAULT_CLASSIFIER,
    WEIGHTS_DIR,
    get_autoencoder,
    get_classifier,
)

log = logging.getLogger(__name__)

DEMO_LATENT = "cxr-demo-latent.pt"
#: What the demo explains by default: the finding its image was synthesised to show.
DEMO_TARGET = "COVID-19"


def make_demo_latent(target_prob: float = 0.75, max_steps: int = 100) -> torch.Tensor:
    """Synthesise the demo latent from the bundled models (slow on a CPU: up to a minute).

    Starts from the mean latent of the bundled autoencoder's COVID-19 training images (which
    decodes to an average chest the classifier calls negative) and moves it in fixed steps
    (1% of its norm) up the bundled classifier's COVID-19 log-probability until the decoded
    image reaches ``target_prob``: a synthetic positive, derived from no single real image.

    Returns:
        The latent ``(1, C, h, w)`` of the default autoencoder.
    """
    ae = get_autoencoder(DEFAULT_AUTOENCODER)
    clf = get_classifier(DEFAULT_CLASSIFIER)
    z0 = ae.checkpoint_extras.get("mean_latent/COVID-19")
    if z0 is None:
        raise RuntimeError(f"the autoencoder {ae.weights_path} stores no COVID-19 mean latent")
    z0 = z0[None]
    z, step = z0.clone(), 0.01 * float(z0.norm())
    for _ in range(max_steps):
        z.requires_grad_(True)
        p = clf(ae.decode(z).clamp(-1024, 1024))[0, 0]
        if p.item() >= target_prob:
            break
        (g,) = torch.autograd.grad(torch.log(p), z)
        z = (z + step * g / g.norm().clamp_min(1e-12)).detach()
    return z.detach()


def save_demo_latent(path: str | Path | None = None) -> Path:
    """Compute :func:`make_demo_latent` and store it (fp32) with a JSON sidecar, atomically."""
    path = Path(path) if path is not None else WEIGHTS_DIR / DEMO_LATENT
    ae = get_autoencoder(DEFAULT_AUTOENCODER)
    clf = get_classifier(DEFAULT_CLASSIFIER)
    z = make_demo_latent()
    write_torch(path, {"latent": z, "autoencoder_sha256": ae.weights_sha256})
    with torch.no_grad():
        p = clf(ae.decode(z).clamp(-1024, 1024))[0].tolist()
    write_json(
        path.with_suffix(".json"),
        {
            "file": path.name,
            "sha256": sha256_file(path),
            "made_by": "gifsplanation.models.demo.save_demo_latent()",
            "autoencoder": ae.name,
            "autoencoder_sha256": ae.weights_sha256,
            "classifier_sha256": clf.weights_sha256,
            "classifier_probabilities": dict(zip(clf.targets, p, strict=True)),
        },
    )
    return path


@functools.cache
def _demo_cached() -> torch.Tensor:
    ae = get_autoencoder(DEFAULT_AUTOENCODER)
    stored = WEIGHTS_DIR / DEMO_LATENT
    z = None
    if stored.is_file():
        saved = torch.load(stored, map_location="cpu", weights_only=True)
        if saved.get("autoencoder_sha256") == ae.weights_sha256:
            z = saved["latent"].float()
    if z is None:  # weights retrained without a matching demo latent: synthesise it now
        log.info("synthesising the demo latent (no stored one matches %s)", ae.weights_path)
        z = make_demo_latent()
    with torch.no_grad():
        return ae.decode(z).clamp(-1024, 1024)


def demo_image() -> torch.Tensor:
    """A built-in example input, synthesised by the bundled models (never a real image).

    The decoding of a stored latent made by :func:`make_demo_latent`: the bundled
    autoencoder's mean COVID-19 training latent, moved up the bundled classifier's COVID-19
    probability to 0.75.

    Returns:
        A ``(1, 1, 224, 224)`` float tensor in [-1024, 1024].

    Example:
        >>> demo_image().shape  # doctest: +SKIP
        torch.Size([1, 1, 224, 224])
    """
    return _demo_cached().clone()
