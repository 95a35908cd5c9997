"""`hydrapick evaluate` on small STAR / Topaz files with known scores."""

import json

import mrcfile
import numpy as np
import pytest
from click.testing import CliRunner

from hydrapick.cli import cli

STAR_HEADER = "\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
HEIGHT = 400

# Evaluated micrographs m1, m2, m3 (m3 has no particles: an empty truth file); m4 has picks only.
TRUTH = {"m1": [(100, 100), (200, 100), (300, 100)], "m2": [(100, 200), (200, 200)], "m3": []}
PICKS = [("m1", 100, 100, 0.9), ("m1", 201, 100, 0.8), ("m1", 300, 300, 0.7), ("m2", 100, 200, 0.6),
         ("m3", 50, 50, 0.5), ("m4", 10, 10, 0.95)]
# Ranked over m1-m3: TP TP FP TP FP of 5 particles -> precision 1, 1, 2/3, 3/4, 3/5 at recall
# .2 .4 .4 .6 .6; all-point AP = 0.2 + 0.2 + 0.2 * 0.75 = 0.55; best F1 = 2*3/(4+5) = 2/3 at score 0.6.
AP = 0.55
# With m4 included its 0.95 false pick comes first: AP = 0.2 * 2/3 + 0.2 * 2/3 + 0.2 * 0.6.
AP_WITH_M4 = 0.4 * 2 / 3 + 0.2 * 0.6


@pytest.fixture
def data(tmp_path):
    truth = tmp_path / "truth"
    truth.mkdir()
    for mic, rows in TRUTH.items():
        (truth / f"{mic}.star").write_text(STAR_HEADER + "".join(f"{x} {y}\n" for x, y in rows))
    star = tmp_path / "picks.star"
    star.write_text("\ndata_\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
                    "_rlnAutopickFigureOfMerit #4\n"
                    + "".join(f"Micrographs/{m}.mrc {x} {y} {s}\n" for m, x, y, s in PICKS))
    # The same picks as Topaz text with y counted from the bottom row.
    topaz = tmp_path / "topaz.txt"
    topaz.write_text("image_name\tx_coord\ty_coord\tscore\n"
                     + "".join(f"{m}\t{x}\t{HEIGHT - 1 - y}\t{s}\n" for m, x, y, s in PICKS))
    mics = tmp_path / "mics"
    mics.mkdir()
    rng = np.random.default_rng(0)
    for mic in ("m1", "m2", "m3"):
        with mrcfile.new(mics / f"{mic}.mrc") as mrc:
            mrc.set_data(rng.normal(size=(HEIGHT, 500)).astype(np.float32))
            mrc.voxel_size = 2.0
    return tmp_path


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_scores_match_hand_computed_values(data):
    out = data / "scores.json"
    result = run("--truth", data / "truth", "--picks", data / "picks.star", "--label", "hp", "--box", 20,
                 "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["hp"]
    assert report["ap"] == pytest.approx(AP)
    assert report["best_f1"] == pytest.approx(2 / 3) and report["best_f1_threshold"] == pytest.approx(0.6)
    assert (report["n_truth"], report["n_picks"], report["n_matched"]) == (5, 5, 3)
    assert report["skipped_picks"] == {"m4": 1}
    assert set(report["per_micrograph"]) == {"m1", "m2", "m3"}
    assert report["per_micrograph"]["m3"]["precision"] == 0.0
    assert "0.550" in result.output and "hp" in result.output and "m3" in result.output
    assert "--include-unlabelled" in result.output  # tells the user about m4


def test_include_unlabelled_counts_extra_micrographs(data):
    out = data / "scores.json"
    result = run("--truth", data / "truth", "--picks", data / "picks.star", "--box", 20, "--json", out,
                 "--include-unlabelled")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["picks"]
    assert report["ap"] == pytest.approx(AP_WITH_M4)
    assert report["n_picks"] == 6 and "skipped_picks" not in report


def test_two_pickers_flip_and_diameter(data):
    out = data / "scores.json"
    result = run("--truth", data / "truth", "--picks", data / "picks.star", "--picks", data / "topaz.txt",
                 "--label", "star", "--label", "topaz", "--diameter", 40, "--apix", 2, "--flip-y-picks",
                 "--image-height", HEIGHT, "--json", out)
    assert result.exit_code == 0, result.output
    pickers = json.loads(out.read_text())["pickers"]
    # The STAR picks were flipped too, so they no longer land on the particles; Topaz's now do.
    assert pickers["topaz"]["ap"] == pytest.approx(AP)
    assert pickers["star"]["n_matched"] < 3
    # Heights from the micrographs instead of --image-height give the same result.
    result = run("--truth", data / "truth", "--picks", data / "topaz.txt", "--box", 20, "--flip-y-picks",
                 "--micrographs", data / "mics", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["pickers"]["topaz"]["ap"] == pytest.approx(AP)


def test_threshold_and_plots(data):
    plots = data / "figs"
    out = data / "scores.json"
    # Box from --diameter and the MRC header's pixel size (2 A): 40 / 2 = 20 px.
    result = run("--truth", data / "truth", "--picks", data / "picks.star", "--label", "hp", "--diameter", 40,
                 "--micrographs", data / "mics", "--threshold", 0.75, "--plots", plots, "--overlays", 2,
                 "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["hp"]
    assert report["box_px"] == pytest.approx(20.0)
    assert (report["n_picks"], report["n_matched"]) == (2, 2) and report["precision"] == 1.0
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["overlay_hp_m1.png", "overlay_hp_m2.png", "pr.png", "roc.png"]
    assert all((plots / n).stat().st_size > 5_000 for n in names)


def test_border_leaves_out_truth_and_picks_near_the_edge(data):
    # Micrographs of 400 x 500 px at 2 A/px. 180 A = 90 px keeps 89.5 <= x < 409.5 and 89.5 <= y < 309.5:
    # every particle stays, the m3 pick at (50, 50) goes (it ranked last, so AP is unchanged).
    out = data / "scores.json"
    args = ["--truth", data / "truth", "--picks", data / "picks.star", "--box", 20, "--micrographs",
            data / "mics", "--json", out]
    result = run(*args, "--border", 180)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["picks"]
    assert (report["n_truth"], report["n_picks"], report["n_matched"]) == (5, 4, 3)
    assert report["ap"] == pytest.approx(AP)
    # 220 A = 110 px: only m2's particle at (200, 200) is left, and no pick.
    result = run(*args, "--border", 220)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["picks"]
    assert (report["n_truth"], report["n_picks"], report["n_matched"]) == (1, 0, 0)


@pytest.mark.parametrize("args, message", [
    (["--box", "20", "--border", "50"], "--border needs --micrographs"),
    (["--box", "20", "--diameter", "40"], "either --box or --diameter"),
    ([], "give the box size"),
    (["--diameter", "40"], "--diameter needs --apix"),
    (["--box", "20", "--flip-y-picks"], "--image-height or --micrographs"),
    (["--box", "20", "--label", "a", "--label", "b"], "--label was given 2 times for 1 --picks"),
    (["--box", "20", "--threshold", "0.1", "--threshold", "0.2"], "--threshold was given 2 times"),
])
def test_usage_errors_are_one_line(data, args, message):
    result = run("--truth", data / "truth", "--picks", data / "picks.star", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_bad_file_is_named(data):
    bad = data / "bad.txt"
    bad.write_text("something else entirely\n1 2 3\n")
    result = run("--truth", data / "truth", "--picks", bad, "--box", 20)
    assert result.exit_code == 1
    assert "bad.txt" in result.output and result.output.count("\n") == 1
    empty = data / "empty"
    empty.mkdir()
    result = run("--truth", empty, "--picks", data / "picks.star", "--box", 20)
    assert result.exit_code == 1 and "no coordinate files" in result.output


def test_box_from_each_micrograph_header(tmp_path):
    # Same 40 A particle at 2 A/px (20 px box) and 4 A/px (10 px box); each pick is 4 px off its particle,
    # which matches with a 20 px box (IoU 0.67) but not with a 10 px box (IoU 0.43).
    (tmp_path / "truth").mkdir()
    (tmp_path / "mics").mkdir()
    rows = []
    for mic, apix in (("fine", 2.0), ("coarse", 4.0)):
        (tmp_path / "truth" / f"{mic}.star").write_text(STAR_HEADER + "100 100\n")
        with mrcfile.new(tmp_path / "mics" / f"{mic}.mrc") as mrc:
            mrc.set_data(np.zeros((200, 200), dtype=np.float32))
            mrc.voxel_size = apix
        rows.append(f"{mic}\t104\t100\t0.5\n")
    (tmp_path / "picks.txt").write_text("image_name\tx_coord\ty_coord\tscore\n" + "".join(rows))
    out = tmp_path / "s.json"
    result = run("--truth", tmp_path / "truth", "--picks", tmp_path / "picks.txt", "--diameter", 40,
                 "--micrographs", tmp_path / "mics", "--json", out)
    assert result.exit_code == 0, result.output
    assert "box 10.0-20.0 px" in result.output
    per = json.loads(out.read_text())["pickers"]["picks"]["per_micrograph"]
    assert per["fine"]["n_matched"] == 1 and per["coarse"]["n_matched"] == 0
    assert per["coarse"]["box_px"] == 10.0
    (tmp_path / "mics" / "coarse.mrc").unlink()
    result = run("--truth", tmp_path / "truth", "--picks", tmp_path / "picks.txt", "--diameter", 40,
                 "--micrographs", tmp_path / "mics")
    assert result.exit_code == 1 and "no box size for micrograph 'coarse'" in result.output


def test_library_function_gives_the_command_scores(data):
    from hydrapick.evaluation import evaluate_picks_files

    out = data / "lib.json"
    result = evaluate_picks_files(data / "truth", [data / "picks.star"], labels=["hp"], box_px=20,
                                  json_path=out)
    report = result.reports["hp"]
    assert report.ap == pytest.approx(AP) and report.skipped_picks == {"m4": 1}
    assert result.box_px == 20 and result.json_path == out
    assert json.loads(out.read_text())["pickers"]["hp"]["ap"] == pytest.approx(AP)
    with pytest.raises(ValueError, match="either --box or --diameter"):
        evaluate_picks_files(data / "truth", data / "picks.star", box_px=20, diameter_A=40)


def test_a_truth_file_with_every_particle_twice_scores_as_the_clean_file(data):
    """Issue 36: a truth file written twice (or two label sets joined) halved the AP, silently."""
    out = data / "doubled.json"
    for mic, rows in TRUTH.items():  # each particle again, 1 px off
        (data / "truth" / f"{mic}.star").write_text(
            STAR_HEADER + "".join(f"{x} {y}\n{x + 1} {y}\n" for x, y in rows))
    result = run("--truth", data / "truth", "--picks", data / "picks.star", "--label", "hp", "--box", 20,
                 "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["pickers"]["hp"]
    assert report["ap"] == pytest.approx(AP) and report["n_truth"] == 5
    assert "merged 5 coincident" in result.output
