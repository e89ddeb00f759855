"""The model card's measurements (:mod:`gifsplanation.models.validation`) on the tiny models:
multi-label outputs mapped to dataset labels, both Latent Shift frame modes, one table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gifsplanation.datasets import MaskedCXRDataset
from gifsplanation.models import validation
from gifsplanation.models.validation import markdown, measure, output_mapping


class ThreeOutputs(nn.Module):
    """The tiny blob classifier with three sigmoid outputs: ``blob`` (named like a label),
    ``Any`` (p(blob) again; positive for every label once mapped) and ``Clear``
    (1 − p(blob))."""

    output_kind = "probability"
    head = "sigmoid"
    targets = ["blob", "Any", "Clear"]

    def __init__(self, clf: nn.Module) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.clf(x)
        return torch.cat([p, p, 1 - p], 1)


SPECS = ["Any=blob|none", "Clear=none"]


@pytest.fixture(scope="module")
def result(tiny, blob_folders):
    clf, ae, _ = tiny
    ds = MaskedCXRDataset(blob_folders(n_per_label=3), size=32, split="all")
    aes = {"ae-a": ae, "ae-b": ae}
    return measure(ThreeOutputs(clf), aes, ds, iou_target="Any", n_iou=2, outputs=SPECS)


def test_mapping_gives_each_output_its_positive_labels() -> None:
    m = output_mapping(["blob", "Any", "Clear"], ["blob", "none"], SPECS, head="sigmoid")
    assert m.matrix.tolist() == [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    assert not m.exclusive
    assert m.positives(torch.tensor([0, 1, 1])).tolist() == [
        [True, True, False],
        [False, True, True],
        [False, True, True],
    ]
    # a softmax over exactly the labels keeps the exclusive-class scoring
    assert output_mapping(["a", "b"], ["a", "b"], head="softmax").exclusive
    assert not output_mapping(["a", "b"], ["a", "b"], head="sigmoid").exclusive


def test_measure_scores_outputs_by_the_mapping(result) -> None:
    assert result["outputs"] == {"blob": ["blob"], "Any": ["blob", "none"], "Clear": ["none"]}
    effect = result["autoencoders"]["ae-a"]["effect"]
    assert [effect[t]["n_pos"] for t in ("blob", "Any", "Clear")] == [3, 6, 3]
    assert effect["Clear"]["auc_x"] == pytest.approx(effect["blob"]["auc_x"])
    assert effect["Any"]["n_neg"] == 0  # no negatives: no AUC, no negative means
    assert effect["Any"]["auc_x"] != effect["Any"]["auc_x"]
    # the IoU target's images: its positive labels, with a non-empty mask (blob only)
    iou = result["autoencoders"]["ae-a"]["iou"]
    assert iou["positive_labels"] == ["blob", "none"] and iou["n"] == 2
    assert iou["search"]["lower_change"] == pytest.approx(0.3)  # the engine config is kept
    assert all(name.startswith("blob_") for name in iou["items"])


def test_one_table_with_both_modes_and_paired_tests(result) -> None:
    a = result["autoencoders"]["ae-a"]
    assert set(a["iou"]["modes"]) == {"residual", "reconstruction"}
    assert 0 < a["ssim"] <= 1 and a["edge_ratio"] > 0
    md = markdown(result)
    rows = [line for line in md.splitlines() if line.startswith("| ae-")]
    assert len(rows) == 4  # 2 autoencoders × 2 modes, in one table
    assert sum("| residual |" in r for r in rows) == sum("| reconstruction |" in r for r in rows)
    assert md.count("| autoencoder | latent | MAE | SSIM | fine-edge ratio | mode |") == 1
    what = [(d["what"], d["a"], d["b"]) for d in result["iou_paired"]]
    assert ("ae-a", "residual", "reconstruction") in what  # modes, per autoencoder
    assert ("residual", "ae-a", "ae-b") in what  # autoencoders, per mode
    assert "| Any (blob \\| none; n+ 6) |" in md


def test_an_unmapped_output_is_one_clear_error(tiny, blob_folders, monkeypatch, capsys) -> None:
    with pytest.raises(ValueError, match=r"'Any'.*--output"):
        output_mapping(["blob", "Any", "Clear"], ["blob", "none"], ["Clear=none"])
    with pytest.raises(ValueError, match="no output 'Nope'"):
        output_mapping(["blob"], ["blob", "none"], ["Nope=blob"])
    # the command line says it in one line, before decoding any image
    from gifsplanation.models import registry

    monkeypatch.setattr(registry, "get_classifier", lambda name: ThreeOutputs(tiny[0]))
    with pytest.raises(SystemExit) as e:
        validation.main(["--data", str(blob_folders(n_per_label=3)), "--out", "x.json"])
    message = str(e.value)
    assert "\n" not in message and "'Any'" in message and "'Clear'" in message
    assert "--output" in message
