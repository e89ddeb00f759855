"""Models: the registry (bundled CXR models and the TorchXRayVision zoo), the demo input,
our architectures, checkpoints and training.

Importing the package is cheap: the names below load their module on first use, so the
catalogue (:func:`list_models`, :func:`get_entry`, :class:`ModelEntry`) is read without
PyTorch; the loaders and architectures import it.

Example:
    >>> from gifsplanation.models import list_models
    >>> "xrv-densenet121-all" in [e.name for e in list_models("classifier")]
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CXRAutoencoder": ".architectures",
    "CXRClassifier": ".architectures",
    "elastic_loss": ".architectures",
    "DEFAULT_AUTOENCODER": ".catalog",
    "DEFAULT_CLASSIFIER": ".catalog",
    "ModelEntry": ".catalog",
    "UnknownModelError": ".catalog",
    "get_entry": ".catalog",
    "list_models": ".catalog",
    "demo_image": ".demo",
    "get_autoencoder": ".registry",
    "get_classifier": ".registry",
    "WeightsUnavailableError": ".xrv",
}
"""Public name -> the module that defines it (imported on first access)."""

__all__ = [
    "DEFAULT_AUTOENCODER",
    "DEFAULT_CLASSIFIER",
    "CXRAutoencoder",
    "CXRClassifier",
    "ModelEntry",
    "UnknownModelError",
    "WeightsUnavailableError",
    "demo_image",
    "elastic_loss",
    "get_autoencoder",
    "get_classifier",
    "get_entry",
    "list_models",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .architectures import CXRAutoencoder, CXRClassifier, elastic_loss
    from .catalog import (
        DEFAULT_AUTOENCODER,
        DEFAULT_CLASSIFIER,
        ModelEntry,
        UnknownModelError,
        get_entry,
        list_models,
    )
    from .demo import demo_image
    from .registry import get_autoencoder, get_classifier
    from .xrv import WeightsUnavailableError


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
