"""What every experiment is given: the models, the data, the methods, and the run options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._core.adapters import Classifier
from ..methods import DEFAULT_METHODS
from ..runs.provenance import model_identity
from .data import Item, MaskedDataset, select_items
from .engine import EngineOptions, check_resume, split_variant
from .run import Run


@dataclass
class Setup:
    """Models, data and options shared by the experiments.

    Args:
        classifier: any ``nn.Module`` declaring ``output_kind`` (bundled models do).
        autoencoder: needed by Latent Shift methods, ``ae-impact`` and ``counterfactuals``.
        dataset: a :class:`~gifsplanation.datasets.MaskedCXRDataset` or
            :class:`~gifsplanation.evaluate.data.XRVMaskedDataset`.
        out: output folder of the experiment.
        methods: method names (default: :data:`gifsplanation.methods.DEFAULT_METHODS`).
            With ``engine.mode="both"`` each ``latentshift-*`` method becomes one variant
            per frame mode (``latentshift-max@residual``, ``latentshift-max@reconstruction``).
        method_options: per-method keyword options, e.g. ``{"integrated": {"n_steps": 25}}``.
            Latent Shift engine settings do not go here but in ``engine``; the options
            of ``latentshift-*`` methods are filled from it.
        engine: the Latent Shift engine options (:class:`EngineOptions`; default: the
            defaults) of every ``LatentShift`` the experiments build.
        limit: images per target (default 40).
        seed: seed of the image draw and of every random choice (default 0).
        targets: restrict to these classifier targets (default: every target with data).
        progress: show progress bars.
        args: the exact arguments to record in the manifest.
    """

    classifier: nn.Module
    autoencoder: Any
    dataset: MaskedDataset
    out: Path
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    limit: int | None = 40
    seed: int = 0
    targets: list[str] | None = None
    progress: bool = True
    args: dict[str, Any] = field(default_factory=dict)
    engine: EngineOptions = field(default_factory=EngineOptions)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.methods, self.method_options = expand_engine_methods(
            self.methods, self.method_options, self.engine
        )
        self.adapter = Classifier(self.classifier)
        if not self.adapter.targets:
            raise ValueError(
                "the classifier has no target names (targets=[...]); evaluation "
                "matches dataset labels to them"
            )
        self.needs_ae = [m for m in self.methods if m.startswith("latentshift")]
        if self.needs_ae and self.autoencoder is None:
            raise ValueError(f"methods {self.needs_ae} need an autoencoder; pass one or drop them")

    @property
    def classifier_targets(self) -> list[str]:
        return list(self.adapter.targets or [])

    def items(
        self,
        *,
        positives: bool = True,
        need_mask: bool = True,
        seed_offset: int = 0,
        targets: list[str] | None = None,
        required_by: str | None = None,
    ) -> list[Item]:
        """The images an experiment runs on: up to ``limit`` per target, drawn with
        ``seed + seed_offset`` (see :func:`~gifsplanation.evaluate.data.select_items`).

        Args:
            positives: images labelled with the target (``False``: the others).
            need_mask: keep only images with a non-empty mask.
            seed_offset: added to :attr:`seed` (a second draw from the same data).
            targets: restrict to these target names (default :attr:`targets`).
            required_by: the experiment's name; when given, no item at all is a
                ``ValueError`` naming the dataset's labels and the classifier's targets.

        Returns:
            The items, grouped by target in classifier order.
        """
        found = select_items(
            self.dataset,
            self.classifier_targets,
            limit=self.limit,
            seed=self.seed + seed_offset,
            positives=positives,
            need_mask=need_mask,
            targets=self.targets if targets is None else targets,
        )
        if not found and required_by is not None:
            what = "positive" if positives else "negative"
            mask = " with a non-empty mask" if need_mask else ""
            raise ValueError(
                f"{required_by}: no {what} image{mask} for any classifier target; dataset "
                f"labels {sorted(set(self.dataset.labels))}, classifier targets "
                f"{self.classifier_targets}"
            )
        return found

    def mode_of(self, method: str) -> str:
        """The frame mode a method runs in (``""`` for methods without one)."""
        return str(self.method_options.get(method, {}).get("mode", ""))

    def start(
        self, experiment: str, extra: dict[str, Any] | None = None, *, uses_engine: bool = True
    ) -> Run:
        """Open the run folder: manifest + cache keyed by everything results depend on.

        ``uses_engine=False`` for experiments that never build a ``LatentShift`` (their
        manifest says ``"engine": null``). A folder holding the same experiment run with
        other engine options is refused (:func:`~.engine.check_resume`).
        """
        engine = self.engine.record() if uses_engine else None
        check_resume(self.out, experiment, engine)
        size = getattr(self.dataset, "size", None)
        fingerprint = {
            "engine": engine,
            "experiment": experiment,
            "classifier": model_identity(self.classifier, hash_parameters=True),
            "autoencoder": (
                model_identity(self.autoencoder, hash_parameters=True)
                if self.autoencoder is not None
                else None
            ),
            "method_options": self.method_options,
            "size": size,
            "seed": self.seed,
            **(extra or {}),
        }
        args = {
            "methods": self.methods,
            "method_options": self.method_options,
            "limit": self.limit,
            "seed": self.seed,
            "targets": self.targets,
            "engine": engine,
            "dataset": {
                "class": type(self.dataset).__name__,
                "source": str(getattr(self.dataset, "source", "")),
                "split": getattr(self.dataset, "split", None),
                "size": size,
                "n_items": len(self.dataset),
            },
            **self.args,
            **(extra or {}),
        }
        run = Run(self.out, experiment, args, fingerprint, progress=self.progress)
        run.manifest["models"] = {
            "classifier": fingerprint["classifier"],
            "autoencoder": fingerprint["autoencoder"],
        }
        run.write_manifest("running", engine=engine)
        return run

    def predict(self, x: torch.Tensor, model: nn.Module | None = None) -> np.ndarray:
        """Probabilities ``(B, n_targets)`` of the classifier (or of ``model``)."""
        clf = (
            self.adapter
            if model is None
            else Classifier(model, output=self.adapter.output_kind, targets=self.adapter.targets)
        )
        with torch.no_grad():
            return clf(x).detach().cpu().numpy().astype(np.float64)


def expand_engine_methods(
    methods: list[str], options: dict[str, dict[str, Any]], engine: EngineOptions
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``methods`` with each ``latentshift-*`` method once per frame mode of ``engine``
    (:meth:`EngineOptions.variant`), and the options with each of those filled from
    ``engine`` (:meth:`EngineOptions.kwargs`).

    Raises:
        ValueError: ``options`` set an engine setting for a Latent Shift method (it would
            disagree with the recorded ``engine``; pass ``engine=EngineOptions(...)``).
    """
    engine_keys = set(engine.kwargs(engine.modes[0]))
    out_methods: list[str] = []
    out_options = {k: dict(v) for k, v in (options or {}).items()}
    for name in methods:
        base, mode = split_variant(name)
        if not base.startswith("latentshift"):
            out_methods.append(name)
            continue
        own = out_options.pop(name, {})
        clash = sorted(engine_keys & set(own))
        if clash:
            raise ValueError(
                f"method_options[{name!r}] sets engine options {clash}; pass them as "
                "Setup(engine=EngineOptions(...)) so that the manifest records them"
            )
        for m in engine.modes if mode is None else (mode,):
            variant = name if mode is not None else engine.variant(base, m)
            if variant not in out_methods:
                out_methods.append(variant)
                out_options[variant] = {**own, **engine.kwargs(m)}
    return out_methods, out_options
