"""Scripts behind published figures: the label audit and the model-scale copy of a checkpoint."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.model import HydraPicker
from hydrapick.picks import Picks

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_audit_counts_only_places_every_picker_marks():
    audit = load_script("benchmarks/label_audit.py")
    box = 20.0
    truth = Picks("m.mrc", [50.0, 150.0, 250.0], [50.0, 50.0, 50.0])
    # Both pickers rank an unlabelled place (400, 300) among their best 3; only picker a marks (600, 300).
    a = Picks("m", [51.0, 400.0, 600.0, 150.0], [50.0, 300.0, 300.0, 52.0], [0.9, 0.8, 0.7, 0.1])
    b = Picks("m_autopick", [403.0, 49.0, 250.0, 600.0], [302.0, 50.0, 50.0, 300.0], [5.0, 4.0, 3.0, 1.0])
    places = audit.unlabelled_places(truth, {"a": a, "b": b}, box)
    assert list(places) == ["m"]
    np.testing.assert_allclose(places["m"], [[401.5, 301.0]])
    completed = audit.with_places(truth, places)
    assert len(completed) == 4 and set(completed.micrograph) == {"m.mrc"}


def test_rescaled_checkpoint_keeps_weights_and_changes_the_particle_size(tmp_path):
    rescale = load_script("recipes/generic/rescale.py")
    model = HydraPicker(ModelConfig.light(stem_stride=4))
    source = save_checkpoint(tmp_path / "a.pt", model, {"thresholds": {"generic": 0.4}})
    out = rescale.rescale(source, 48, tmp_path / "b.pt")
    copy, meta = load_checkpoint(out)
    assert copy.config.particle_diameter_px == 48.0
    assert meta["thresholds"] == {"generic": 0.4}
    assert meta["rescaled_from"]["particle_diameter_px"] == 64.0
    for (name, x), (_, y) in zip(model.state_dict().items(), copy.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(SystemExit, match="outside"):
        rescale.rescale(source, 20, tmp_path / "c.pt")
