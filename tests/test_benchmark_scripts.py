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
from hydrapick.picks import Picks
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


def test_real_background_composites_paste_far_from_labels_at_the_real_contrast():
    script = load_script("recipes/generic/real_backgrounds.py")
    assert {"4hhb", "6b7n", "6msm"} <= script.held_out_targets()
    rng = np.random.default_rng(0)
    pixel, diameter = 4.0, 64.0  # 16-px particles
    d = diameter / pixel
    # A real-looking micrograph: labelled dark discs on the left half, noise everywhere, 8-bit.
    gx, gy = np.meshgrid(np.arange(24.0, 110.0, 18.0), np.arange(24.0, 232.0, 18.0))
    labels = Picks(x=gx.ravel(), y=gy.ravel())
    yy, xx = np.mgrid[:256, :256]
    clean = np.zeros((256, 256))
    for x, y in zip(labels.x, labels.y, strict=True):
        clean -= 3.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (d / 4) ** 2))
    clean[150:200, 170:220] -= 30.0  # contamination on the free half: no particle is pasted on it
    image = np.clip(np.round(clean + rng.normal(0, 4.0, clean.shape)), -128, 127).astype(np.int8)
    structure = script.procedural_structure("globular", 3, mass_kDa=40.0)
    out, pasted, record = script.composite(image, labels, pixel, diameter, structure,
                                           np.random.default_rng(1), n_max=12)
    assert out.dtype == np.int8 and len(pasted) > 3
    assert record["n_real"] == len(labels) and record["n_pasted"] == len(pasted)
    # Every pasted centre is a diameter from every label, from each other and from the edge.
    gap = np.hypot(pasted.x[:, None] - labels.x[None], pasted.y[:, None] - labels.y[None])
    assert gap.min() >= d
    own = np.hypot(pasted.x[:, None] - pasted.x[None], pasted.y[:, None] - pasted.y[None])
    assert own[~np.eye(len(pasted), dtype=bool)].min() >= d
    assert min(pasted.x.min(), pasted.y.min(), 255 - pasted.x.max(), 255 - pasted.y.max()) >= d - 1
    assert not np.any((pasted.x > 170 - d / 2) & (pasted.x < 220 + d / 2)
                      & (pasted.y > 150 - d / 2) & (pasted.y < 200 + d / 2))
    # The pasted particles carry the real ones' band-passed power (signal on the same noise).
    power = record["band_power"]
    assert power["real_labels"] > 1.2 * power["background"]
    assert abs(power["pasted_composite"] - power["real_labels"]) < 0.25 * power["real_labels"]
    # Away from the pasted particles the real micrograph is untouched (up to rounding of the CTF tails).
    near = np.hypot(xx[..., None] - pasted.x, yy[..., None] - pasted.y).min(-1) < 2 * d
    assert np.abs(out.astype(int) - image.astype(int))[~near].mean() < 0.2
    again, _, _ = script.composite(image, labels, pixel, diameter, structure, np.random.default_rng(1),
                                   n_max=12)
    assert np.array_equal(again, out)
