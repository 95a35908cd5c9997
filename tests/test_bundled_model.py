"""The bundled generic model: safe to load, small, calibrated, and it finds particles it never saw."""

import importlib.resources

import numpy as np
import torch

from hydrapick.config import SimulationConfig
from hydrapick.evaluation import evaluate
from hydrapick.io import write_micrograph
from hydrapick.picking import load_model, pick_micrographs
from hydrapick.simulation import procedural_structure, simulate_micrograph


def test_bundled_model_loads_without_unpickling_code_and_is_small():
    ref = importlib.resources.files("hydrapick") / "weights" / "generic.pt"
    with importlib.resources.as_file(ref) as path:
        assert path.stat().st_size < 40e6
        raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hydrapick-checkpoint"
    model, metadata = load_model()
    assert model.head_names == []
    assert 0.0 < metadata["thresholds"]["generic"] < 1.0
    assert metadata["provenance"]["dataset_heads_dropped"]
    assert "4hhb" in metadata["provenance"]["training_data"]  # held-out targets are recorded


def test_bundled_model_picks_an_unseen_particle(tmp_path):
    torch.set_num_threads(1)
    # A shape and seed outside the training corpus (recipes/generic/datasets.txt).
    structure = procedural_structure("dihedral", np.random.default_rng(777), mass_kDa=700)
    # A clean field (no carbon, contamination or aggregates), so every placed particle away from the edge
    # is labelled and the score measures the model rather than the label policy.
    config = SimulationConfig(
        shape_px=(640, 640), pixel_size_A_range=(3.0, 3.0), dose_e_per_A2_range=(40, 40),
        carbon_probability=0.0, contamination_probability=0.0, aggregate_probability=0.0,
        ice_crystal_probability=0.0, coverage_range=(0.15, 0.15), min_separation_range=(1.1, 1.1))
    sim = simulate_micrograph(config, seed=4, structure=structure)
    assert len(sim.picks) >= 5
    path = tmp_path / "unseen.mrc"
    write_micrograph(path, sim.image, sim.pixel_size_A)
    [result] = list(pick_micrographs([path], diameter_A=sim.diameter_A, device="cpu"))
    assert result.ok, result.error
    report = evaluate(sim.picks.with_micrograph("unseen"), result.picks,
                      box_px=sim.diameter_A / sim.pixel_size_A)
    assert report.ap > 0.7, report.ap
