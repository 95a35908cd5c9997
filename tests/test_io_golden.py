"""Golden files written the way RELION, EMAN, crYOLO, Topaz and cryoSPARC write them: every one holds the
same particles, so every reader must return the same coordinates."""

from pathlib import Path

import numpy as np
import pytest

from hydrapick.io import read_coordinate_folder, read_coordinates

DATA = Path(__file__).parent / "data"

# (x, y, score) per micrograph, as in tests/data/make_cryosparc_cs.py; micrographs are 256 x 240 (w x h).
TRUTH = {"mic_001": [(100, 50, 0.95), (180, 120, 0.80), (64, 200, 0.55), (210, 190, 0.30)],
         "mic_002": [(40, 60, 0.70), (150, 90, 0.45)]}

ONE_MICROGRAPH = ["relion30/mic_001_autopick.star", "relion31/mic_001_autopick.star", "mic_001.box",
                  "mic_001.cbox"]
ALL_MICROGRAPHS = ["particles_relion30.star", "particles_relion31.star",
                   "relion_project/AutoPick/job006/autopick.star", "topaz_picks.txt", "cryosparc_picks.cs"]


def _check(picks, name, has_score=True):
    mine = picks.for_micrograph(name)
    expected = np.array(TRUTH[name], dtype=float)
    assert len(mine) == len(expected)
    order = np.argsort(mine.x)
    want = expected[np.argsort(expected[:, 0])]
    # cryoSPARC stores float32 fractions of the width/height: exact to ~1e-5 px.
    np.testing.assert_allclose(mine.x[order], want[:, 0], atol=1e-3)
    np.testing.assert_allclose(mine.y[order], want[:, 1], atol=1e-3)
    if has_score:
        np.testing.assert_allclose(mine.score[order], want[:, 2], atol=1e-6)
    else:
        assert np.isnan(mine.score).all()


@pytest.mark.parametrize("name", ONE_MICROGRAPH)
def test_per_micrograph_golden_files(name):
    picks = read_coordinates(DATA / name)
    assert picks.micrographs() == ["mic_001"]  # named after the file, picker suffix removed
    _check(picks, "mic_001", has_score=not name.endswith(".box"))


@pytest.mark.parametrize("name", ALL_MICROGRAPHS)
def test_multi_micrograph_golden_files(name):
    picks = read_coordinates(DATA / name)
    assert len(picks.micrographs()) == 2
    for mic in TRUTH:
        _check(picks, mic)


def test_box_and_cbox_carry_the_box_size():
    assert read_coordinates(DATA / "mic_001.box").diameter_px.tolist() == [64.0] * 4
    assert read_coordinates(DATA / "mic_001.cbox").diameter_px.tolist() == [64.0] * 4


def test_relion_job_keeps_micrograph_paths():
    picks = read_coordinates(DATA / "relion_project/AutoPick/job006/autopick.star")
    assert picks.micrographs() == [f"MotionCorr/job002/Movies/mic_00{i}.mrc" for i in (1, 2)]
    # a job folder reads the same as its autopick.star
    same = read_coordinates(DATA / "relion_project/AutoPick/job006", "relion")
    np.testing.assert_array_equal(same.x, picks.x)
    folder = read_coordinate_folder(DATA / "relion_project/AutoPick/job006")
    assert folder.micrographs() == picks.micrographs()


def test_relion_30_and_31_combined_files_agree():
    a = read_coordinates(DATA / "particles_relion30.star")
    b = read_coordinates(DATA / "particles_relion31.star")
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.micrograph.tolist() == b.micrograph.tolist()


def test_golden_flip_y_uses_height_minus_one():
    flipped = read_coordinates(DATA / "relion31/mic_001_autopick.star", flip_y=True, image_height=240)
    assert flipped.y.tolist() == [189.0, 119.0, 39.0, 49.0]
    cs = read_coordinates(DATA / "cryosparc_picks.cs", flip_y=True)  # heights come from the file
    np.testing.assert_allclose(cs.for_micrograph("mic_001").y, [189, 119, 39, 49], atol=1e-3)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "empiar-10028"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared EMPIAR-10028 data not available")
def test_shared_real_micrographs_and_truth():
    from hydrapick.io import read_micrograph

    mic = read_micrograph(SHARED / "micrographs" / "061_10028.mrc")
    assert mic.shape == (1024, 1024) and mic.pixel_size_A == 5.36
    truth = read_coordinate_folder(SHARED / "truth")
    assert len(truth.micrographs()) == 10 and "061_10028" in truth.micrographs()
    assert 0 <= truth.x.min() and truth.x.max() < 1024 and truth.y.max() < 1024
