"""Manifest parsing and checks: every problem reported at once, before any micrograph is read.

Manifests that load (and the data they describe) are tested in test_data.py, whose helpers these tests share.
"""

import numpy as np
import pytest
from test_data import MODEL, SIMULATED, _manifest, _write_dataset

from hydrapick.io import write_coordinates
from hydrapick.picks import Picks
from hydrapick.training.datasets import load_datasets
from hydrapick.training.manifest import ManifestError, read_manifest


def test_manifest_lists_every_problem_at_once(tmp_path):
    _write_dataset(tmp_path / "a", n=2)
    path = _manifest(tmp_path, """
colour = "blue"
[datasets.alpha]
micrographs = "nowhere/*.mrc"
coordinates = "missing_folder"
pixel_size_A = -1
shape = 3
[datasets.beta]
micrographs = "a/mics"
coordinates = "a/coords"
diameter_A = 100
valid = ["mic_000"]
test = ["mic_000"]
[datasets.generic]
micrographs = "a/mics"
coordinates = "a/coords"
diameter_A = 100
[datasets.gamma.simulated]
n_micrographs = 0
""")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    problems = info.value.problems
    expected = ["unknown top-level key 'colour'", "nowhere/*.mrc' matches no MRC, TIFF, PNG or JPEG",
                "missing_folder' does not exist", "pixel_size_A must be a positive", "unknown key 'shape'",
                "'diameter_A' (particle diameter in Å) is missing", "'mic_000' is in both 'valid' and 'test'",
                "'generic' is reserved", "n_micrographs must be a positive integer"]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert str(path) in str(info.value) and f"{len(problems)} problems" in str(info.value)


def test_invalid_toml_is_one_problem(tmp_path):
    with pytest.raises(ManifestError, match="not valid TOML"):
        read_manifest(_manifest(tmp_path, "[datasets.a\n"))
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "absent.toml")


def test_simulated_dataset_problems(tmp_path):
    text = SIMULATED.replace("n_views = 8", "n_views = 8\ncolour = 1").replace(
        "seed = 4", "seed = 4\nstructure = 'missing.pdb'")
    with pytest.raises(ManifestError) as info:
        read_manifest(_manifest(tmp_path, text))
    joined = "\n".join(info.value.problems)
    assert "unknown key(s) colour" in joined
    assert "give either 'structure' or 'procedural'" in joined and "missing.pdb' does not exist" in joined
    assert "mass_kDa and symmetry apply to procedural particles" in joined
    text = SIMULATED.replace("[datasets.sim.simulated]", 'valid = ["sim_0009"]\n[datasets.sim.simulated]')
    with pytest.raises(ManifestError, match="no simulated micrograph named sim_0009"):
        read_manifest(_manifest(tmp_path, text))


def test_ignore_coordinates_reach_the_samples_at_model_scale(tmp_path):
    # Places to ignore are read like labels (per-micrograph files, y flipped with flip_y) and moved
    # to model pixels with them; they are never counted as particles.
    written = _write_dataset(tmp_path / "a", n=2, per_mic=3)
    unsure = _write_dataset(tmp_path / "u", n=2, per_mic=4, seed=9)  # its micrographs are not used
    path = _manifest(tmp_path, """
valid_fraction = 0.0
test_fraction = 0.0
[datasets.alpha]
micrographs = "a/mics/*.mrc"
coordinates = "a/coords"
ignore_coordinates = "u/coords"
diameter_A = 32.0
flip_y = true
""")
    (ds,) = load_datasets(read_manifest(path), MODEL)
    for sample in ds.train:
        assert len(sample.centres) == 3 and len(sample.ignore) == 4
        # 2 Å/px to a 32-px model particle of 32 Å doubles every coordinate; flip_y mirrors y in 200 rows.
        want = unsure[sample.name]
        np.testing.assert_allclose(sample.ignore[:, 0].numpy(), (want.x + 0.5) * 2 - 0.5, atol=1e-3)
        np.testing.assert_allclose(sample.ignore[:, 1].numpy(), (200 - 1 - want.y + 0.5) * 2 - 0.5, atol=1e-3)
        assert len(written[sample.name]) == 3
    assert ds.summary()["ignored_train"] == 8


def test_ignore_coordinates_problems(tmp_path):
    _write_dataset(tmp_path / "a", n=2)
    far = tmp_path / "far"
    far.mkdir()
    write_coordinates(Picks("mic_000", np.array([5000.0]), np.array([10.0])), far / "mic_000.star")
    text = """
[datasets.alpha]
micrographs = "a/mics/*.mrc"
coordinates = "a/coords"
diameter_A = 32.0
ignore_coordinates = "{}"
"""
    with pytest.raises(ManifestError, match="ignore_coordinates: '.*nowhere' does not exist"):
        read_manifest(_manifest(tmp_path, text.format("nowhere")))
    with pytest.raises(ManifestError, match=r"1 ignore coordinate\(s\) of 'mic_000' lie outside"):
        load_datasets(read_manifest(_manifest(tmp_path, text.format("far"))), MODEL)
    simulated = SIMULATED.replace("diameter_A = 120", "diameter_A = 120\nignore_coordinates = 'far'")
    with pytest.raises(ManifestError, match="'ignore_coordinates' does not apply to a simulated dataset"):
        read_manifest(_manifest(tmp_path, simulated))
