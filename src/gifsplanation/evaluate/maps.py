"""Compute (or fetch from a run's cache) every method's map for one image.

Latent Shift methods that share engine options share one explanation per image: the λ
search and sweep run once and each ``latentshift-*`` map is a different reduction of the
same frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..methods import AttributionMethod, LatentShiftMap, get_method
from .engine import split_variant
from .run import Run


def build_methods(
    names: Sequence[str],
    classifier: Any,
    autoencoder: Any,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, AttributionMethod]:
    """``{name: method}`` for ``names``; ``options[name]`` are passed to that method.

    A name may carry a frame mode (``latentshift-max@reconstruction``, see
    :meth:`~.engine.EngineOptions.variant`): the method is the part before ``@``, and its
    options (from :attr:`~.common.Setup.method_options`) hold the mode. Latent Shift
    methods need the autoencoder; without one they fail with an error naming the fix.
    """
    options = options or {}
    out: dict[str, AttributionMethod] = {}
    for name in names:
        base, mode = split_variant(name)
        opts = options.get(name, {})
        if mode is not None:
            if opts.get("mode", mode) != mode:
                raise ValueError(f"{name}: its options say mode={opts['mode']!r}")
            opts = {**opts, "mode": mode}
        out[name] = get_method(base, classifier=classifier, autoencoder=autoencoder, **opts)
    return out


def compute_maps(
    methods: dict[str, AttributionMethod],
    image: torch.Tensor,
    target: int,
    *,
    run: Run | None = None,
    key: str = "",
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, Any]]:
    """Maps ``{name: (H, W) float32}`` for one image ``(1, 1, H, W)`` and target index.

    Args:
        methods: from :func:`build_methods`.
        image: the image.
        target: the classifier output to explain.
        run: a :class:`Run` whose cache is read and filled (``None``: no cache).
        key: the cache key of this image (and variant); the method name is appended.

    Returns:
        ``(maps, seconds per method, extras)`` (cache hits report the seconds first spent);
        ``extras["explanation"]`` is the Latent Shift :class:`~gifsplanation.Explanation`
        when one was computed in this call.
    """
    maps: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    extras: dict[str, Any] = {}
    todo: list[str] = []
    timing = (run.get_record(f"{key}__seconds") if run is not None else None) or {}
    for name in methods:
        cached = run.get_array(f"{key}__{name}") if run is not None else None
        if cached is not None:
            maps[name], seconds[name] = cached, float(timing.get(name, float("nan")))
        else:
            todo.append(name)
    shared: dict[tuple, Any] = {}
    for name in todo:
        m = methods[name]
        start = time.perf_counter()
        if isinstance(m, LatentShiftMap):
            sig = tuple(sorted(m.engine_options.items()))
            if sig in shared:
                # Every Latent Shift map costs the explanation it came from.
                start -= shared[sig].cost.seconds
            else:
                shared[sig] = m.explain(image, target)
                extras["explanation"] = shared[sig]
            arr = m.maps_from(shared[sig])
        else:
            arr = m.attribute(image, target)
        maps[name] = arr[0, 0].detach().cpu().numpy().astype(np.float32)
        seconds[name] = time.perf_counter() - start
        if run is not None:
            run.put_array(f"{key}__{name}", maps[name])
    if run is not None and todo:
        run.put_record(f"{key}__seconds", {**timing, **{n: seconds[n] for n in todo}})
    return {n: maps[n] for n in methods}, seconds, extras
