"""Recipe scripts: the model-scale copy of a checkpoint, the widened stem, the corpus's places to ignore."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.io import read_coordinates
from hydrapick.model import HydraPicker
from hydrapick.simulation.dataset import write_particle_table

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    # Scripts of one folder import each other, as they do when run from the command line.
    folder = str((ROOT / relative).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_widened_stem_picks_exactly_as_the_source_until_trained(tmp_path):
    widen = load_script("recipes/generic/widen_stem.py")
    torch.manual_seed(0)
    model = HydraPicker(ModelConfig.light(stem_stride=4)).eval()
    source = save_checkpoint(tmp_path / "a.pt", model, {"thresholds": {"generic": 0.4}})
    copy, meta = load_checkpoint(widen.widen_stem(source, 5, tmp_path / "b.pt"))
    assert copy.config.stem_kernel == 5 and copy.body.stem[0].kernel_size == (5, 5)
    assert meta["thresholds"] == {"generic": 0.4} and meta["stem_widened_from"]["stem_kernel"] == 3
    x = torch.randn(1, 1, 96, 112)
    with torch.no_grad():
        torch.testing.assert_close(copy.eval()(x), model(x), rtol=0, atol=0)
    with pytest.raises(SystemExit, match="odd and wider"):
        widen.widen_stem(source, 3, tmp_path / "c.pt")


def test_aggregate_places_are_written_and_named_in_the_manifest(tmp_path):
    script = load_script("recipes/generic/aggregate_places.py")
    folder = tmp_path / "cache" / "s1"
    (folder / "coordinates").mkdir(parents=True)
    (folder / "micrographs").mkdir()
    table = {"x_px": [10.0, 20.0, 30.0], "y_px": [5.0, 6.0, 7.0], "psi_deg": [0.0, 0.0, 0.0],
             "view": [1, 2, 3], "aggregate": [-1, 0, 0], "reason": ["", "aggregate", "aggregate"]}
    (folder / "particles").mkdir()
    write_particle_table(folder / "particles" / "sim_00000.star", table)
    write_particle_table(folder / "particles" / "sim_00001.star", {**table, "reason": ["", "", "edge"]})
    corpus = tmp_path / "corpus.toml"
    corpus.write_text("# the corpus\n[datasets.s1]\nmicrographs = \"cache/s1/micrographs/*.mrc\"\n"
                      "coordinates = \"cache/s1/coordinates\"\ndiameter_A = 100.0\n")
    assert script.main([str(corpus), "-o", str(tmp_path / "out.toml")]) == 0
    places = read_coordinates(folder / "aggregates" / "sim_00000.star")
    np.testing.assert_allclose(np.stack([places.x, places.y], 1), [[20.0, 6.0], [30.0, 7.0]])
    assert len(read_coordinates(folder / "aggregates" / "sim_00001.star")) == 0
    text = (tmp_path / "out.toml").read_text()
    assert 'ignore_coordinates = "cache/s1/aggregates"' in text and "# the corpus" in text
