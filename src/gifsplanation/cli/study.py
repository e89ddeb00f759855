"""`gifsplanation study ...`: run the paper's reader study with your own readers.

``select`` picks cases like the paper, ``create`` builds a study folder (visuals + SQLite),
``add-reader`` prints a reader's private link, ``readers`` lists links and progress,
``config`` stores the study's base URL (where readers reach the server; links are built
from it, never from a request's Host header), ``serve`` runs the web app, ``export``
writes every answer as CSV and ``analyze`` computes the paper's statistics (Markdown + CSV
+ PNG). Errors follow the one rule of the command line (:mod:`.common`): a wrong command
line (a bad option value, a missing study folder or CSV column, a duplicate reader name,
an ``--out`` that is taken) exits 2 with one line; a failure while running (models that
cannot be loaded, a case that cannot be built) exits 1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import common

console = Console(stderr=True)
out_console = Console()

study_app = typer.Typer(
    help="Reader study: create a study, add readers, serve it, export and analyse answers.",
    no_args_is_help=True,
)

STUDY_DIR = typer.Argument(..., help="The study folder (made by `study create`).")
BASE_URL_HELP = (
    "Where readers reach `study serve`, e.g. https://study.example.org (default: the "
    "study's stored base URL, see `study config`, else http://127.0.0.1:8000)."
)


@study_app.callback()
def _setup() -> None:
    common.setup_logging()


def _base_url(store, option: str | None) -> str:
    """The links' base URL: the option, else the study's stored one, else the default."""
    from gifsplanation.study.store import DEFAULT_BASE_URL, check_base_url

    try:
        return check_base_url(option) if option else (store.base_url or DEFAULT_BASE_URL)
    except ValueError as err:
        raise common.fail(str(err), code=2) from None


def _loader(size: int):
    from gifsplanation.io import load_image

    def load(path: str):
        return load_image(path, size=size)

    return load


@study_app.command("select")
def select_cmd(
    images_csv: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="CSV with image and label columns (label: the "
        "ground-truth class name(s), several joined by '|').",
    ),
    out: Path = typer.Option(..., "--out", help="The CASES.csv to write."),
    classifier: str | None = typer.Option(None, help="Classifier name or checkpoint path."),
    per_target: int = typer.Option(20, help="Cases per target (paper: 20)."),
    fp_share: float = typer.Option(0.5, help="Share of false positives per target (paper: 0.5)."),
    threshold: float = typer.Option(0.6, help="Only predictions above this (paper: 0.6)."),
    targets: list[str] = typer.Option(None, "--target", help="Targets to use (default: all)."),
    seed: int = typer.Option(0, help="Seed of the draw and of the (shuffled) output order."),
    device: str = typer.Option("cpu", help="Torch device."),
) -> None:
    """Pick study cases like the paper: predicted positives, a share of them false positives,
    balanced over targets. Writes CASES.csv (image, target, label, prediction) in a seeded
    random order (never true positives first)."""
    from gifsplanation.study.build import predict_images
    from gifsplanation.study.export import write_csv
    from gifsplanation.study.selection import candidates, select_cases

    with open(images_csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0] or "label" not in rows[0]:
        raise common.fail(f"{images_csv}: needs image and label columns", code=2)
    paths = [
        str(p if Path(p).is_absolute() else images_csv.parent / p)
        for p in (r["image"] for r in rows)
    ]
    clf, _ = common.models_or_exit(classifier, None, device, need_autoencoder=False)
    size = int(getattr(clf, "input_size", None) or 224)
    with console.status(f"predicting {len(paths)} images"):
        probs = predict_images(paths, clf, _loader(size))
    chosen = select_cases(
        candidates(paths, [r["label"] for r in rows], probs, list(clf.targets)),
        per_target=per_target,
        fp_share=fp_share,
        threshold=threshold,
        targets=targets or None,
        seed=seed,
    )
    write_csv(out, chosen, ("image", "target", "label", "prediction"))
    n_fp = sum(1 for r in chosen if not r["label"])
    console.print(f"wrote {out}: {len(chosen)} cases ({n_fp} false positives)")


@study_app.command("create")
def create_cmd(
    cases_csv: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CSV with image, target and label columns."
    ),
    out: Path = typer.Option(..., "--out", help="The new study folder."),
    classifier: str | None = typer.Option(None, help="Classifier name or checkpoint path."),
    autoencoder: str | None = typer.Option(None, help="Autoencoder name or checkpoint path."),
    limit: int | None = typer.Option(None, help="Use only the first N cases."),
    threshold: float = typer.Option(
        0.5, help="Warn about cases predicted at or below this (the study shows positives)."
    ),
    gif_labels: bool = typer.Option(
        True, "--gif-labels/--no-gif-labels", help="Draw λ and the prediction on the GIF."
    ),
    device: str = typer.Option("cpu", help="Torch device."),
    seed: int | None = typer.Option(
        None, help="Seed of the (shuffled) build order; random by default, stored either way."
    ),
    base_url: str | None = typer.Option(
        None, help="Where readers will reach `study serve` (stored; see `study config`)."
    ),
) -> None:
    """Compute predictions, Method A maps and Method B map + GIF for every case and store
    them with a SQLite database in the study folder. Cases are built in a seeded random
    order (stored), so file times do not follow CASES.csv."""
    from gifsplanation.study.build import create_study, read_cases
    from gifsplanation.study.store import check_base_url

    try:
        specs = read_cases(cases_csv, limit)
        if base_url is not None:
            base_url = check_base_url(base_url)
    except ValueError as err:
        raise common.fail(str(err), code=2) from None
    clf, ae = common.models_or_exit(classifier, autoencoder, device)
    size = int(getattr(ae, "input_size", None) or 224)
    meta = {
        "classifier": getattr(clf, "name", classifier or "default"),
        "classifier_sha256": getattr(clf, "weights_sha256", None) or "",
        "autoencoder": getattr(ae, "name", autoencoder or "default"),
        "autoencoder_sha256": getattr(ae, "weights_sha256", None) or "",
        "cases_csv": str(cases_csv),
    }
    from ..runs.progress import progress_bar

    with progress_bar(True, remaining=True) as bar:
        task = bar.add_task("rendering cases", total=len(specs))

        def progress(i: int, n: int, spec) -> None:
            bar.update(task, completed=i, description=f"case {i + 1}/{n}")

        try:
            store = create_study(
                specs,
                out,
                clf,
                ae,
                loader=_loader(size),
                threshold=threshold,
                meta=meta,
                gif_options={"labels": gif_labels},
                progress=progress,
                seed=seed,
                base_url=base_url,
            )
        except FileExistsError as err:  # --out is taken
            raise common.fail(str(err), code=2) from None
        except (ValueError, RuntimeError) as err:
            raise common.fail(str(err)) from None
        bar.update(task, completed=len(specs))
    console.print(
        f"study created in {out} with {len(specs)} cases "
        f"(build order seed {store.meta()['build_seed']})"
    )
    console.print(f"admin token (keep it private): {store.admin_token}")
    console.print(f"next: gifsplanation study add-reader {out} NAME")


@study_app.command("add-reader")
def add_reader_cmd(
    study_dir: Path = STUDY_DIR,
    name: str = typer.Argument(..., help="A unique reader name, e.g. reader1."),
    base_url: str | None = typer.Option(None, help=BASE_URL_HELP),
    seed: int | None = typer.Option(None, help="Schedule seed (random by default; stored)."),
) -> None:
    """Add a reader (their two rounds are scheduled now) and print their private link."""
    from gifsplanation.study.store import StudyError, StudyStore, reader_link

    try:
        store = StudyStore(study_dir)
        base = _base_url(store, base_url)
        reader = store.add_reader(name, seed=seed)
    except (FileNotFoundError, StudyError, ValueError) as err:
        raise common.fail(str(err), code=2) from None
    out_console.print(reader_link(base, reader), soft_wrap=True)


@study_app.command("readers")
def readers_cmd(
    study_dir: Path = STUDY_DIR,
    base_url: str | None = typer.Option(None, help=BASE_URL_HELP),
) -> None:
    """List readers, their private links and progress."""
    from gifsplanation.study.store import StudyStore, reader_link

    try:
        store = StudyStore(study_dir)
    except FileNotFoundError as err:
        raise common.fail(str(err), code=2) from None
    base = _base_url(store, base_url)
    table = Table("reader", "round 1", "round 2", "link")
    for reader in store.readers():
        prog = store.progress(reader.id)
        table.add_row(
            reader.name,
            *(f"{prog.get(r, (0, 0))[0]}/{prog.get(r, (0, 0))[1]}" for r in (1, 2)),
            reader_link(base, reader),
        )
    out_console.print(table)


@study_app.command("config")
def config_cmd(
    study_dir: Path = STUDY_DIR,
    base_url: str | None = typer.Option(
        None,
        help="Store where readers reach `study serve` (e.g. https://study.example.org); "
        "reader and admin links are built from it.",
    ),
) -> None:
    """Show or change the study's settings (the base URL of links)."""
    from gifsplanation.study.store import DEFAULT_BASE_URL, StudyStore

    try:
        store = StudyStore(study_dir)
        if base_url is not None:
            store.set_base_url(base_url)
    except (FileNotFoundError, ValueError) as err:
        raise common.fail(str(err), code=2) from None
    shown = store.base_url or f"{DEFAULT_BASE_URL} (default; not set)"
    out_console.print(f"base URL: {shown}", soft_wrap=True)


@study_app.command("serve")
def serve_cmd(
    study_dir: Path = STUDY_DIR,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    base_url: str | None = typer.Option(
        None,
        help="Where readers reach this server, for the links the admin API returns "
        "(default: the study's stored base URL, else http://127.0.0.1:PORT).",
    ),
) -> None:
    """Serve the reader study (FastAPI + uvicorn, SQLite in WAL mode)."""
    import uvicorn

    from gifsplanation.study.server import create_app
    from gifsplanation.study.store import StudyStore, check_base_url

    try:
        store = StudyStore(study_dir)
        base = check_base_url(base_url or store.base_url or f"http://127.0.0.1:{port}")
    except (FileNotFoundError, ValueError) as err:
        raise common.fail(str(err), code=2) from None
    console.print(
        f"serving {study_dir} on http://{host}:{port} — {len(store.readers())} reader(s); "
        f"links: {base}/r/... (gifsplanation study readers {study_dir} --base-url {base})"
    )
    uvicorn.run(create_app(study_dir, base_url=base), host=host, port=port, log_level="warning")


@study_app.command("export")
def export_cmd(
    study_dir: Path = STUDY_DIR,
    out: Path | None = typer.Option(None, help="CSV path (default STUDY_DIR/answers.csv)."),
    history: bool = typer.Option(False, help="Every submission instead of current answers."),
) -> None:
    """Write every answer (with timestamps, method, ground truth) as CSV."""
    from gifsplanation.study.export import export_answers

    try:
        path = export_answers(study_dir, out, history=history)
    except FileNotFoundError as err:
        raise common.fail(str(err), code=2) from None
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f) - 1
    console.print(f"wrote {path} ({n} rows)")


@study_app.command("analyze")
def analyze_cmd(
    study_dir: Path = STUDY_DIR,
    out: Path | None = typer.Option(None, help="Output folder (default STUDY_DIR/analysis)."),
) -> None:
    """The paper's statistics: B − A per question, TP and FP, per reader and pooled, with
    Wilcoxon p-values; per-target plot; weighted kappa between readers."""
    from gifsplanation.study.analysis import analyze

    try:
        result = analyze(study_dir, out)
    except FileNotFoundError as err:
        raise common.fail(str(err), code=2) from None
    table = Table("reader", "group", "question", "n", "B − A", "p")
    for row in result.summary:
        p = row["p_value"]
        table.add_row(
            row["scope"],
            row["group"],
            row["question"],
            str(row["n"]),
            f"{row['mean_diff']:+.2f} ± {row['sd_diff']:.2f}",
            "–" if p != p else f"{p:.3g}",
        )
    out_console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def register(app: typer.Typer) -> None:
    """Add the ``study`` command group to ``app``."""
    app.add_typer(study_app, name="study")
