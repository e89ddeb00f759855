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
from pathlib import Path
from typing import Any

from ._common import write_text

MAX_EMBED_BYTES = 8 * 1024 * 1024
"""Videos larger than this are linked rather than embedded."""

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#111;color:#eee}
a{color:#8cf} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #444;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#222} .fail{color:#f88} .ok{color:#8f8} .skip{color:#ccc}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img,figure video{max-width:100%;image-rendering:pixelated;background:#000}
figcaption{font-size:.85em;color:#aaa} pre{background:#1b1b1b;padding:1em;overflow:auto}
.grid{display:flex;flex-wrap:wrap;align-items:flex-start}
figure img.map{width:336px;height:auto} img.thumb{height:90px}
"""

_CAPTIONS = {
    "gif": "Latent Shift loop: most negative λ (feature removed) → λ=0 → most positive λ",
    "mp4": "the same loop as video",
    "curve": "prediction vs λ with the searched bounds and goals",
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
    caption = _CAPTIONS.get(key, f"attribution map ({key[4:]})" if key.startswith("map-") else key)
    if path.suffix.lower() in (".mp4", ".webm"):
        size = path.stat().st_size
        src = data_uri(path) if size <= MAX_EMBED_BYTES else os.path.relpath(path, base)
        body = f'<video id="asset-{_e(key)}" src="{_e(src)}" controls loop muted></video>'
    else:
        css = ' class="map"' if key.startswith("map-") else ""
        body = f'<img id="asset-{_e(key)}"{css} alt="{_e(key)}" src="{data_uri(path)}">'
    return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in pairs)


def write_report(
    record: Mapping[str, Any],
    assets: Mapping[str, str | os.PathLike[str]],
    path: str | os.PathLike[str],
) -> Path:
    """Write a self-contained ``report.html`` for one explanation.

    Args:
        record: the explanation record (the content of ``explanation.json``): at least
            ``target_name``/``target``, ``input_pred``, ``initial_pred``, ``lambdas``,
            ``preds``, ``bounds``, ``stop_reasons``; anything else is shown as JSON.
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
    image = record.get("image", "")
    order = ["gif", *sorted(k for k in assets if k.startswith("map-")), "curve", "flow", "mp4"]
    keys = [k for k in order if k in assets] + [k for k in assets if k not in order]
    figures = "".join(_figure(k, Path(assets[k]), base) for k in keys if Path(assets[k]).is_file())
    reasons = record.get("stop_reasons", {})
    descriptions = record.get("stop_descriptions", {})
    facts = [
        ("image", image),
        ("target", name),
        ("prediction on the input", record.get("input_pred", "")),
        ("prediction on the reconstruction (λ=0)", record.get("initial_pred", "")),
        ("lower bound λ", record.get("bounds", {}).get("lower", "")),
        ("upper bound λ", record.get("bounds", {}).get("upper", "")),
        ("lower side stopped", f"{reasons.get('lower', '')}: {descriptions.get('lower', '')}"),
        ("upper side stopped", f"{reasons.get('upper', '')}: {descriptions.get('upper', '')}"),
        ("model evaluations", record.get("n_evaluations", "")),
    ]
    frames = "".join(
        f"<tr><td>{k}</td><td>{lam:.4g}</td><td>{p:.4f}</td></tr>"
        for k, (lam, p) in enumerate(
            zip(record.get("lambdas", []), record.get("preds", []), strict=False)
        )
    )
    raw = _e(json.dumps(record, indent=2, default=str))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>gifsplanation: {_e(Path(str(image)).name)} — {_e(name)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(name)} <small>{_e(Path(str(image)).name)}</small></h1>
<div class="grid">{figures}</div>
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
            ``status`` (``"done"``, ``"skipped"`` or ``"failed"``), ``reason`` (for
            failures) and ``report`` (path of its ``report.html``, absolute or relative
            to the index's folder).
        path: the ``.html`` file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    rows = []
    for e in entries:
        status = str(e.get("status", ""))
        css = {"failed": "fail", "done": "ok"}.get(status, "skip")
        report = e.get("report")
        link = thumb = ""
        if report:
            rel = (
                os.path.relpath(Path(report), out.parent) if Path(report).is_absolute() else report
            )
            link = f'<a href="{_e(Path(rel).as_posix())}">report</a>'
            if status != "failed":
                src = (Path(rel).parent / "latentshift.gif").as_posix()
                thumb = f'<img class="thumb" loading="lazy" alt="" src="{_e(src)}">'

        pred = e.get("prediction")
        pred_s = f"{pred:.3f}" if isinstance(pred, (int, float)) else ""
        rows.append(
            f"<tr><td>{_e(e.get('image', ''))}</td><td>{_e(e.get('target') or '')}</td>"
            f'<td>{pred_s}</td><td class="{css}">{_e(status)}</td>'
            f"<td>{_e(e.get('reason') or '')}</td><td>{link}</td><td>{thumb}</td></tr>"
        )
    n_fail = sum(1 for e in entries if e.get("status") == "failed")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gifsplanation run</title>
<style>{_CSS}</style></head><body>
<h1>gifsplanation run</h1>
<p>{len(entries) - n_fail} explanations, {n_fail} failures.</p>
<table><tr><th>image</th><th>target</th><th>prediction</th><th>status</th><th>reason</th>
<th>report</th><th>loop</th></tr>{"".join(rows)}</table>
</body></html>
"""
    return write_text(out, doc)
