"""HTML pages: one self-contained report per explanation, and an index for a batch.

``report.html`` embeds every image (and the video, when small) as a data URI, so it can
be mailed or attached to a ticket as one file. ``index.html`` lists every image of a run
with its target, prediction and status, linking each report by a relative path.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..files import write_text

MAX_EMBED_BYTES = 8 * 1024 * 1024
"""Videos larger than this are linked rather than embedded."""
INDEX_GENERATOR = '<meta name="generator" content="gifsplanation">'
"""Marks the pages gifsplanation writes (a run never replaces an index it did not write)."""

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#111;color:#eee;max-width:1500px}
a{color:#8cf} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #444;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#222} .fail{color:#f88} .ok{color:#8f8} .skip{color:#ccc} .refused{color:#fc8}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}
figure img,figure video{max-width:100%;background:#000}
figcaption{font-size:.85em;color:#aaa;max-width:720px}
pre{background:#1b1b1b;padding:1em;overflow:auto}
.grid{display:flex;flex-wrap:wrap;align-items:flex-start}
img.thumb{height:90px} .notes{background:#3a2a10;border-left:4px solid #fa3;padding:.5em 1em}
.legend{color:#ccc;font-size:.9em;max-width:900px}
.blue{color:#78c8ff;font-weight:bold} .orange{color:#ffb040;font-weight:bold}
"""

_CAPTIONS = {
    "gif": (
        "Latent Shift loop, most negative λ (what the classifier uses, removed) → λ=0 → "
        "most positive λ (exaggerated) and back. Panels: the input; the frame x_λ; the "
        "change x_λ − x₀ (see the legend); the prediction bar."
    ),
    "mp4": "the same loop as video",
    "curve": "prediction vs λ with the searched bounds and goals (why each side stopped)",
    "flow": "optical flow along the sequence (where things move as the feature is added)",
}


def data_uri(path: str | os.PathLike[str]) -> str:
    """``path``'s bytes as a ``data:`` URI with a MIME type guessed from the suffix."""
    p = Path(path)
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _figure(key: str, path: Path, base: Path) -> str:
    caption = _CAPTIONS.get(
        key,
        f"attribution map ({key[4:]}): where the frames change" if key.startswith("map-") else key,
    )
    if path.suffix.lower() in (".mp4", ".webm"):
        size = path.stat().st_size
        src = (
            data_uri(path)
            if size <= MAX_EMBED_BYTES
            else Path(os.path.relpath(path, base)).as_posix()
        )
        body = f'<video id="asset-{_e(key)}" src="{_e(src)}" controls loop muted></video>'
    else:
        body = f'<img id="asset-{_e(key)}" alt="{_e(key)}" src="{data_uri(path)}">'
    return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in pairs)


def _legend(record: Mapping[str, Any]) -> str:
    mode = record.get("mode", "reconstruction")
    reference = "the input" if mode == "residual" else "the λ = 0 frame (the reconstruction)"
    frames = (
        "Residual frames: each frame is the input plus the change the autoencoder decodes "
        "for that λ (x_λ = x + D(z + λ·dz) − D(z)), so the patient's image stays as sharp "
        "as it is and λ = 0 <em>is</em> the input."
        if mode == "residual"
        else "Reconstruction frames (the paper's): each frame is the autoencoder's decoding "
        "D(z + λ·dz); λ = 0 is the reconstruction, which can look blurrier than the input "
        "and the classifier may read differently."
    )
    return (
        '<p class="legend">'
        + frames
        + " The <b>change panel</b> shows x_λ minus "
        + _e(reference)
        + ' on a dimmed copy of the input: <span class="blue">blue</span> '
        'where the frame is darker (less dense: removed), <span class="orange">orange</span> '
        "where it is brighter (denser: added); full colour is the scale printed under the "
        "panels (grey levels of 255, the 99.5th percentile of the change over the whole "
        "sequence). The <b>bar</b> on the right is the classifier's probability for the "
        "target at the shown frame (filled height, 0 at the bottom, 1 at the top); the "
        "white tick marks its probability on the input.</p>"
    )


def write_report(
    record: Mapping[str, Any],
    assets: Mapping[str, str | os.PathLike[str]],
    path: str | os.PathLike[str],
) -> Path:
    """Write a self-contained ``report.html`` for one explanation.

    Args:
        record: the explanation record (the content of ``explanation.json``): at least
            ``target_name``/``target``, ``input_pred``, ``initial_pred``, ``lambdas``,
            ``preds``, ``bounds``, ``stop_reasons``; ``notes`` (warnings shown first),
            ``mode``, ``ood`` and anything else are shown too.
        assets: files to show, by key: ``"gif"``, ``"mp4"``, ``"map-<method>"``,
            ``"curve"``, ``"flow"``; images are embedded as data URIs, each in an element
            with id ``asset-<key>``. Missing files are skipped.
        path: the ``.html`` file to write (atomically).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    base = out.parent
    name = record.get("target_name") or f"output {record.get('target')}"
    image = str(record.get("image", ""))
    shown_image = Path(image).name or image
    order = ["gif", *sorted(k for k in assets if k.startswith("map-")), "curve", "flow", "mp4"]
    keys = [k for k in order if k in assets] + [k for k in assets if k not in order]
    figures = "".join(_figure(k, Path(assets[k]), base) for k in keys if Path(assets[k]).is_file())
    reasons = record.get("stop_reasons", {})
    descriptions = record.get("stop_descriptions", {})
    ood = record.get("ood") or {}
    facts = [
        ("image", image),
        ("input SHA-256", record.get("input_sha256", "")),
        ("target", name),
        ("frames", record.get("mode", "")),
        ("prediction on the input", record.get("input_pred", "")),
        ("prediction at λ=0", record.get("initial_pred", "")),
        ("operating point", record.get("operating_point", "")),
        ("target found by the classifier", record.get("target_present", "")),
        ("lower bound λ", record.get("bounds", {}).get("lower", "")),
        ("upper bound λ", record.get("bounds", {}).get("upper", "")),
        ("lower side stopped", f"{reasons.get('lower', '')}: {descriptions.get('lower', '')}"),
        ("upper side stopped", f"{reasons.get('upper', '')}: {descriptions.get('upper', '')}"),
        ("model evaluations", record.get("n_evaluations", "")),
    ]
    for signal, score in (ood.get("scores") or {}).items():
        limit = (ood.get("thresholds") or {}).get(signal)
        facts.append((f"OOD score: {signal}", f"{score:.4g} (refused above {limit:.4g})"))
    notes = record.get("notes") or []
    notes_html = (
        '<div class="notes"><b>Read this first:</b><ul>'
        + "".join(f"<li>{_e(n)}</li>" for n in notes)
        + "</ul></div>"
        if notes
        else ""
    )
    frames = "".join(
        f"<tr><td>{k}</td><td>{lam:.4g}</td><td>{p:.4f}</td></tr>"
        for k, (lam, p) in enumerate(
            zip(record.get("lambdas", []), record.get("preds", []), strict=False)
        )
    )
    raw = _e(json.dumps(record, indent=2, default=str))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{INDEX_GENERATOR}
<title>gifsplanation: {_e(shown_image)} — {_e(name)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(name)} <small>{_e(shown_image)}</small></h1>
{notes_html}
<div class="grid">{figures}</div>
{_legend(record)}
<h2>Summary</h2><table>{_rows(facts)}</table>
<h2>Frames</h2><table><tr><th>#</th><th>λ</th><th>prediction</th></tr>{frames}</table>
<details><summary>explanation.json</summary><pre>{raw}</pre></details>
</body></html>
"""
    return write_text(out, doc)


def write_index(entries: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``index.html`` listing every explanation of a run (atomically).

    Args:
        entries: one mapping per (image, target) or failed image, with keys ``image``,
            ``target`` (may be missing for failures), ``prediction`` (float or None),
            ``status`` (``"done"``, ``"skipped"``, ``"refused"`` or ``"failed"``),
            ``reason``, ``notes`` and ``report`` (path of its ``report.html`` relative to
            the index's folder; anything else is not linked).
        path: the ``.html`` file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    rows = []
    for e in entries:
        status = str(e.get("status", ""))
        css = {"failed": "fail", "done": "ok", "refused": "refused"}.get(status, "skip")
        link = thumb = ""
        rel = _child_link(e.get("report"))
        if rel:
            link = f'<a href="{_e(rel)}">report</a>'
            if status in ("done", "skipped"):
                src = "./" + (PurePosixPath(rel[2:]).parent / "latentshift.gif").as_posix()
                thumb = f'<img class="thumb" loading="lazy" alt="" src="{_e(src)}">'
        pred = e.get("prediction")
        pred_s = f"{pred:.3f}" if isinstance(pred, (int, float)) else ""
        notes = "; ".join(str(n) for n in (e.get("notes") or []))
        rows.append(
            f"<tr><td>{_e(e.get('image', ''))}</td><td>{_e(e.get('target') or '')}</td>"
            f'<td>{pred_s}</td><td class="{css}">{_e(status)}</td>'
            f"<td>{_e(e.get('reason') or notes)}</td><td>{link}</td><td>{thumb}</td></tr>"
        )
    n_ok = sum(1 for e in entries if e.get("status") in ("done", "skipped"))
    n_refused = sum(1 for e in entries if e.get("status") == "refused")
    n_fail = sum(1 for e in entries if e.get("status") == "failed")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{INDEX_GENERATOR}<title>gifsplanation run</title>
<style>{_CSS}</style></head><body>
<h1>gifsplanation run</h1>
<p>{n_ok} explanations, {n_refused} refused (not like a chest X-ray), {n_fail} failures.</p>
<table><tr><th>image</th><th>target</th><th>prediction</th><th>status</th><th>notes</th>
<th>report</th><th>loop</th></tr>{"".join(rows)}</table>
</body></html>
"""
    return write_text(out, doc)


def _child_link(report: Any) -> str | None:
    """``report`` as a relative link inside the index's folder (``./a/b/report.html``),
    or ``None`` for anything else (absolute paths, ``..``, URLs such as ``javascript:``)."""
    if not report:
        return None
    p = PurePosixPath(str(report).replace("\\", "/"))
    if not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        return None
    return "./" + p.as_posix()
