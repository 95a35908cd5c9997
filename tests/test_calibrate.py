"""Scale calibration (`hydrapick.picking.calibrate`): the picker measures the particle's size on the data,
with the tiny model of test_picking.py on micrographs of blobs of a known size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_picking import DIAMETER_A, match_fraction, trained_checkpoint, write_blob_micrographs

import hydrapick.picking.run as run_module
from hydrapick.io import write_micrograph
from hydrapick.picking import pick
from hydrapick.picking.calibrate import (
    CALIBRATION_FILE,
    CRITERION_TOLERANCE,
    ScaleCalibration,
    calibrate_scale,
    criterion,
    grid_diameter,
    grid_ladder,
    peak_diameter,
    window_top,
)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Four micrographs of blobs DIAMETER_A wide (2 Å/px); {path: centres}."""
    return write_blob_micrographs(tmp_path_factory.mktemp("blobs"), 4, particles=8, seed=3, shape=(320, 320))


def test_ladder_is_log_spaced_and_the_criterion_averages_the_best_scores():
    ladder = [grid_diameter(n) for n in grid_ladder(50.0, 200.0)]
    assert ladder[0] == 50.0 and ladder[-1] == pytest.approx(200.0) and len(ladder) == 5
    np.testing.assert_allclose(np.diff(np.log(ladder)), np.log(2) / 2)
    # One grid whatever the typed diameter: the rungs around 150 Å and around 160 Å are the same rungs.
    assert grid_ladder(75.0, 300.0) == grid_ladder(80.0, 320.0) == [0, 4, 8, 12]
    assert grid_diameter(8) == 200.0 and grid_diameter(-8) == 50.0
    scores = np.r_[np.full(12, 0.1), [0.9, 0.8]]
    assert criterion(scores) == pytest.approx((0.9 + 0.8 + 4 * 0.1) / 6)  # the 6 best
    assert criterion(np.array([0.9, 0.8])) == pytest.approx(1.7 / 6)  # missing candidates count as zeros
    assert criterion(np.array([])) == 0.0
    assert criterion(scores, top=2) == pytest.approx(0.85)
    # A window the micrograph cannot hold reads candidates in proportion to the area it has.
    assert window_top((800, 800), 800.0) == 6 and window_top((400, 800), 800.0) == 3
    assert window_top((100, 100), 800.0) == 1


def test_the_choice_reads_a_parabola_through_the_rungs_around_the_best_and_leans_to_the_smaller_size():
    # A clean parabola in grid units peaking at 4.5 with height 1: the choice is the smaller point where it
    # is CRITERION_TOLERANCE below its peak, between rungs.
    clean = {n: 1.0 - 0.01 * (n - 4.5) ** 2 for n in (2, 3, 4, 5, 6, 8)}
    expected = 4.5 - math.sqrt(CRITERION_TOLERANCE * 1.0 / 0.01)
    assert peak_diameter(clean) == pytest.approx(100.0 * 2 ** (expected / 8))
    # A flat, noisy top: not the single highest rung (6), but below it.
    noisy = {0: 0.38, 2: 0.43, 3: 0.42, 4: 0.44, 5: 0.43, 6: 0.45, 7: 0.41, 8: 0.40, 12: 0.35}
    assert grid_diameter(2) <= peak_diameter(noisy) < grid_diameter(6)
    # Too few rungs near the best to fit: the smallest rung within the tolerance of the best.
    assert peak_diameter({0: 0.5, 8: 0.4}) == grid_diameter(0)
    assert peak_diameter({0: 0.495, 8: 0.5}) == grid_diameter(0)
    assert peak_diameter({0: 0.45, 8: 0.5}) == grid_diameter(8)


@pytest.mark.parametrize("typed", [0.5, 2.5])
def test_a_diameter_typed_far_off_is_corrected_towards_the_particles(blobs, typed):
    chosen = calibrate_scale(list(blobs), model=trained_checkpoint(), diameter_A=typed * DIAMETER_A)
    assert chosen.method == "calibrated" and chosen.typed_diameter_A == typed * DIAMETER_A
    # Half or two and a half times the size: the ladder reaches the particles' size, and the choice moves
    # there (the tiny model is sure of blobs from 0.8x to 1.7x their size; typed at the edge it is not).
    assert 0.8 * DIAMETER_A <= chosen.diameter_A <= 1.75 * DIAMETER_A, chosen
    # Never outside the range searched, half to twice the typed diameter (tries beyond it only shape the fit).
    assert typed * DIAMETER_A / 2 <= chosen.diameter_A <= typed * DIAMETER_A * 2
    assert len(chosen.micrographs) == 3 and list(chosen.ladder_A) == sorted(chosen.ladder_A)
    # The choice is the fit through the rungs within a coarse step (2^(1/2)) of the best one tried, kept
    # within the range searched.
    rungs = zip(chosen.ladder_A, chosen.criterion, strict=True)
    fitted = peak_diameter({round(8 * math.log2(d / 100.0)): c for d, c in rungs})
    low, high = typed * DIAMETER_A / 2, typed * DIAMETER_A * 2
    assert chosen.diameter_A == pytest.approx(min(max(fitted, low), high))
    best_rung = chosen.ladder_A[int(np.argmax(chosen.criterion))]
    assert abs(np.log2(fitted / best_rung)) <= 0.5 + 1e-9


def test_diameters_typed_a_little_apart_are_calibrated_to_the_same_rung(blobs):
    # The rungs lie on one grid in Å, so users who type 0.9x and 1.1x the size compare the same rungs.
    a = calibrate_scale(list(blobs), model=trained_checkpoint(), diameter_A=0.9 * DIAMETER_A)
    b = calibrate_scale(list(blobs), model=trained_checkpoint(), diameter_A=1.1 * DIAMETER_A)
    assert a.diameter_A == b.diameter_A and a.typed_diameter_A != b.typed_diameter_A
    assert set(a.ladder_A) & set(b.ladder_A) and len(a.ladder_A) <= 9


def test_calibration_is_deterministic_and_picks_better_than_the_typed_diameter(blobs, tmp_path):
    paths = list(blobs)
    typed = 0.5 * DIAMETER_A
    first = calibrate_scale(paths, model=trained_checkpoint(), diameter_A=typed)
    again = calibrate_scale(paths, model=trained_checkpoint(), diameter_A=typed)
    assert first == again
    kwargs = dict(model=trained_checkpoint(), diameter_A=typed)
    calibrated = pick(paths, None, calibration=first, **kwargs)
    as_typed = pick(paths, None, calibrate=False, **kwargs)
    assert as_typed.calibration.method == "typed" and as_typed.calibration.diameter_A == typed

    def recall(report):
        found = [match_fraction(report.picks.for_micrograph(p), blobs[p], 0.2 * DIAMETER_A / 2)[0]
                 for p in paths]
        return float(np.mean(found))

    assert recall(calibrated) >= 0.9 > recall(as_typed) + 0.2


def test_no_diameter_is_estimated_and_reported(blobs, tmp_path):
    report = pick(list(blobs), tmp_path / "picks.star", model=trained_checkpoint())
    chosen = report.calibration
    assert chosen.method == "estimated" and chosen.typed_diameter_A is None
    assert 0.8 * DIAMETER_A <= chosen.diameter_A <= 1.75 * DIAMETER_A
    assert chosen.ladder_A[0] == 50.0 and "no diameter given" in chosen.summary()
    saved = ScaleCalibration.load(tmp_path / f"picks_{CALIBRATION_FILE}")
    assert saved == chosen
    # Every pick carries the diameter found.
    np.testing.assert_allclose(report.picks.diameter_px, chosen.diameter_A / 2.0)


def test_empty_ice_keeps_the_typed_diameter_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"ice_{i}.mrc"
        write_micrograph(path, rng.normal(size=(256, 256)).astype(np.float32), 2.0)
        paths.append(path)
    report = pick(paths, None, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert report.calibration.method == "kept typed" and report.calibration.diameter_A == DIAMETER_A
    assert "found a sure particle" in report.calibration.summary()
    assert report.n_failed == 0
    with pytest.raises(ValueError, match="give --diameter"):
        pick(paths, None, model=trained_checkpoint())


def test_a_continuation_reuses_the_recorded_calibration(blobs, tmp_path, monkeypatch):
    paths = list(blobs)
    out = tmp_path / "job"
    kwargs = dict(model=trained_checkpoint(), format="relion", diameter_A=0.6 * DIAMETER_A)
    first = pick(paths[:2], out, **kwargs)
    recorded = json.loads((out / CALIBRATION_FILE).read_text())
    assert recorded["diameter_A"] == first.calibration.diameter_A

    def measure_again(*args, **kwargs):
        raise AssertionError("a continuation measured the scale again")

    monkeypatch.setattr(run_module, "calibrate_scale", measure_again)
    rest = pick(paths, out, skip_existing=True, **kwargs)
    assert rest.calibration == first.calibration and rest.n_skipped == 2
    # The settings record names the calibrated scale, so a continuation with another one is refused.
    settings = json.loads((out / "pick_settings.json").read_text())
    assert settings["calibrated_scale"] == pytest.approx(first.calibration.factor)
    with pytest.raises(ValueError, match="typed diameter"):
        pick(paths, out, skip_existing=True, **{**kwargs, "diameter_A": DIAMETER_A})


def test_shards_agree_on_the_scale(blobs, tmp_path):
    paths = list(blobs)
    chosen = [pick(paths, tmp_path / f"s{k}.star", model=trained_checkpoint(), diameter_A=0.6 * DIAMETER_A,
                   shard=(k, 2)).calibration for k in range(2)]
    assert chosen[0] == chosen[1] and chosen[0].method == "calibrated"
    # A shared file is reused as it is.
    shared = chosen[0].save(tmp_path / "shared.json")
    again = pick(paths, None, model=trained_checkpoint(), diameter_A=0.6 * DIAMETER_A, calibration=shared,
                 shard=(1, 2))
    assert again.calibration == chosen[0]


def test_watch_measures_once_on_its_first_micrographs_and_a_restart_reuses_it(blobs, tmp_path, monkeypatch):
    import shutil

    from hydrapick.picking.watch import watch

    movies, job = tmp_path / "Movies", tmp_path / "job"
    movies.mkdir()
    paths = list(blobs)
    shutil.copy(paths[0], movies)
    kwargs = dict(model=trained_checkpoint(), diameter_A=0.6 * DIAMETER_A, poll_s=0.05)
    # One micrograph is not enough to measure on: the session waits (nothing picked) until it ends, then
    # measures on what it has.
    first = watch(movies, job, max_polls=3, **kwargs)
    assert first.picked == 1 and len(first.calibration.micrographs) == 1
    saved = ScaleCalibration.load(job / CALIBRATION_FILE)
    assert saved == first.calibration and saved.method == "calibrated"

    def measure_again(*args, **kwargs):
        raise AssertionError("a restarted watch measured the scale again")

    monkeypatch.setattr(run_module, "calibrate_scale", measure_again)
    for path in paths[1:]:
        shutil.copy(path, movies)
    second = watch(movies, job, max_polls=3, **kwargs)
    assert second.done == 4 and second.calibration == saved


def test_the_external_job_says_what_it_measured_and_continue_reuses_it(blobs, tmp_path, monkeypatch, capsys):
    import shutil

    from hydrapick.relion import pick_job

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Movies").mkdir()
    names = []
    for path in blobs:
        shutil.copy(path, tmp_path / "Movies")
        names.append(f"Movies/{path.split('/')[-1]}")
    (tmp_path / "mics.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnMicrographPixelSize #2\n1 2.0\n\n"
        "data_micrographs\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
        + "".join(f"{n} 1\n" for n in names))
    argv = ["--o", "External/job005/", "--in_mics", "mics.star", "--diameter", f"{0.6 * DIAMETER_A}",
            "--model", trained_checkpoint(), "--j", "1"]
    assert pick_job.main(argv) == 0
    out = capsys.readouterr().out
    saved = ScaleCalibration.load(tmp_path / "External/job005" / CALIBRATION_FILE)
    assert f"particle diameter {saved.diameter_A:.1f} Å calibrated on 3 micrograph(s)" in out

    def measure_again(*args, **kwargs):
        raise AssertionError("Continue measured the scale again")

    monkeypatch.setattr(run_module, "calibrate_scale", measure_again)
    assert pick_job.main(argv) == 0  # Continue
    assert "4 picked by an earlier run" in capsys.readouterr().out
    assert pick_job.main(argv + ["--calibrate", "no"]) == 1  # another scale is refused, not mixed in
