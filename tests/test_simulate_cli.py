"""`hydrapick simulate`: files, options, reproducibility and error messages."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from click.testing import CliRunner

from hydrapick.cli import cli

SMALL = ["--size", "128", "--shape", "globular", "--mass", "50", "-q"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"


def _run(*args):
    return CliRunner().invoke(cli, ["simulate", *args])


def test_simulate_procedural_writes_a_dataset(tmp_path):
    out = tmp_path / "sim"
    result = _run("-n", "2", "-o", str(out), "--seed", "4", "--pixel-size", "2.5", "--dose", "30-40",
                  "--config", str(_config(tmp_path)), *SMALL)
    assert result.exit_code == 0, result.output
    mrcs = sorted((out / "micrographs").glob("*.mrc"))
    stars = sorted((out / "coordinates").glob("*.star"))
    assert [m.stem for m in mrcs] == [s.stem for s in stars] == ["sim_00000", "sim_00001"]
    with mrcfile.open(mrcs[0]) as mrc:
        assert mrc.data.shape == (128, 128)
        assert float(mrc.voxel_size.x) == pytest.approx(2.5)
    manifest = (out / "manifest.toml").read_text()
    assert "dose_e_per_A2_range = [\n    30.0,\n    40.0,\n]" in manifest
    assert "n_views = 4" in manifest  # from the --config file
    # Same seed, same data; an existing dataset is not overwritten without --force.
    again = _run("-n", "2", "-o", str(out), "--seed", "4", "--pixel-size", "2.5", "--dose", "30-40",
                 "--config", str(_config(tmp_path)), *SMALL)
    assert again.exit_code == 1 and "--force" in again.output
    copy = tmp_path / "copy"
    assert _run("-n", "1", "-o", str(copy), "--seed", "4", "--pixel-size", "2.5", "--dose", "30-40",
                "--config", str(_config(tmp_path)), *SMALL).exit_code == 0
    with mrcfile.open(mrcs[0]) as a, mrcfile.open(copy / "micrographs" / "sim_00000.mrc") as b:
        assert np.array_equal(a.data, b.data)


def _config(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text("n_views = 4\ncontamination_probability = 0.0\n")
    return path


def test_simulate_reports_bad_input(tmp_path):
    result = _run("-n", "1", "-o", str(tmp_path / "a"), "--structure", str(tmp_path / "missing.pdb"))
    assert result.exit_code == 1
    assert "missing.pdb" in result.output and "does not exist" in result.output
    result = _run("-n", "1", "-o", str(tmp_path / "b"), "--dose", "40-10")
    assert result.exit_code == 2 and "low end above its high end" in result.output
    result = _run("-n", "1", "-o", str(tmp_path / "c"), "--pixel-size", "big")
    assert result.exit_code == 2 and "not a number or a range" in result.output
    result = _run("-n", "1", "-o", str(tmp_path / "d"), "--shape", "blob", "--size", "64", "-q")
    assert result.exit_code == 1 and "unknown procedural kind" in result.output
    result = _run("-n", "1", "-o", str(tmp_path / "e"), "--size", "10")
    assert result.exit_code == 2 and "at least 32" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("dose = 3\n")
    result = _run("-n", "1", "-o", str(tmp_path / "f"), "--config", str(bad))
    assert result.exit_code == 1 and "unknown key" in result.output


@pytest.mark.skipif(not (SHARED / "4hhb.pdb").exists(), reason="../shared not available")
def test_simulate_from_a_pdb_file(tmp_path):
    out = tmp_path / "hb"
    result = _run("--structure", str(SHARED / "4hhb.pdb"), "-n", "1", "-o", str(out), "--size", "128",
                  "--pixel-size", "1.5", "--config", str(_config(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "4hhb" in (out / "manifest.toml").read_text()
    assert "labelled particles" in result.output  # the summary table


def test_library_simulate_makes_what_the_command_makes(tmp_path):
    from hydrapick.simulation import simulate

    assert _run("-n", "1", "-o", str(tmp_path / "cli"), "--seed", "4", "--pixel-size", "2.5",
                "--config", str(_config(tmp_path)), *SMALL).exit_code == 0
    dataset = simulate(tmp_path / "lib", 1, config=_config(tmp_path), seed=4, shape="globular", mass_kDa=50,
                       settings={"shape_px": (128, 128), "pixel_size_A_range": (2.5, 2.5)})
    assert dataset.manifest == tmp_path / "lib" / "manifest.toml"
    assert dataset.micrographs[0]["name"] == "sim_00000" and dataset.micrographs[0]["pixel_size_A"] == 2.5
    name = "micrographs/sim_00000.mrc"
    with mrcfile.open(tmp_path / "cli" / name) as a, mrcfile.open(tmp_path / "lib" / name) as b:
        assert np.array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="already holds a simulated dataset"):
        simulate(tmp_path / "lib", 1, config=_config(tmp_path), seed=4)
    with pytest.raises(ValueError, match="are for procedural particles"):
        simulate(tmp_path / "x", 1, structure="model.pdb", shape="globular")
