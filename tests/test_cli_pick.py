"""`hydrapick pick` on simulated micrographs: every output format, failures, shards, skip-existing, previews.

The tiny blob-trained model and the micrograph helpers come from test_picking.py (trained once per run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_picking import DIAMETER_A, THRESHOLD, match_fraction, trained_checkpoint, write_blob_micrographs

from hydrapick.cli import cli
from hydrapick.cli.pick import PICK_EXIT_FAILED
from hydrapick.io import read_coordinate_folder, read_coordinates, write_micrograph
from hydrapick.picking import pick
from hydrapick.picks import micrograph_key

PIXEL_SIZE_A = 2.0
DIAMETER_PX = DIAMETER_A / PIXEL_SIZE_A




@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with Movies/mic_00{0,1,2}.mrc (6 blobs each, 240 x 320); returns {name: true centres}."""
    monkeypatch.chdir(tmp_path)
    truth = write_blob_micrographs(Path("Movies"), 3, pixel_size_A=PIXEL_SIZE_A, particles=6, seed=21)
    return {str(Path(k)): v for k, v in truth.items()}


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["pick", *args], env=env, catch_exceptions=False)


def base_args(*extra: str) -> list[str]:
    return ["Movies/*.mrc", "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A), *extra]


def by_micrograph(picks) -> dict[str, object]:
    return {micrograph_key(name): p for name, p in picks.by_micrograph()}


def assert_found(picks, truth, tolerance_px=0.15 * DIAMETER_PX):
    found = by_micrograph(picks)
    assert set(found) == {micrograph_key(k) for k in truth}
    for name, pts in truth.items():
        recall, precision = match_fraction(found[micrograph_key(name)], pts, tolerance_px)
        assert recall == 1.0 and precision == 1.0, (name, recall, precision)


@pytest.mark.parametrize("fmt, output", [("star", "picks.star"), ("relion", "AutoPick/job007"),
                                         ("box", "boxes"), ("topaz", "picks.txt"), ("cs", "picks.cs")])
def test_pick_finds_the_particles_in_every_format(project, fmt, output):
    result = run(*base_args("-o", output, "--format", fmt))
    assert result.exit_code == 0, result.output
    assert "picked" in result.output and "micrographs/s" in result.output
    if fmt == "box":
        picks = read_coordinate_folder(output, "box")
        candidates = read_coordinate_folder(f"{output}/candidates", "box")
    elif fmt == "relion":
        picks = read_coordinates(output, "relion")
        candidates = read_coordinates(f"{output}/candidates.star")
        assert Path(output, "Movies", "mic_000_autopick.star").is_file()  # the micrograph tree, mirrored
    else:
        picks = read_coordinates(output)
        candidates = read_coordinates(output.replace(".", "_candidates."))
    # Topaz stores whole pixels; everything else keeps sub-pixel positions.
    assert_found(picks, project, tolerance_px=0.15 * DIAMETER_PX + (1 if fmt == "topaz" else 0))
    assert len(candidates) >= len(picks) and np.nanmin(picks.score) >= THRESHOLD
    if fmt in ("star", "relion", "cs"):
        assert set(picks.micrograph) == set(project)  # _rlnMicrographName / micrograph_path as given

    # The same picks from the Python API (which measures the same scale on the same micrographs).
    report = pick(sorted(project), None, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    api = {micrograph_key(name): report.picks.for_micrograph(name) for name in report.picks.micrographs()}
    for key, cli_picks in by_micrograph(picks).items():
        ref = api[key]
        order, ref_order = np.lexsort((cli_picks.y, cli_picks.x)), np.lexsort((ref.y, ref.x))
        atol = 0.51 if fmt in ("topaz", "box") else 1e-3  # both write whole pixels
        np.testing.assert_allclose(cli_picks.x[order], ref.x[ref_order], atol=atol)
        np.testing.assert_allclose(cli_picks.y[order], ref.y[ref_order], atol=atol)


def test_default_format_from_the_output_name(project):
    assert run(*base_args("-o", "out.star", "-q")).exit_code == 0
    assert_found(read_coordinates("out.star"), project)
    assert run(*base_args("-o", "AutoPick/job002", "-q")).exit_code == 0
    assert Path("AutoPick/job002/autopick.star").is_file()


def test_corrupt_micrograph_is_reported_and_the_rest_picked(project):
    Path("Movies/mic_009.mrc").write_bytes(b"MRC" * 50)
    result = run(*base_args("-o", "picks.star"))
    assert result.exit_code == PICK_EXIT_FAILED == 3
    assert "Movies/mic_009.mrc" in result.output and "failed" in result.output
    assert_found(read_coordinates("picks.star"), project)


def test_threshold_option_and_calibrated_default(project):
    run(*base_args("-o", "default.star", "-q"))
    run(*base_args("-o", "strict.star", "-q", "--threshold", "0.9"))
    default, strict = read_coordinates("default.star"), read_coordinates("strict.star")
    assert np.nanmin(default.score) >= THRESHOLD and np.nanmin(strict.score) >= 0.9
    assert len(strict) < len(default)
    # Candidates do not depend on the threshold.
    assert len(read_coordinates("default_candidates.star")) == len(read_coordinates("strict_candidates.star"))


def test_shard_option_and_slurm_array_environment(project):
    for k in range(2):
        assert run(*base_args("-o", "AutoPick/job003", "--shard", f"{k}/2", "-q")).exit_code == 0
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    result = run(*base_args("-o", "picks.star"), env=env)
    assert result.exit_code == 0 and "shard 1/2" in result.output
    assert [micrograph_key(m) for m in read_coordinates("picks.shard1of2.star").micrographs()] == ["mic_001"]
    merge = run(*base_args("-o", "AutoPick/job003", "--skip-existing"))
    assert merge.exit_code == 0, merge.output
    assert_found(read_coordinates("AutoPick/job003", "relion"), project)


def test_skip_existing(project):
    assert run(*base_args("-o", "AutoPick/job004", "-q")).exit_code == 0
    Path("AutoPick/job004/Movies/mic_001_autopick.star").unlink()
    result = run(*base_args("-o", "AutoPick/job004", "--skip-existing"))
    assert result.exit_code == 0
    assert "skipped (outputs exist)" in result.output
    assert_found(read_coordinates("AutoPick/job004", "relion"), project)


def test_preview_writes_pngs(project):
    pytest.importorskip("matplotlib")
    result = run(*base_args("-o", "picks.star", "--preview", "previews", "-q"))
    assert result.exit_code == 0
    pngs = sorted(p.name for p in Path("previews").glob("*.png"))
    assert pngs == ["mic_000.png", "mic_001.png", "mic_002.png"]
    assert all(Path("previews", p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_tta_option(project):
    result = run(*base_args("-o", "plain.star", "-q"))
    assert result.exit_code == 0, result.output
    result = run(*base_args("-o", "tta.star", "--tta", "-q"))
    assert result.exit_code == 0, result.output
    picks = read_coordinates("tta.star")
    assert_found(picks, project, tolerance_px=0.15 * DIAMETER_PX)
    assert not np.array_equal(np.sort(picks.score), np.sort(read_coordinates("plain.star").score))


def test_scales_option(project):
    result = run(*base_args("-o", "scales.star", "--scales", "0.89,1,1.12", "-q"))
    assert result.exit_code == 0, result.output
    assert_found(read_coordinates("scales.star"), project)
    result = run(*base_args("-o", "bad.star", "--scales", "0.9;1.1"))
    assert result.exit_code == 2 and "--scales" in result.output and "comma-separated" in result.output
    assert not Path("bad.star").exists()


def test_quiet_prints_nothing(project):
    result = run(*base_args("-o", "picks.star", "-q"))
    assert result.exit_code == 0 and result.output == ""


def test_apix_overrides_the_header(project):
    write_micrograph("Other/unset.mrc", np.zeros((64, 64), np.float32), 1.0)  # 1.0: "unset"
    result = run("Other/unset.mrc", "--model", trained_checkpoint(), "--diameter", "72", "-o", "a.star")
    assert result.exit_code == PICK_EXIT_FAILED and "--apix" in result.output
    result = run("Other/unset.mrc", "--model", trained_checkpoint(), "--diameter", "72", "--apix", "2",
                 "-o", "a.star")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, message", [
    (["Movies/*.mrc", "-o", "x.star"], "bundled generic model"),
    (["nothing/*.mrc", "--diameter", "72", "-o", "x.star"], "no MRC, TIFF, PNG or JPEG micrographs match"),
    (["Movies/*.mrc", "--diameter", "72", "-o", "x.box"], "holds one micrograph"),
    (["Movies/*.mrc", "--diameter", "72", "-o", "x.star", "--shard", "2/2"], "shard"),
    (["Movies/*.mrc", "--diameter", "72", "-o", "x.star", "--skip-existing"], "folder output"),
    (["Movies/*.mrc", "--diameter", "72", "-o", "x.star", "--head", "nope"], "no head named 'nope'"),
    (["Movies/*.mrc", "-o", "x.star", "--no-calibrate"], "--diameter"),
])
def test_bad_options_give_one_clear_line(project, args, message, monkeypatch):
    import hydrapick.checkpoint

    if message != "bundled generic model":
        args = [*args, "--model", trained_checkpoint()]
    monkeypatch.setattr(hydrapick.checkpoint, "BUNDLED_MODEL", "not-here.pt")
    result = CliRunner().invoke(cli, ["pick", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_sigterm_stops_the_command_with_the_lock_released_and_a_non_zero_status(project, monkeypatch, capsys):
    import os
    import signal
    import sys

    from test_relion_external import interrupt_after

    from hydrapick.cli.group import main
    from hydrapick.picking import outputs

    original = outputs.PickOutputs.write_micrograph
    interrupt_after(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    monkeypatch.setattr(sys, "argv", ["hydrapick", "pick", *base_args("-o", "AutoPick/job009")])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert "SIGTERM" in capsys.readouterr().err
    assert len(list(Path("AutoPick/job009").rglob("*_autopick.star"))) == 2  # candidates/ and main: one mic
    assert not list(Path("AutoPick/job009").glob(".*.lock"))
    monkeypatch.setattr(outputs.PickOutputs, "write_micrograph", original)
    assert run(*base_args("-o", "AutoPick/job009", "--skip-existing")).exit_code == 0
    assert_found(read_coordinates("AutoPick/job009", "relion"), project)
