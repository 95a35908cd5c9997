"""Bad input files give one clear line naming the file, and a non-zero exit (no traceback)."""

import numpy as np
from click.testing import CliRunner

from hydrapick.checkpoint import save_checkpoint
from hydrapick.cli import cli
from hydrapick.config import ModelConfig
from hydrapick.io import write_micrograph
from hydrapick.model import HydraPicker


def test_star_without_coordinate_columns(tmp_path):
    bad = tmp_path / "mic_001.star"
    bad.write_text("data_\n\nloop_\n_rlnDefocusU #1\n_rlnMicrographName #2\n10000 mic_001.mrc\n")
    good = tmp_path / "picks.star"
    good.write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 20\n")
    result = CliRunner().invoke(cli, ["evaluate", "--truth", str(bad), "--picks", str(good), "--box", "20"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0
    assert "mic_001.star" in result.output and "_rlnCoordinateX" in result.output


def test_corrupt_mrc_is_one_line_and_non_zero(tmp_path):
    model = tmp_path / "tiny.pt"
    config = ModelConfig.light(stem_stride=4, body_channels=8, head_channels=(8, 8, 8, 8))
    save_checkpoint(model, HydraPicker(config), {"thresholds": {"generic": 0.5}})
    good = tmp_path / "good.mrc"
    write_micrograph(good, np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32), 2.0)
    corrupt = tmp_path / "corrupt.mrc"
    corrupt.write_bytes(good.read_bytes()[:2000])  # header intact, data cut short
    result = CliRunner().invoke(cli, ["pick", str(good), str(corrupt), "--model", str(model), "--diameter",
                                      "40", "-o", str(tmp_path / "picks.star"), "--quiet"])
    assert result.exit_code == 3  # some micrographs failed, the others were picked (docs/picking.md)
    lines = [line for line in result.output.splitlines() if "corrupt.mrc" in line]
    assert len(lines) == 1 and "truncated" in lines[0], result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "picks.star").exists()  # the good micrograph was still picked
