"""Models: the registry (bundled CXR models and the TorchXRayVision zoo), the demo input,
our architectures, checkpoints and training.

Example:
    >>> from gifsplanation.models import list_models
    >>> "xrv-densenet121-all" in [e.name for e in list_models("classifier")]
    True
"""

from .architectures import CXRAutoencoder, CXRClassifier, elastic_loss
from .demo import demo_image
from .registry import (
    DEFAULT_AUTOENCODER,
    DEFAULT_CLASSIFIER,
    ModelEntry,
    UnknownModelError,
    get_autoencoder,
    get_classifier,
    get_entry,
    list_models,
)
from .xrv import WeightsUnavailableError

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
