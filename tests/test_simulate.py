"""simulate_micrograph and simulate_dataset: determinism, labels, label policy, files and manifest."""

import tomllib

import mrcfile
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from hydrapick.config import SimulationConfig, from_dict
from hydrapick.io import read_coordinates
from hydrapick.simulation import procedural_structure, simulate_dataset, simulate_micrograph
from hydrapick.simulation.conditions import pixel_size_bounds
from hydrapick.simulation.dataset import micrograph_seed

FAST = dict(shape_px=(256, 256), n_views=8)
CLEAN = dict(contamination_probability=0.0, ice_crystal_probability=0.0)


@pytest.fixture(scope="module")
def globular():
    return procedural_structure("globular", 5, mass_kDa=80)


def test_same_seed_same_micrograph_and_different_seed_differs(globular):
    cfg = SimulationConfig(**FAST)
    a = simulate_micrograph(cfg, 7, globular)
    b = simulate_micrograph(cfg, 7, globular)
    c = simulate_micrograph(cfg, 8, globular)
    assert np.array_equal(a.image, b.image)
    assert a.params == b.params
    assert np.array_equal(a.picks.x, b.picks.x) and np.array_equal(a.picks.y, b.picks.y)
    assert not np.array_equal(a.image, c.image)
    # A generator seed works too and is just as reproducible.
    g1 = simulate_micrograph(cfg, np.random.default_rng(3), globular)
    g2 = simulate_micrograph(cfg, np.random.default_rng(3), globular)
    assert np.array_equal(g1.image, g2.image)


def test_procedural_particle_from_the_seed_is_reproducible():
    cfg = SimulationConfig(shape_px=(128, 128), n_views=4, structure_kind="globular",
                           structure_mass_kDa_range=(50.0, 70.0))
    a = simulate_micrograph(cfg, 2)
    b = simulate_micrograph(cfg, 2)
    assert np.array_equal(a.image, b.image)
    assert a.params["structure"]["fingerprint"] == b.params["structure"]["fingerprint"]


def test_labels_are_inside_the_image_and_on_the_particles(globular):
    cfg = SimulationConfig(shape_px=(384, 384), n_views=8, coverage_range=(0.15, 0.15),
                           aggregate_probability=0.0, carbon_probability=0.0, **CLEAN)
    sim = simulate_micrograph(cfg, 11, globular, layers=True)
    picks = sim.picks
    h, w = sim.image.shape
    radius = sim.diameter_px / 2
    assert len(picks) >= 5
    assert np.all(picks.diameter_px == pytest.approx(sim.diameter_A / sim.pixel_size_A))
    # Default policy: the whole particle is inside the image.
    assert picks.x.min() >= radius and picks.y.min() >= radius
    assert picks.x.max() <= w - 1 - radius and picks.y.max() <= h - 1 - radius
    density = sim.layers["particles_potential_V_A"]
    placed = sim.params["particles"]
    everyone = np.stack([placed["x_px"], placed["y_px"]], 1)
    d, _ = cKDTree(everyone).query(np.stack([picks.x, picks.y], 1), k=2)
    isolated = d[:, 1] > 1.6 * sim.diameter_px
    assert isolated.sum() >= 2
    yy, xx = np.indices(density.shape)
    smooth = gaussian_filter(density, sim.diameter_px / 6)
    for x, y in zip(picks.x[isolated], picks.y[isolated], strict=True):
        window = np.hypot(xx - x, yy - y) < 0.75 * sim.diameter_px
        weights = density[window]
        # The label is the particle's centre of mass ...
        assert np.sum(weights * xx[window]) / weights.sum() == pytest.approx(x, abs=0.5)
        assert np.sum(weights * yy[window]) / weights.sum() == pytest.approx(y, abs=0.5)
        # ... and the (smoothed) projected density peaks there.
        iy, ix = np.unravel_index(np.argmax(np.where(window, smooth, -np.inf)), smooth.shape)
        assert np.hypot(ix - x, iy - y) < 0.15 * sim.diameter_px


def test_particles_are_dark_in_the_noise_free_image(globular):
    cfg = SimulationConfig(shape_px=(256, 256), n_views=8, coverage_range=(0.2, 0.2), carbon_probability=0.0,
                           particle_diameter_px_range=(24.0, 40.0), defocus_um_range=(2.0, 2.0),
                           phase_plate_probability=0.0, **CLEAN)
    sim = simulate_micrograph(cfg, 3, globular, layers=True)
    assert len(sim.picks) >= 3
    expected = sim.layers["expected_counts"]
    low = gaussian_filter(expected, sim.diameter_px / 4)
    on = low[np.round(sim.picks.y).astype(int), np.round(sim.picks.x).astype(int)]
    assert np.median(on) < np.median(low)


def test_label_policy_carbon_and_aggregates(globular):
    base = dict(FAST, **CLEAN, carbon_probability=1.0, carbon_particle_density_range=(1.0, 1.0),
                aggregate_probability=1.0, coverage_range=(0.2, 0.2), pixel_size_A_range=(4.0, 4.0))
    strict = simulate_micrograph(SimulationConfig(**base), 21, globular)
    placed = strict.params["particles"]
    reasons = np.array(placed["reason"])
    assert "aggregate" in reasons
    hole = strict.params["support"]["hole"]
    x, y = np.array(placed["x_px"]), np.array(placed["y_px"])
    on_film = np.hypot(x - hole["centre_x_px"], y - hole["centre_y_px"]) > hole["radius_px"]
    labelled = reasons == ""
    assert labelled.sum() == len(strict.picks)
    assert not np.any(labelled & on_film)
    assert not np.any(labelled & (np.array(placed["aggregate"]) >= 0))
    lenient = simulate_micrograph(SimulationConfig(**base, label_on_carbon=True, label_in_aggregates=True),
                                  21, globular)
    reasons2 = np.array(lenient.params["particles"]["reason"])
    assert set(reasons2) <= {"", "edge"}
    assert len(lenient.picks) > len(strict.picks)


def test_overlap_policy_and_edge_margin(globular):
    cfg = SimulationConfig(**FAST, coverage_range=(0.4, 0.4), min_separation_range=(0.6, 0.6),
                           label_overlapping=False, overlap_fraction=0.9, label_edge_margin=0.0,
                           aggregate_probability=0.0, carbon_probability=0.0, **CLEAN)
    sim = simulate_micrograph(cfg, 5, globular)
    placed = sim.params["particles"]
    reasons = np.array(placed["reason"])
    pts = np.stack([placed["x_px"], placed["y_px"]], 1)
    d, _ = cKDTree(pts).query(pts, k=2)
    assert np.all(reasons[d[:, 1] < 0.9 * sim.diameter_px] != "")
    # With no margin, a label only needs its centre inside the image.
    assert sim.picks.x.min() >= 0 and sim.picks.x.max() <= 255


def test_drawn_conditions_stay_in_their_ranges(globular):
    cfg = SimulationConfig(**FAST, dose_e_per_A2_range=(20.0, 30.0), defocus_um_range=(1.0, 2.0))
    lo, hi = pixel_size_bounds(cfg, globular.diameter_A)
    for seed in range(3):
        sim = simulate_micrograph(cfg, seed, globular)
        c = sim.params["conditions"]
        assert lo <= sim.pixel_size_A <= hi
        assert 20.0 <= c["dose_e_per_A2"] <= 30.0
        mean_defocus = 0.5 * (c["ctf"]["defocus_u_A"] + c["ctf"]["defocus_v_A"])
        assert 1e4 <= mean_defocus <= 2e4
        assert cfg.particle_diameter_px_range[0] <= sim.diameter_px <= cfg.particle_diameter_px_range[1]


def test_pixel_size_bounds():
    cfg = SimulationConfig(pixel_size_A_range=(1.0, 4.0), particle_diameter_px_range=(50.0, 100.0))
    assert pixel_size_bounds(cfg, 200.0) == (2.0, 4.0)
    assert pixel_size_bounds(cfg, 40.0) == (1.0, 1.0)  # too small for the range: finest pixel
    assert pixel_size_bounds(cfg, 1000.0) == (4.0, 4.0)  # too big: coarsest pixel


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="dose_e_per_A2_range"):
        SimulationConfig(dose_e_per_A2_range=(30.0, 10.0))
    with pytest.raises(ValueError, match="carbon_probability"):
        SimulationConfig(carbon_probability=1.5)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(SimulationConfig, {"dose": 3})
    cfg = from_dict(SimulationConfig, {"pixel_size_A_range": [1.0, 2.0]})
    assert cfg.pixel_size_A_range == (1.0, 2.0)


def test_simulate_dataset_files_manifest_and_reproduction(tmp_path, globular):
    cfg = SimulationConfig(shape_px=(128, 128), n_views=4, coverage_range=(0.3, 0.3))
    calls = []
    manifest = simulate_dataset(tmp_path / "sim", 2, cfg, structure=globular, seed=9,
                                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    with open(manifest, "rb") as fh:
        data = tomllib.load(fh)
    assert data["simulation"]["seed"] == 9
    assert data["simulation"]["structure"]["fingerprint"] == globular.fingerprint
    records = data["micrograph"]
    assert [r["name"] for r in records] == ["sim_00000", "sim_00001"]
    for i, rec in enumerate(records):
        assert rec["seed"] == micrograph_seed(9, i)
        with mrcfile.open(tmp_path / "sim" / rec["micrograph"]) as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(rec["pixel_size_A"], rel=1e-5)
            image = mrc.data.copy()
        assert rec["diameter_A"] == pytest.approx(globular.diameter_A)
        picks = read_coordinates(tmp_path / "sim" / rec["coordinates"])
        assert len(picks) == rec["n_particles"] == rec["params"]["particles"]["n_labelled"]
        # Any micrograph can be re-made alone from its recorded seed.
        again = simulate_micrograph(cfg, rec["seed"], globular)
        assert np.array_equal(again.image, image)
        assert np.allclose(np.sort(again.picks.x), np.sort(picks.x), atol=1e-3)
        table = (tmp_path / "sim" / rec["params"]["particles"]["table"]).read_text()
        assert table.count("\n") >= rec["params"]["particles"]["n_placed"]
