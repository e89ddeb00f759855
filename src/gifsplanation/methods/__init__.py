"""Attribution methods behind one Captum-style call, and a name → method registry.

Every method answers ``attribute(inputs (B,1,H,W), target) -> (B,1,H,W)`` non-negative maps
of the *same* quantity: the classifier's probability for the target (a sigmoid is applied
to logit models only). Names (the command line's ``--method`` choices):

* ``latentshift-max|mean|minmax|interval`` — Latent Shift maps (this package's engine);
  ``latentshift-endpoint`` — the paper code's variant (|x_0 − x_λmin|).
* ``grad`` — |∂f/∂x| (Captum ``Saliency``).
* ``guided`` — guided backprop (Captum ``GuidedBackprop``; guides ``nn.ReLU`` modules only).
* ``integrated`` — integrated gradients from a zero baseline (Captum, batched internally).
* ``iterativedelete`` — Bordes et al. 2018: delete the most salient pixels, re-attribute.
* ``random`` — uniform noise, the chance baseline.

Example:
    >>> from gifsplanation.methods import get_method, METHODS
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> "grad" in METHODS and "latentshift-max" in METHODS
    True
    >>> get_method("grad", classifier=clf, autoencoder=ae).attribute(data.positive(3)).shape
    torch.Size([3, 1, 32, 32])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from .base import AttributionMethod, ProbabilityModule, smooth_maps
from .gradient import Gradient
from .guided import GuidedBackprop
from .integrated import IntegratedGradients
from .iterative_delete import IterativeDelete
from .latent_shift import LatentShiftMap
from .random_map import RandomMap

MethodFactory = Callable[..., AttributionMethod]

#: Method name -> factory ``(classifier, autoencoder, **options) -> AttributionMethod``.
METHODS: dict[str, MethodFactory] = {
    **{
        f"latentshift-{h}": functools.partial(LatentShiftMap, heatmap=h)
        for h in ("max", "mean", "minmax", "interval", "endpoint")
    },
    "grad": Gradient,
    "guided": GuidedBackprop,
    "integrated": IntegratedGradients,
    "iterativedelete": IterativeDelete,
    "random": RandomMap,
}

#: The methods of the paper's Table 1 plus the random baseline, in table order.
DEFAULT_METHODS: list[str] = [
    "random",
    "grad",
    "guided",
    "integrated",
    "iterativedelete",
    "latentshift-max",
    "latentshift-mean",
    "latentshift-minmax",
    "latentshift-interval",
]


def get_method(
    name: str, classifier: nn.Module, autoencoder: Any = None, **options: Any
) -> AttributionMethod:
    """Build the attribution method called ``name``.

    Args:
        name: a key of :data:`METHODS` (e.g. ``"grad"``, ``"latentshift-max"``).
        classifier: any ``nn.Module`` ``(B, C, H, W) -> (B, n_targets)`` declaring
            ``output_kind`` (or pass ``output="probability"|"logit"``).
        autoencoder: needed by ``latentshift-*`` methods, ignored by the others.
        **options: method options (``smooth_sigma``, ``n_steps``, ``n_iter``, ``seed``, the
            Latent Shift engine's ``strategy``/``n_frames``/``lower_change`` ...).

    Returns:
        An :class:`AttributionMethod` with ``attribute(inputs, target)``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    try:
        factory = METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown attribution method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None
    return factory(classifier, autoencoder, **options)


__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "AttributionMethod",
    "Gradient",
    "GuidedBackprop",
    "IntegratedGradients",
    "IterativeDelete",
    "LatentShiftMap",
    "ProbabilityModule",
    "RandomMap",
    "get_method",
    "smooth_maps",
]
