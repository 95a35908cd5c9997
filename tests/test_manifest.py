"""Manifest parsing and checks: every problem reported at once, before any micrograph is read.

Manifests that load (and the data they describe) are tested in test_data.py, whose helpers these tests share.
"""

import pytest
from test_data import SIMULATED, _manifest, _write_dataset

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
    expected = ["unknown top-level key 'colour'", "nowhere/*.mrc' matches no MRC micrographs",
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
