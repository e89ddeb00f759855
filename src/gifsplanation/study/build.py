"""Make a reader study from a CASES.csv: predictions, Method A and Method B visuals, database.

For each case (an image, a target, a ground-truth label) this computes the classifier's
probability for the target, the Method A maps (``grad``, ``guided``, ``integrated`` from
:mod:`gifsplanation.methods`) and the Method B visuals (the ``latentshift-max`` map and the
looping GIF of the same explanation, rendered by :mod:`gifsplanation.render`), writes them
under ``STUDY_DIR/assets/<case id>/`` and records the case in the study's database. Asset
names carry nothing but the random case id and the kind, so readers cannot infer the ground
truth from a URL; the cases are built in a seeded random order (seed and order stored in the
database), so neither file times nor the database's row order follow CASES.csv (which
often lists true positives first).

The study is built in a hidden ``.<name>.partial`` folder next to the destination that
holds a marker file; only a folder with that marker is ever deleted (a leftover of an
interrupted run), anything else with that name is refused.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..files import atomic_path
from ..pixels import to_uint8
from .export import unescape_cell
from .store import StudyStore, check_base_url

log = logging.getLogger(__name__)

METHOD_A = ("grad", "guided", "integrated")
METHOD_B = "latentshift-max"
MAP_SCALE = "p99"
"""The one scaling rule for every study map (Method A and B): each map divided by its own
99th percentile, clipped at 1 (see :func:`gifsplanation.render.colorbar.map_scale`)."""
TRUE_WORDS = {"1", "true", "yes", "y", "positive", "pos", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "negative", "neg", "f"}
PARTIAL_MARKER = ".gifsplanation-study-partial"
"""File that ``create_study`` writes inside its own partial folder (and nowhere else)."""

ImageLoader = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class CaseSpec:
    """One row of CASES.csv: the image, the target and the ground-truth label."""

    image: str
    target: str
    label: str

    @property
    def truth(self) -> bool:
        """Whether the target is present: ``label`` is a yes/no word or 0/1, or else a
        class name that matches the target (case-insensitive)."""
        return parse_truth(self.label, self.target)


def parse_truth(label: str, target: str) -> bool:
    """Read a ground-truth label for ``target``.

    Args:
        label: ``1/0``, ``true/false``, ``yes/no``, ``positive/negative``, or a class name
            (several names may be joined by ``|``).
        target: the case's target.

    Returns:
        Whether the target is present.

    Example:
        >>> parse_truth("1", "COVID-19"), parse_truth("Normal", "COVID-19")
        (True, False)
    """
    text = str(label).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    names = {part.strip() for part in text.split("|")}
    return str(target).strip().lower() in names


def read_cases(path: str | os.PathLike[str], limit: int | None = None) -> list[CaseSpec]:
    """Read CASES.csv (columns ``image``, ``target``, ``label``; extra columns ignored).

    Relative image paths are taken relative to the CSV's folder. A cell that our CSV
    writers protected against spreadsheet formulas (``'=...``) is read back unprotected.

    Raises:
        ValueError: a missing column or an empty file, naming the file.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("image", "target", "label") if c not in columns]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; CASES.csv needs image, "
                f"target and label columns (found: {', '.join(columns) or 'none'})"
            )
        specs = []
        for row in reader:
            image = unescape_cell((row[columns["image"]] or "").strip())
            if not image:
                continue
            image_path = Path(image)
            if not image_path.is_absolute():
                image_path = path.parent / image_path
            specs.append(
                CaseSpec(
                    str(image_path),
                    unescape_cell((row[columns["target"]] or "").strip()),
                    unescape_cell((row[columns["label"]] or "").strip()),
                )
            )
            if limit is not None and len(specs) >= limit:
                break
    if not specs:
        raise ValueError(f"{path}: no cases (every row needs an image path)")
    return specs


def _save_gray_png(image: torch.Tensor, path: Path) -> None:
    """The image as 8-bit grayscale PNG ([−1024, 1024] → [0, 255]), written atomically."""
    arr = to_uint8(image.detach().float().cpu().numpy().reshape(image.shape[-2:]))
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode="L").save(tmp, format="PNG")


def save_study_map(
    image: torch.Tensor, heatmap: torch.Tensor, path: str | os.PathLike[str], method: str
) -> Path:
    """Draw one study map with :func:`gifsplanation.render.save_overlay`: the same scaling
    rule (:data:`MAP_SCALE`) for Method A and Method B, the method's units on the colour bar.

    The reader page shows the plain image beside the maps, so the figure has the map over
    the image and its colour bar only (``plain=False``).
    """
    from gifsplanation.render import save_overlay, units_for

    return save_overlay(image, heatmap, path, scale=MAP_SCALE, units=units_for(method), plain=False)


def render_case_assets(
    image: torch.Tensor,
    target: str | int,
    classifier: torch.nn.Module,
    autoencoder: Any,
    out_dir: str | os.PathLike[str],
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    gif_options: Mapping[str, Any] | None = None,
) -> tuple[float, dict[str, str]]:
    """Compute one case's prediction and visuals and write them to ``out_dir``.

    Args:
        image: ``(1, 1, H, W)`` (or ``(1, H, W)``) in the models' convention ([−1024, 1024]).
        target: the target's name or output index.
        classifier: the classifier (declares ``output_kind`` and ``targets``).
        autoencoder: the autoencoder for Latent Shift.
        out_dir: folder for the files (created).
        method_options: optional per-method options for ``get_method`` (e.g.
            ``{"latentshift-max": {"n_frames": 10}}``).
        gif_options: keyword options for :func:`gifsplanation.render.save_gif` (e.g.
            ``{"labels": False}`` to hide the λ/prediction captions); its defaults otherwise.

    Returns:
        ``(p, files)``: the probability of the target for the input (the one the Latent
        Shift search starts from) and asset kind → file name inside ``out_dir``: ``image``,
        ``grad``, ``guided``, ``integrated``, ``latentshift``, ``gif``.

    Example:
        >>> import tempfile
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> p, files = render_case_assets(data.positive(1), "blob", clf, ae, tempfile.mkdtemp())
        >>> sorted(files)
        ['gif', 'grad', 'guided', 'image', 'integrated', 'latentshift']
    """
    from gifsplanation.methods import get_method
    from gifsplanation.render import save_gif

    options = {k: dict(v) for k, v in (method_options or {}).items()}
    x = image if image.ndim == 4 else image[None]
    params = list(classifier.parameters()) if isinstance(classifier, torch.nn.Module) else []
    if params:
        x = x.to(params[0].device)
    if x.shape[0] != 1:
        raise ValueError(f"render_case_assets takes one image, got a batch of {x.shape[0]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"image": "image.png"}
    _save_gray_png(x[0, 0], out / files["image"])

    shift = get_method(
        METHOD_B, classifier=classifier, autoencoder=autoencoder, **options.get(METHOD_B, {})
    )
    exp = shift.explain(x, target)
    prediction = float(exp.input_preds[0])
    files["latentshift"] = "latentshift.png"
    save_study_map(x[0, 0], shift.maps_from(exp)[0, 0], out / files["latentshift"], METHOD_B)
    files["gif"] = "latentshift.gif"
    save_gif(exp, 0, out / files["gif"], **dict(gif_options or {}))
    for name in METHOD_A:
        method = get_method(
            name, classifier=classifier, autoencoder=autoencoder, **options.get(name, {})
        )
        maps = method.attribute(x, target=target)
        files[name] = f"{name}.png"
        save_study_map(x[0, 0], maps[0, 0], out / files[name], name)
    return prediction, files


def create_study(
    cases: str | os.PathLike[str] | Sequence[CaseSpec],
    out: str | os.PathLike[str],
    classifier: torch.nn.Module,
    autoencoder: Any,
    *,
    loader: ImageLoader | None = None,
    limit: int | None = None,
    threshold: float | None = 0.5,
    meta: Mapping[str, Any] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    gif_options: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, CaseSpec], None] | None = None,
    seed: int | None = None,
    base_url: str | None = None,
) -> StudyStore:
    """Make a study folder from cases.

    Args:
        cases: a CASES.csv path (columns image, target, label) or :class:`CaseSpec` list.
        out: the new study folder (refused unless missing or empty). It is built in a
            hidden ``.<name>.partial`` folder next to it and moved in place when complete.
            A ``.<name>.partial`` folder that this function did not make (no marker file
            inside) is refused, never deleted.
        classifier: the classifier being audited (its ``targets`` name the targets).
        autoencoder: the autoencoder for Latent Shift.
        loader: ``path -> (1, 1, H, W)`` tensor; default :func:`gifsplanation.io.load_image`
            at the autoencoder's ``input_size`` (224 if it does not say).
        limit: keep only the first ``limit`` cases.
        threshold: warn about cases whose prediction is at or below this (the paper's
            cases are all predicted positives); ``None`` disables the check.
        meta: extra provenance stored in the database (model names, weights hashes ...).
        method_options: per-method options for :func:`render_case_assets`.
        gif_options: options for the GIF (see :func:`render_case_assets`).
        progress: called as ``progress(i, n, case)`` before each case (``i`` counts the
            cases built so far; the cases come in the shuffled build order).
        seed: seed of the build order (random by default). Seed and order are stored in
            the database (``meta``: ``build_seed``, ``build_order`` = the case indices of
            ``cases`` in the order they were built).
        base_url: where readers will reach the server, stored with the study for links
            (see ``gifsplanation study config``).

    Returns:
        The study's store (``store.admin_token`` is the admin token).

    Raises:
        FileExistsError: ``out`` is not empty, or ``.<name>.partial`` exists and was not
            made by this function.
    """
    specs = read_cases(cases, limit) if isinstance(cases, (str, os.PathLike)) else list(cases)
    if limit is not None:
        specs = specs[:limit]
    if not specs:
        raise ValueError("create_study: no cases given")
    if base_url is not None:
        base_url = check_base_url(base_url)
    targets = getattr(classifier, "targets", None)
    if targets:
        unknown = sorted({s.target for s in specs} - set(targets))
        if unknown:
            raise ValueError(
                f"target(s) {', '.join(map(repr, unknown))} are not outputs of the classifier; "
                f"use one of {', '.join(targets)}"
            )
    if loader is None:
        from gifsplanation.io import load_image

        size = int(getattr(autoencoder, "input_size", None) or 224)

        def loader(path: str) -> torch.Tensor:
            return load_image(path, size=size)

    final = Path(out)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise FileExistsError(f"{final} already exists and is not empty; choose another --out")
    # build next to the destination and move it in place at the end, so a failed run
    # leaves no half-made study behind
    partial = final.parent / f".{final.name}.partial"
    final.parent.mkdir(parents=True, exist_ok=True)
    _claim_partial(partial)
    # cases are built (files written, rows inserted) in a random order: file times and
    # row ids must not follow CASES.csv, where true positives often come first
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    order = list(range(len(specs)))
    random.Random(seed).shuffle(order)
    try:
        store = StudyStore.init(partial)
        settings = {
            "threshold": "" if threshold is None else str(threshold),
            "cases": str(len(specs)),
            "build_seed": str(seed),
            "build_order": json.dumps(order),
        }
        if base_url is not None:
            settings["base_url"] = base_url
        store.set_meta(settings | dict(meta or {}))
        used: set[str] = set()
        for step, index in enumerate(order):
            spec = specs[index]
            if progress is not None:
                progress(step, len(specs), spec)
            public_id = os.urandom(4).hex()
            while public_id in used:  # a 1-in-4-billion collision would mix two cases' files
                public_id = os.urandom(4).hex()
            used.add(public_id)
            try:
                image = loader(spec.image)
                p, files = render_case_assets(
                    image,
                    spec.target,
                    classifier,
                    autoencoder,
                    store.assets_dir / public_id,
                    method_options=method_options,
                    gif_options=gif_options,
                )
            except Exception as err:
                raise RuntimeError(
                    f"case {index + 1} ({spec.image}, target {spec.target}): {err}"
                ) from err
            if threshold is not None and p <= threshold:
                log.warning(
                    "case %d (%s): p(%s) = %.2f is not above %.2f; the paper's cases are all "
                    "predicted positives",
                    index + 1,
                    spec.image,
                    spec.target,
                    p,
                    threshold,
                )
            store.add_case(
                spec.image,
                spec.target,
                spec.label,
                spec.truth,
                p,
                {kind: f"{public_id}/{name}" for kind, name in files.items()},
                public_id=public_id,
            )
        (partial / PARTIAL_MARKER).unlink()
        if final.exists():
            final.rmdir()  # empty, checked above
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # made (and marked) by this run
        raise
    return StudyStore(final)


def _claim_partial(partial: Path) -> None:
    """Make ``partial`` with our marker inside; remove a marked leftover of an earlier run,
    refuse (never delete) a folder or file of that name that we did not make."""
    if partial.is_symlink() or partial.exists():
        if partial.is_symlink() or not (partial / PARTIAL_MARKER).is_file():
            raise FileExistsError(
                f"{partial} exists and was not made by `study create`; move or delete it "
                "yourself, or choose another --out"
            )
        log.warning("removing %s, left by an interrupted `study create`", partial)
        shutil.rmtree(partial)
    partial.mkdir(mode=0o700)  # fails if someone made it meanwhile: then it is not ours
    (partial / PARTIAL_MARKER).write_text(
        "made by gifsplanation `study create`; deleted when the study is complete\n",
        encoding="utf-8",
    )


__all__ = [
    "METHOD_A",
    "METHOD_B",
    "PARTIAL_MARKER",
    "CaseSpec",
    "create_study",
    "parse_truth",
    "predict_images",
    "read_cases",
    "render_case_assets",
]


def predict_images(
    paths: Sequence[str],
    classifier: torch.nn.Module,
    loader: ImageLoader,
    batch_size: int = 8,
) -> list[list[float]]:
    """The classifier's probability for every target, per image (for case selection).

    Args:
        paths: image files.
        classifier: the classifier (``output_kind`` decides whether a sigmoid is applied).
        loader: ``path -> (1, 1, H, W)`` tensor.
        batch_size: images per forward pass.

    Returns:
        One list of probabilities per image, in the classifier's target order.
    """
    from gifsplanation import Classifier

    model = Classifier(classifier)
    params = list(classifier.parameters()) if isinstance(classifier, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    out: list[list[float]] = []
    for start in range(0, len(paths), batch_size):
        batch = torch.cat([loader(p) for p in paths[start : start + batch_size]]).to(device)
        with torch.no_grad():
            out.extend(model(batch).float().cpu().tolist())
    return out
