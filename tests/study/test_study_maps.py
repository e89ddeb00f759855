"""The reader study's maps: Method A and Method B are drawn by the one map renderer with
the same scaling rule, so neither method looks weaker because of its display (issue #16)."""

from __future__ import annotations

import json

from PIL import Image

import gifsplanation.render
from gifsplanation.render.overlay import PNG_KEY
from gifsplanation.study import build


def test_method_a_and_b_maps_use_one_renderer_and_one_scaling_rule(tiny, tmp_path, monkeypatch):
    clf, ae, data = tiny
    calls: list[tuple[str, dict]] = []
    original = gifsplanation.render.save_overlay

    def spy(image, heatmap, path, **kwargs):  # noqa: ANN001, ANN202
        calls.append((str(path), kwargs))
        return original(image, heatmap, path, **kwargs)

    monkeypatch.setattr(gifsplanation.render, "save_overlay", spy)
    options = {build.METHOD_B: {"n_frames": 5}}
    _, files = build.render_case_assets(
        data.positive(1), "blob", clf, ae, tmp_path, method_options=options
    )

    kinds = ("grad", "guided", "integrated", "latentshift")
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in calls) == sorted(f"{k}.png" for k in kinds)
    assert {kw["scale"] for _, kw in calls} == {build.MAP_SCALE} == {"p99"}
    # every option but the units is the same for both methods
    shared = [{k: v for k, v in kw.items() if k != "units"} for _, kw in calls]
    assert all(s == shared[0] for s in shared)
    assert len({kw["units"] for _, kw in calls}) == 4  # each map says what it measures

    rules = {}
    for kind in kinds:
        with Image.open(tmp_path / files[kind]) as im:
            meta = json.loads(im.text[PNG_KEY])
            assert max(im.size) >= 448
        rules[kind] = meta["scale"]["rule"]
        assert "image" not in meta["boxes"]  # the page shows the plain image beside the maps
    assert set(rules.values()) == {"p99"}, rules
