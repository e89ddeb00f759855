"""The two network families this package trains: a ResNet-style convolutional autoencoder
with a spatial bottleneck and a small ResNet-style classifier, both on 1x224x224 inputs in
TorchXRayVision's [-1024, 1024] convention, both sized to train on a CPU.

Each class is rebuilt from its ``config`` dict alone (stored in every checkpoint), so a
checkpoint file is self-describing. The classifier returns *probabilities*
(``output_kind = "probability"``): a softmax over mutually exclusive targets by default
(``head="softmax"``), or independent sigmoids (``head="sigmoid"``) for multi-label data.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

SCALE = 1024.0  # [-1024, 1024] <-> [-1, 1]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = _bn(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = _bn(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(h)))


class Down(nn.Module):
    """Halve the resolution (strided 3x3 conv) and change the width, then a residual block."""

    def __init__(self, cin: int, cout: int, blocks: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn = _bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*[ResBlock(cout) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.relu(self.bn(self.conv(x))))


class Up(nn.Module):
    """Double the resolution (nearest upsampling + 3x3 conv), then a residual block."""

    def __init__(self, cin: int, cout: int, blocks: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = _bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*[ResBlock(cout) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.blocks(self.relu(self.bn(self.conv(x))))


class CXRAutoencoder(nn.Module):
    """ResNet-style convolutional autoencoder with a spatial bottleneck.

    The encoder is a 4x4 stride-2 stem followed by ``len(channels) - 1`` stride-2 stages
    (so ``len(channels)`` halvings in all); a 1x1 convolution maps the last stage to
    ``latent_channels``. At 224 input, 4 halvings give a 14x14 latent and 5 give 7x7.
    The decoder mirrors it and ends in a transposed 4x4 stride-2 convolution.

    Args:
        channels: widths of the stem and each stage (default ``(16, 32, 64, 128)``).
        latent_channels: channels of the bottleneck (default 16).
        blocks: residual blocks per stage (default 1).
        input_size: the image side the model was trained for (default 224).
        final_upsample: how the decoder's last stage doubles the resolution:
            ``"transposed"`` (default; a 4x4 stride-2 transposed convolution, which leaves
            a faint checkerboard in decoded changes) or ``"resize"`` (nearest upsampling
            followed by a 3x3 convolution, no checkerboard).

    Example:
        >>> ae = CXRAutoencoder(channels=(8, 16), latent_channels=4).eval()
        >>> z = ae.encode(torch.zeros(2, 1, 224, 224)); tuple(z.shape)
        (2, 4, 56, 56)
        >>> tuple(ae.decode(z).shape)
        (2, 1, 224, 224)
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (16, 32, 64, 128),
        latent_channels: int = 16,
        blocks: int = 1,
        input_size: int = 224,
        final_upsample: Literal["transposed", "resize"] = "transposed",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1:
            raise ValueError("channels needs at least one width (the stem)")
        if final_upsample not in ("transposed", "resize"):
            raise ValueError(f"final_upsample must be transposed or resize, got {final_upsample!r}")
        self.config: dict[str, Any] = {
            "channels": list(channels),
            "latent_channels": int(latent_channels),
            "blocks": int(blocks),
            "input_size": int(input_size),
        }
        if final_upsample != "transposed":  # older checkpoints have no such key
            self.config["final_upsample"] = final_upsample
        self.input_size = int(input_size)
        self.downsamplings = len(channels)
        enc: list[nn.Module] = [
            nn.Conv2d(1, channels[0], 4, 2, 1, bias=False),
            _bn(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            enc.append(Down(cin, cout, blocks))
        enc.append(nn.Conv2d(channels[-1], latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [
            nn.Conv2d(latent_channels, channels[-1], 1, bias=False),
            _bn(channels[-1]),
            nn.ReLU(inplace=True),
        ]
        rev = channels[::-1]
        for cin, cout in zip(rev[:-1], rev[1:], strict=True):
            dec.append(Up(cin, cout, blocks))
        if final_upsample == "transposed":
            dec.append(nn.ConvTranspose2d(channels[0], 1, 4, 2, 1))
        else:
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels[0], 1, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latent at ``input_size``."""
        s = self.input_size // 2**self.downsamplings
        return (self.config["latent_channels"], s, s)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B,1,H,W)`` in [-1024, 1024] -> latents ``(B,C,H/2^d,W/2^d)``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return self.encoder(x / SCALE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``(B,1,H,W)`` in [-1024, 1024] (not clamped)."""
        return self.decoder(z) * SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x``: ``decode(encode(x))``."""
        return self.decode(self.encode(x))


def elastic_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Elastic-net reconstruction loss: mean L1 + mean L2, on images scaled to [-1, 1]."""
    d = (recon - x) / SCALE
    return d.abs().mean() + (d * d).mean()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Local SSIM of images in [-1024, 1024] (uniform ``window``, data range 2048),
    ``(B, 1, H', W')``; the mean is the usual SSIM index."""
    a, b = a / (2 * SCALE), b / (2 * SCALE)  # data range 1
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, 1)  # noqa: E731
    ma, mb = pool(a), pool(b)
    va, vb, cov = pool(a * a) - ma**2, pool(b * b) - mb**2, pool(a * b) - ma * mb
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))


def gradient_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |∇recon − ∇x| (finite differences), on images scaled to [-1, 1]."""
    r, t = recon / SCALE, x / SCALE
    dy = (r.diff(dim=-2) - t.diff(dim=-2)).abs().mean()
    dx = (r.diff(dim=-1) - t.diff(dim=-1)).abs().mean()
    return dx + dy


def sharp_loss(
    recon: torch.Tensor, x: torch.Tensor, ssim_weight: float = 0.5, gradient_weight: float = 1.0
) -> torch.Tensor:
    """Elastic loss + ``ssim_weight``·(1 − SSIM) + ``gradient_weight``·gradient loss: the
    extra terms reward edges and local structure, which L1/L2 alone trade for blur."""
    loss = elastic_loss(recon, x)
    if ssim_weight:
        loss = loss + ssim_weight * (1 - ssim_map(recon, x).mean())
    if gradient_weight:
        loss = loss + gradient_weight * gradient_loss(recon, x)
    return loss


class CXRClassifier(nn.Module):
    """A small ResNet-style chest X-ray classifier returning probabilities for named targets.

    The input (1x224x224 in [-1024, 1024]) is average-pooled by ``pool`` first (default 2,
    i.e. the network sees 112x112), which makes CPU training four times cheaper; then a
    stride-2 stem and ``len(channels) - 1`` stride-2 residual stages, global average
    pooling, dropout and a linear layer.

    Args:
        targets: output names (default the COVID-QU-Ex targets).
        channels: widths of the stem and the stages (default ``(16, 32, 64, 128)``).
        blocks: residual blocks per stage (default 1).
        head: ``"softmax"`` (mutually exclusive targets; default), ``"sigmoid"``
            (independent yes/no targets) or ``"regression"`` (each output a quantity in
            [0, 1], such as the share of the lung an infection covers: a sigmoid trained
            on continuous targets, with no operating point).
        pool: input average-pooling factor (default 2).
        temperature: divides the logits before the softmax/sigmoid; fitted after training
            on held-out data for calibration (default 1).
        operating_points: per target, the probability above which the classifier "finds"
            it (chosen on held-out data); default 0.5 for every sigmoid target and
            ``None`` for a softmax head.
        mask_head: add a 1x1 convolution predicting, from the last feature map, where the
            infection is (trained with infection masks as an auxiliary task, so the
            features the targets are read from are about opacities; unused at inference).
        input_size: the image side the model expects (default 224).

    Example:
        >>> clf = CXRClassifier(targets=["a", "b"]).eval()
        >>> p = clf(torch.zeros(3, 1, 224, 224)); tuple(p.shape), clf.output_kind
        ((3, 2), 'probability')
    """

    output_kind = "probability"

    def __init__(
        self,
        targets: list[str] | None = None,
        channels: tuple[int, ...] | list[int] = (16, 32, 64, 128),
        blocks: int = 1,
        head: Literal["softmax", "sigmoid", "regression"] = "softmax",
        pool: int = 2,
        temperature: float = 1.0,
        dropout: float = 0.2,
        input_size: int = 224,
        operating_points: list[float] | None = None,
        mask_head: bool = False,
    ) -> None:
        super().__init__()
        if targets is None:
            targets = ["COVID-19", "Non-COVID pneumonia", "Normal"]
        if head not in ("softmax", "sigmoid", "regression"):
            raise ValueError(f"head must be 'softmax', 'sigmoid' or 'regression', got {head!r}")
        channels = tuple(int(c) for c in channels)
        self.targets = list(targets)
        self.head = head
        self.input_size = int(input_size)
        self.config: dict[str, Any] = {
            "targets": self.targets,
            "channels": list(channels),
            "blocks": int(blocks),
            "head": head,
            "pool": int(pool),
            "temperature": float(temperature),
            "dropout": float(dropout),
            "input_size": int(input_size),
        }
        self.operating_points: list[float] | None = None
        if operating_points is not None:
            self.set_operating_points(operating_points)
        self.pool = int(pool)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        layers: list[nn.Module] = [
            nn.Conv2d(1, channels[0], 3, 2, 1, bias=False),
            _bn(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            layers.append(Down(cin, cout, blocks))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], len(self.targets))
        self.mask_head = nn.Conv2d(channels[-1], 1, 1) if mask_head else None
        if mask_head:
            self.config["mask_head"] = True

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(B, C, h, w)`` the targets are read from."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        x = x / SCALE
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(B, n_targets)`` before temperature and softmax/sigmoid."""
        return self.fc(self.dropout(self.feature_map(x).mean(dim=(2, 3))))

    def logits_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores and the mask head's logits ``(B, 1, h, w)`` (training only)."""
        if self.mask_head is None:
            raise ValueError("this classifier has no mask head (mask_head=False)")
        h = self.feature_map(x)
        return self.fc(self.dropout(h.mean(dim=(2, 3)))), self.mask_head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, n_targets)`` (softmax or sigmoid of logits / temperature;
        a regression head's sigmoid is the predicted quantity in [0, 1])."""
        z = self.logits(x) / self.temperature
        return torch.softmax(z, dim=1) if self.head == "softmax" else torch.sigmoid(z)

    def set_operating_points(self, points: list[float]) -> None:
        """Set each target's operating point (kept in ``config``)."""
        points = [float(p) for p in points]
        if len(points) != len(self.targets) or not all(0 < p < 1 for p in points):
            raise ValueError(
                f"operating_points must be {len(self.targets)} probabilities in (0, 1), "
                f"got {points}"
            )
        self.operating_points = points
        self.config["operating_points"] = points

    def set_temperature(self, t: float) -> None:
        """Set the calibration temperature (kept in ``config`` and the state dict)."""
        self.temperature.fill_(float(t))
        self.config["temperature"] = float(t)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "CXRAutoencoder": CXRAutoencoder,
    "CXRClassifier": CXRClassifier,
}


def n_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
