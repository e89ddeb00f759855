"""The Latent Shift engine options of the experiments: one record, used everywhere.

Every experiment that builds a :class:`~gifsplanation.LatentShift` (``iou``,
``randomization``, ``robustness``, ``counterfactuals``) takes its options from one
:class:`EngineOptions`: the command line fills it (``gifsplanation evaluate ... --mode
--strategy --frames --batch-size --lower-change --upper-change --threshold-mode
--max-lambda --max-image-change --lambda-range --ood``), :meth:`EngineOptions.kwargs`
turns it into ``LatentShift`` keyword arguments (also passed through
``get_method("latentshift-...", **kwargs)``), and :meth:`EngineOptions.record` is what the
run's manifest stores — every setting, the defaults included, so a number can be traced to
the exact search that produced it.

``mode="both"`` runs each experiment in residual *and* reconstruction mode on the same
images, so the two can be compared with paired tests.

Example:
    >>> opts = EngineOptions(max_lambda=1000)
    >>> opts.kwargs()["max_lambda"], opts.kwargs()["mode"]
    (1000.0, 'residual')
    >>> EngineOptions(mode="both").modes
    ('residual', 'reconstruction')
    >>> rec = opts.record(); rec["max_lambda"], rec["rtol"], rec["pixel_range"]
    (1000.0, 0.05, [-1024.0, 1024.0])
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.latent_shift import FRAME_MODES, OOD_POLICIES, PIXEL_RANGE
from .._core.search import STRATEGIES, SearchConfig

log = logging.getLogger(__name__)

MODE_CHOICES: tuple[str, ...] = (*FRAME_MODES, "both")
"""Values of ``--mode``: one frame mode, or ``both`` (every mode on the same images)."""

#: Separates a method's name from its frame mode when one run compares modes
#: (``latentshift-max@reconstruction``).
MODE_SEPARATOR = "@"


@dataclass(frozen=True)
class EngineOptions:
    """Every option of the Latent Shift engine an experiment can set.

    Args:
        mode: ``"residual"`` (default; frames x + D(z₀+λdz) − D(z₀)), ``"reconstruction"``
            (the paper's D(z₀+λdz)) or ``"both"`` (each experiment runs both on the same
            images).
        strategy: λ search, ``"fast"`` or ``"paper"``.
        n_frames: frames in the sweep, λ = 0 included.
        batch_size: images per decoder+classifier call.
        lower_change, upper_change, threshold_mode, max_lambda, max_image_change,
        lambda_range: the :class:`~gifsplanation.SearchConfig` fields of the same names
            (``upper_change``/``max_image_change`` ``None`` disable that rule).
        ood: what the engine does with inputs its out-of-distribution gate flags. The
            experiments default to ``"warn"`` (explain every drawn image and record the
            verdict), so a refusal never silently turns into an all-zero map that is then
            scored; ``"refuse"`` is the engine's default for users.

    Raises:
        ValueError: for an unknown mode, strategy or OOD policy, or search settings
            :class:`~gifsplanation.SearchConfig` rejects.
    """

    mode: str = "residual"
    strategy: str = "fast"
    n_frames: int = 10
    batch_size: int = 16
    lower_change: float = 0.3
    upper_change: float | None = 0.05
    threshold_mode: str = "relative"
    max_lambda: float = 10000.0
    max_image_change: float | None = SearchConfig.max_image_change
    lambda_range: tuple[float, float] | None = None
    ood: str = "warn"

    def __post_init__(self) -> None:
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"mode must be one of {', '.join(MODE_CHOICES)}, got {self.mode!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.ood not in OOD_POLICIES:
            raise ValueError(f"ood must be one of {', '.join(OOD_POLICIES)}, got {self.ood!r}")
        if self.n_frames < 3:
            raise ValueError(f"n_frames must be >= 3 (λ_lo, 0, λ_hi), got {self.n_frames}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        # Normalise numbers (1000 and 1000.0 are one setting) and let SearchConfig check them.
        config = self.search_config()
        for name in (
            "lower_change",
            "upper_change",
            "max_lambda",
            "max_image_change",
            "lambda_range",
        ):
            object.__setattr__(self, name, getattr(config, name))
        object.__setattr__(self, "n_frames", int(self.n_frames))
        object.__setattr__(self, "batch_size", int(self.batch_size))

    @property
    def modes(self) -> tuple[str, ...]:
        """The frame modes this run uses, in order."""
        return FRAME_MODES if self.mode == "both" else (self.mode,)

    def search_config(self) -> SearchConfig:
        """The :class:`~gifsplanation.SearchConfig` these options give (rtol/ftol default)."""
        return SearchConfig(
            lower_change=float(self.lower_change),
            upper_change=None if self.upper_change is None else float(self.upper_change),
            threshold_mode=self.threshold_mode,  # type: ignore[arg-type]
            max_lambda=float(self.max_lambda),
            max_image_change=(
                None if self.max_image_change is None else float(self.max_image_change)
            ),
            lambda_range=self.lambda_range,
        )

    def kwargs(self, mode: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :class:`~gifsplanation.LatentShift` (and of
        ``get_method("latentshift-...")``) for one frame mode (default: the only one)."""
        if mode is None:
            if len(self.modes) != 1:
                raise ValueError("mode='both': pass the frame mode to build an engine for")
            mode = self.modes[0]
        if mode not in self.modes:
            raise ValueError(f"frame mode {mode!r} is not among this run's {self.modes}")
        return {
            "mode": mode,
            "strategy": self.strategy,
            "n_frames": self.n_frames,
            "batch_size": self.batch_size,
            "ood": self.ood,
            "lower_change": self.lower_change,
            "upper_change": self.upper_change,
            "threshold_mode": self.threshold_mode,
            "max_lambda": self.max_lambda,
            "max_image_change": self.max_image_change,
            "lambda_range": self.lambda_range,
        }

    def record(self) -> dict[str, Any]:
        """Every setting, JSON-ready: these options, the search tolerances and the pixel
        range the engine uses by default (not settable from the command line)."""
        config = dataclasses.asdict(self.search_config())
        rec: dict[str, Any] = {
            "mode": self.mode,
            "modes": list(self.modes),
            "strategy": self.strategy,
            "n_frames": self.n_frames,
            "batch_size": self.batch_size,
            "ood": self.ood,
            **config,
            "pixel_range": list(PIXEL_RANGE),
        }
        if rec["lambda_range"] is not None:
            rec["lambda_range"] = list(rec["lambda_range"])
        return rec

    def describe(self) -> str:
        """One line for a results table."""
        lr = self.lambda_range
        search = (
            f"fixed λ range [{lr[0]:g}, {lr[1]:g}]"
            if lr is not None
            else f"|λ| ≤ {self.max_lambda:g}, {self.threshold_mode} goals "
            f"−{self.lower_change:g} / "
            + ("off" if self.upper_change is None else f"+{self.upper_change:g}")
            + ", image-change stop "
            + ("off" if self.max_image_change is None else f"{self.max_image_change:g}")
        )
        return (
            f"Latent Shift engine: mode {self.mode}, {self.strategy} search, {search}, "
            f"{self.n_frames} frames, OOD gate {self.ood}"
        )

    def variant(self, method: str, mode: str) -> str:
        """The name of ``method`` run in frame ``mode``: the method itself when this run
        has one mode, ``method@mode`` when it compares modes."""
        return method if len(self.modes) == 1 else f"{method}{MODE_SEPARATOR}{mode}"


def split_variant(name: str) -> tuple[str, str | None]:
    """``("latentshift-max", "reconstruction")`` for ``"latentshift-max@reconstruction"``;
    ``(name, None)`` for a name without a mode."""
    base, sep, mode = name.partition(MODE_SEPARATOR)
    return (base, mode) if sep else (name, None)


def parse_lambda_range(text: str | None) -> tuple[float, float] | None:
    """``"-500,0"`` → ``(-500.0, 0.0)``; empty or ``None`` → ``None`` (search).

    Raises:
        ValueError: not two numbers separated by a comma.
    """
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--lambda-range {text!r}: expected two numbers LO,HI with LO <= 0 <= HI, e.g. -1000,0"
        ) from None
    return lo, hi


def check_resume(out: Path, experiment: str, engine: dict[str, Any] | None) -> None:
    """Refuse to write a run into a folder that holds the same experiment run with other
    engine options: its tables would be replaced by numbers from a different search.

    Raises:
        ValueError: naming the settings that differ and the fix (another ``--out``).
    """
    path = Path(out) / "manifest.json"
    if engine is None or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return
    if old.get("experiment") != experiment:
        return
    if "engine" in old and old["engine"] is None:
        return  # that run built no engine (e.g. only gradient methods)
    previous = old.get("engine")
    if previous is None:
        log.warning(
            "%s has no engine record (written before engine options were recorded); "
            "its tables will be replaced",
            path,
        )
        return
    diff = [
        f"{k} {previous.get(k)!r} → {engine.get(k)!r}"
        for k in sorted(set(previous) | set(engine))
        if previous.get(k) != engine.get(k)
    ]
    if diff:
        raise ValueError(
            f"{out} holds a {experiment} run with other Latent Shift engine options "
            f"({'; '.join(diff)}); results of different searches are never mixed: write "
            "this run to another --out (or delete the folder)"
        )
