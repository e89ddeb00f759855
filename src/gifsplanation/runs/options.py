"""The settings of an explain run, and the engine they build.

:class:`ExplainOptions` holds everything that decides what an explain run writes (engine
options, maps, outputs) plus how it runs (device, batching, progress). Every field is
recorded in ``explanation.json``; :meth:`ExplainOptions.output_settings` are the ones that
change the outputs, and they key the "already finished" check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .._core.heatmaps import HEATMAPS
from .._core.latent_shift import FRAME_MODES, OOD_POLICIES, LatentShift
from .._core.search import STRATEGIES, SearchConfig

RUNTIME_FIELDS = ("force", "progress", "device", "batch_size", "images_per_call", "compile")
"""Options that change how a run goes, never what it writes."""


@dataclass
class ExplainOptions:
    """Settings of an explain run (all of them are recorded in ``explanation.json``).

    Args:
        n_frames: frames in the λ sweep, including λ = 0 (default 10).
        maps: attribution maps to write (keys of :data:`~gifsplanation.HEATMAPS`;
            default ``("max",)``).
        strategy: λ search, ``"fast"`` (default) or ``"paper"``.
        mode: frames, ``"residual"`` (default: the input plus the decoded change) or
            ``"reconstruction"`` (the paper's decoded frames).
        ood: ``"refuse"`` (default) inputs the out-of-distribution gate flags, or
            ``"warn"`` (explain them anyway, with the warning in the JSON and report).
        batch_size: images per decoder+classifier call inside the engine (default 16).
        images_per_call: images explained together per engine call (default 8).
        device: ``"cpu"`` (default) or ``"cuda"``; models and images are moved there.
        seed: seeds torch before the run (the engine is deterministic; recorded).
        force: replace finished outputs, or outputs of another input or other settings.
        size: input size; ``None`` = the classifier's ``input_size`` (else 224).
        voi_lut: apply DICOM VOI LUTs when loading.
        side_by_side: GIF/MP4 show input | frame | change | prediction bar (default True).
        duration_ms: GIF/MP4 frame duration (default 100).
        mp4: also write ``latentshift.mp4`` (default True).
        flow: also write ``flow.png`` (default True).
        progress: show a progress bar (default False; the CLI turns it on).
        search: overrides of :class:`~gifsplanation.SearchConfig` fields, e.g.
            ``{"lower_change": 0.5, "threshold_mode": "absolute", "max_lambda": 1000}``.
        compile: run the engine's frames through ``torch.compile`` (default False; pays
            off on long runs only, see docs/performance.md).

    Example:
        >>> ExplainOptions(n_frames=5, search={"max_lambda": 1000}).output_settings()["search"]
        {'max_lambda': 1000}
    """

    n_frames: int = 10
    maps: tuple[str, ...] = ("max",)
    strategy: str = "fast"
    mode: str = "residual"
    ood: str = "refuse"
    batch_size: int = 16
    images_per_call: int = 8
    device: str = "cpu"
    seed: int = 0
    force: bool = False
    size: int | None = None
    voi_lut: bool = False
    side_by_side: bool = True
    duration_ms: int = 100
    mp4: bool = True
    flow: bool = True
    progress: bool = False
    search: dict[str, Any] = field(default_factory=dict)
    compile: bool = False

    def __post_init__(self) -> None:
        self.maps = tuple(self.maps)
        unknown_search = sorted(set(self.search) - set(SearchConfig.__dataclass_fields__))
        if unknown_search:
            raise ValueError(f"unknown search option(s): {', '.join(unknown_search)}")
        SearchConfig(**self.search)  # validates the values
        unknown = [m for m in self.maps if m not in HEATMAPS]
        if unknown or not self.maps:
            raise ValueError(
                f"unknown map method(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(HEATMAPS)}"
            )
        for name, value, choices in (
            ("strategy", self.strategy, STRATEGIES),
            ("mode", self.mode, FRAME_MODES),
            ("ood", self.ood, OOD_POLICIES),
        ):
            if value not in choices:
                raise ValueError(f"{name} {value!r} is not one of: {', '.join(choices)}")
        if self.n_frames < 3:
            raise ValueError(f"n_frames must be >= 3, got {self.n_frames}")
        if self.images_per_call < 1 or self.batch_size < 1:
            raise ValueError("batch_size and images_per_call must be >= 1")

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what a run writes (everything but runtime knobs)."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}

    def engine(self, classifier: Any, autoencoder: Any) -> LatentShift:
        """The :class:`~gifsplanation.LatentShift` these options describe."""
        return LatentShift(
            classifier,
            autoencoder,
            mode=self.mode,  # type: ignore[arg-type]
            strategy=self.strategy,  # type: ignore[arg-type]
            n_frames=self.n_frames,
            batch_size=self.batch_size,
            ood=self.ood,  # type: ignore[arg-type]
            compile=self.compile,
            **self.search,
        )
