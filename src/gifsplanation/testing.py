"""Tiny models trained in seconds, for tests, doctests and examples.

Random-weight models are poor test subjects (their gradients are ~0), so this module
provides a small convolutional autoencoder and a classifier trained on a synthetic task
whose answer is known: an image is positive when it contains a bright blob, and the blob's
disc is the ground-truth mask. Images are 1×32×32 in TorchXRayVision's [−1024, 1024]
convention. The seed-0 models ship as weights (``weights/tiny-blob.pt``, 70 KB, written by
``python -m gifsplanation.testing``), so tests load them instead of training; other seeds
are trained on first use (a few seconds). ``tiny_models()`` caches per process.

Example:
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> x, y, mask = data.batch(4)
    >>> clf(x).shape, ae.decode(ae.encode(x)).shape
    (torch.Size([4, 1]), torch.Size([4, 1, 32, 32]))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SIZE = 32


@dataclass
class BlobData:
    """Generator of synthetic CXR-like images with an optional bright blob."""

    size: int = SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def batch(
        self, n: int, positive: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` images ``(n,1,S,S)``, labels ``(n,)`` and blob masks ``(n,S,S)`` (bool).

        ``positive=None`` draws labels at random; ``True``/``False`` forces them.
        """
        g, s = self.generator, self.size
        noise = torch.randn(n, 1, s // 4, s // 4, generator=g)
        background = F.interpolate(noise, size=(s, s), mode="bilinear", align_corners=False)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        vignette = -((yy - s / 2) ** 2 + (xx - s / 2) ** 2) / (s / 2) ** 2
        images = 250 * background + 300 * vignette - 200
        if positive is None:
            labels = torch.rand(n, generator=g) < 0.5
        else:
            labels = torch.full((n,), positive)
        centers = torch.randint(8, s - 8, (n, 2), generator=g)
        d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (
            xx[None] - centers[:, 1, None, None]
        ) ** 2
        bump = torch.exp(-d2 / (2 * 2.5**2))
        masks = (bump > 0.3) & labels[:, None, None]
        images = images + 900 * bump[:, None] * labels[:, None, None, None]
        return images.clamp(-1024, 1024), labels.float(), masks

    def positive(self, n: int) -> torch.Tensor:
        """``n`` positive images only."""
        return self.batch(n, positive=True)[0]


class TinyAutoencoder(nn.Module):
    """A 2-level convolutional autoencoder with a spatial latent (8×8×8 at 32²)."""

    def __init__(self, width: int = 16, latent: int = 8) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(width, latent, 3, 2, 1),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent, width, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x / 1024)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z) * 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class TinyClassifier(nn.Module):
    """A small CNN returning the probability that a blob is present."""

    output_kind = "probability"
    targets = ["blob"]

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 5, 1, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def train_tiny_autoencoder(data: BlobData, steps: int = 400, seed: int = 0) -> TinyAutoencoder:
    torch.manual_seed(seed)
    ae = TinyAutoencoder()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(steps):
        x, _, _ = data.batch(32)
        loss = F.mse_loss(ae(x) / 1024, x / 1024)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


def train_tiny_classifier(data: BlobData, steps: int = 250, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    clf = TinyClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y, _ = data.batch(32)
        # Label smoothing keeps the outputs off saturation, where gradients vanish.
        loss = F.binary_cross_entropy_with_logits(clf.logits(x)[:, 0], 0.05 + 0.9 * y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


TINY_WEIGHTS = Path(__file__).parent / "weights" / "tiny-blob.pt"
"""The shipped seed-0 tiny models (state dicts; loaded with ``weights_only=True``)."""


def train_tiny_models(seed: int = 0) -> tuple[TinyClassifier, TinyAutoencoder]:
    """Train the tiny classifier and autoencoder for ``seed`` (a few seconds on a CPU)."""
    with torch.random.fork_rng():
        train = BlobData(seed=seed + 1000)
        ae = train_tiny_autoencoder(train, seed=seed)
        clf = train_tiny_classifier(train, seed=seed)
    return clf, ae


def save_tiny_weights(path: Path = TINY_WEIGHTS) -> Path:
    """Train the seed-0 tiny models and store their state dicts at ``path``."""
    clf, ae = train_tiny_models(0)
    torch.save({"classifier": clf.state_dict(), "autoencoder": ae.state_dict()}, path)
    return path


@functools.lru_cache(maxsize=4)
def tiny_models(seed: int = 0) -> tuple[TinyClassifier, TinyAutoencoder, BlobData]:
    """Return ``(classifier, autoencoder, data)``, cached per process and seed.

    Seed 0 loads the shipped weights (no training); other seeds train. ``data`` is a
    fresh :class:`BlobData` with a different seed from the training data.
    """
    if seed == 0 and TINY_WEIGHTS.is_file():
        state = torch.load(TINY_WEIGHTS, map_location="cpu", weights_only=True)
        clf, ae = TinyClassifier(), TinyAutoencoder()
        clf.load_state_dict(state["classifier"])
        ae.load_state_dict(state["autoencoder"])
        clf.eval(), ae.eval()
    else:
        clf, ae = train_tiny_models(seed)
    for p in (*ae.parameters(), *clf.parameters()):
        p.requires_grad_(False)
    return clf, ae, BlobData(seed=seed)


if __name__ == "__main__":  # python -m gifsplanation.testing: regenerate the shipped weights
    print(save_tiny_weights())
