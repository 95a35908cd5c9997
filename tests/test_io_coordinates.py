"""Coordinate formats: round trips, flip_y, RELION jobs, folders, and one-line errors for bad files."""

import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrapick.io import (
    FORMATS,
    FormatError,
    read_coordinate_folder,
    read_coordinates,
    write_coordinate_folder,
    write_coordinates,
    write_micrograph,
    write_relion_job,
    write_relion_micrograph_star,
)
from hydrapick.picks import Picks

DATA = Path(__file__).parent / "data"


def _picks(name="mic_001", n=5, seed=0, scores=True) -> Picks:
    rng = np.random.default_rng(seed)
    return Picks(micrograph=name, x=rng.uniform(20, 230, n), y=rng.uniform(20, 200, n),
                 score=rng.uniform(0, 1, n) if scores else None, diameter_px=48.0)


def _same(a: Picks, b: Picks, atol=1e-5, scores=True):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.x, b.x, atol=atol)
    np.testing.assert_allclose(a.y, b.y, atol=atol)
    if scores:
        np.testing.assert_allclose(a.score, b.score, atol=1e-5, equal_nan=True)


# --- round trips ------------------------------------------------------------------------------------


def test_star_per_micrograph_round_trip(tmp_path):
    picks = _picks()
    path = write_coordinates(picks, tmp_path / "mic_001_autopick.star")
    text = path.read_text()
    assert text.startswith("\n# version 30001\n") and "_rlnAutopickFigureOfMerit #4" in text
    back = read_coordinates(path)
    assert back.micrographs() == ["mic_001"]
    _same(picks, back)
    assert read_coordinates(path, micrograph="other.mrc").micrographs() == ["other.mrc"]


def test_star_without_scores_uses_relion_unset_value(tmp_path):
    picks = _picks(scores=False)
    write_relion_micrograph_star(picks, tmp_path / "a.star")
    assert "-999.000000" in (tmp_path / "a.star").read_text()
    assert np.isnan(read_coordinates(tmp_path / "a.star").score).all()


def test_star_combined_round_trip(tmp_path):
    picks = Picks.concat([_picks("Movies/a.mrc", 3, 1), _picks("Movies/b.mrc", 4, 2)])
    path = write_coordinates(picks, tmp_path / "all.star")
    assert "_rlnMicrographName #1" in path.read_text()
    back = read_coordinates(path)
    assert back.micrograph.tolist() == picks.micrograph.tolist()
    _same(picks, back)
    single = write_coordinates(_picks("Movies/a.mrc"), tmp_path / "one.star", combined=True)
    assert read_coordinates(single).micrographs() == ["Movies/a.mrc"]


def test_micrograph_names_with_spaces_survive(tmp_path):
    picks = _picks("my data/mic 1.mrc", 2)
    back = read_coordinates(write_coordinates(picks, tmp_path / "x.star", combined=True))
    assert back.micrographs() == ["my data/mic 1.mrc"]


def test_relion_job_round_trip_mirrors_the_tree(tmp_path):
    mics = ["MotionCorr/job002/Movies/day1/mic_001.mrc", "MotionCorr/job002/Movies/day2/mic_002.mrc",
            "Import/job001/mic_003.mrc"]
    picks = Picks.concat([_picks(mics[0], 3, 1), _picks("mic_002", 2, 2)])  # matched by key too
    job = tmp_path / "AutoPick" / "job011"
    autopick = write_relion_job(picks, job, mics)
    assert autopick == job / "autopick.star"
    for sub in ("Movies/day1/mic_001", "Movies/day2/mic_002", "mic_003"):
        assert (job / f"{sub}_autopick.star").is_file()
    text = autopick.read_text()
    assert "data_coordinate_files" in text
    row = "MotionCorr/job002/Movies/day1/mic_001.mrc AutoPick/job011/Movies/day1/mic_001_autopick.star"
    assert row in text
    back = read_coordinates(autopick)
    assert back.micrographs() == mics[:2]  # mic_003 has an empty coordinate file
    _same(picks, back)
    assert len(read_coordinates(job / "mic_003_autopick.star")) == 0
    via_format = read_coordinates(job, "relion")
    _same(back, via_format)
    with pytest.raises(ValueError, match="not in micrograph_paths"):
        write_relion_job(_picks("elsewhere.mrc"), job, mics)


def test_relion_job_keeps_same_stems_in_different_folders_apart(tmp_path):
    mics = ["MotionCorr/job002/Movies/a/mic.mrc", "MotionCorr/job002/Movies/b/mic.mrc"]
    picks = Picks.concat([_picks(mics[0], 2, 1), _picks(mics[1], 3, 2)])
    back = read_coordinates(write_relion_job(picks, tmp_path / "AutoPick" / "job002", mics))
    assert [len(back[back.micrograph == m]) for m in mics] == [2, 3]
    _same(picks, back)


def test_write_coordinates_relion_format(tmp_path):
    picks = _picks("Movies/a.mrc", 3)
    out = write_coordinates(picks, tmp_path / "AutoPick" / "job001", "relion",
                            micrograph_paths=["Movies/a.mrc"])
    assert out.name == "autopick.star" and (tmp_path / "AutoPick/job001/Movies/a_autopick.star").exists()
    _same(picks, read_coordinates(out))


def test_autopick_star_falls_back_to_its_own_folder(tmp_path):
    # Written outside a RELION project: the listed paths are found relative to the STAR's folder.
    write_relion_micrograph_star(_picks("m", 2), tmp_path / "coords" / "m_autopick.star")
    (tmp_path / "list.star").write_text("data_coordinate_files\nloop_\n_rlnMicrographName\n"
                                        "_rlnMicrographCoordinates\nm.mrc coords/m_autopick.star\n")
    assert read_coordinates(tmp_path / "list.star").micrographs() == ["m.mrc"]


def test_box_round_trip_with_and_without_scores(tmp_path):
    picks = _picks()
    path = write_coordinates(picks, tmp_path / "mic_001.box", box_px=64)
    first = path.read_text().splitlines()[0].split("\t")
    assert len(first) == 5 and first[2] == "64"
    assert first[0] == str(int(np.rint(picks.x[0])) - 32)  # lower-left corner, whole pixels as RELION reads
    back = read_coordinates(path)
    _same(picks, back, atol=0.5)
    assert back.diameter_px.tolist() == [64.0] * len(picks)
    plain = write_coordinates(_picks(scores=False), tmp_path / "plain.box")  # box from diameter_px (48)
    assert len(plain.read_text().splitlines()[0].split("\t")) == 4
    assert np.isnan(read_coordinates(plain).score).all()
    with pytest.raises(ValueError, match="box size"):
        write_coordinates(Picks("m", [1.0], [2.0]), tmp_path / "nobox.box")
    with pytest.raises(ValueError, match="one micrograph"):
        write_coordinates(Picks(["a", "b"], [1, 2], [1, 2]), tmp_path / "two.box", box_px=10)


def test_topaz_round_trip_rounds_to_integers(tmp_path):
    picks = Picks.concat([_picks("Movies/mic_001.mrc", 3, 1), _picks("mic_002", 2, 2)])
    path = write_coordinates(picks, tmp_path / "picks.txt")
    lines = path.read_text().splitlines()
    assert lines[0] == "image_name\tx_coord\ty_coord\tscore"
    name, x, y, _ = lines[1].split("\t")
    assert name == "mic_001" and x == str(int(np.rint(picks.x[0]))) and y == str(int(np.rint(picks.y[0])))
    back = read_coordinates(path)
    assert back.micrographs() == ["mic_001", "mic_002"]
    _same(picks, back, atol=0.5)
    labels = write_coordinates(_picks(scores=False), tmp_path / "labels.txt")
    assert labels.read_text().splitlines()[0] == "image_name\tx_coord\ty_coord"
    assert np.isnan(read_coordinates(labels).score).all()


def test_cryosparc_round_trip(tmp_path):
    picks = Picks.concat([_picks("S1/a.mrc", 3, 1), _picks("S1/b.mrc", 2, 2)])
    shapes = {"S1/a.mrc": (240, 256), "b": (300, 320)}  # exact names or micrograph keys
    path = write_coordinates(picks, tmp_path / "picks.cs", image_shape=shapes)
    assert path.exists() and not (tmp_path / "picks.cs.npy").exists()
    array = np.load(path)
    assert array.dtype["location/micrograph_path"].kind == "S"
    assert array["location/micrograph_shape"][0].tolist() == [240, 256]
    assert array["location/micrograph_shape"][-1].tolist() == [300, 320]
    np.testing.assert_allclose(array["location/center_x_frac"][0], picks.x[0] / 256, rtol=1e-6)
    assert len(set(array["uid"].tolist())) == len(picks)
    back = read_coordinates(path)
    assert back.micrograph.tolist() == picks.micrograph.tolist()
    _same(picks, back, atol=1e-3)


def test_cryosparc_shape_from_micrograph_header(tmp_path):
    mic = tmp_path / "m.mrc"
    write_micrograph(mic, np.zeros((100, 120), np.float32), 1.0)
    picks = _picks(str(mic), 2)
    path = write_coordinates(picks, tmp_path / "p.cs")
    assert np.load(path)["location/micrograph_shape"][0].tolist() == [100, 120]
    with pytest.raises(ValueError, match="image_shape"):
        write_coordinates(_picks("nowhere.mrc"), tmp_path / "q.cs")


def test_cbox_is_read_only(tmp_path):
    with pytest.raises(ValueError, match="read but not written"):
        write_coordinates(_picks(), tmp_path / "a.cbox")


def test_old_plain_cbox_is_read(tmp_path):
    path = tmp_path / "old.cbox"
    path.write_text("68\t18\t64\t64\t0.95\n148\t88\t64\t64\t0.8\n")
    picks = read_coordinates(path)
    assert picks.x.tolist() == [100, 180] and picks.score.tolist() == [0.95, 0.8]


@pytest.mark.parametrize("suffix", [".star", ".box", ".cbox", ".txt"])
def test_empty_files_hold_no_picks(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("")
    assert len(read_coordinates(path)) == 0


# --- flip_y -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".star", ".box", ".txt", ".cs"])
def test_flip_y_on_write_and_read(tmp_path, suffix):
    height = 240
    picks = Picks("m", [10.0, 100.0], [0.0, 150.0], [0.5, 0.6], diameter_px=32.0)
    kw = {"image_shape": (height, 256)} if suffix == ".cs" else {"image_height": height}
    plain = write_coordinates(picks, tmp_path / f"plain{suffix}", **kw)
    flipped = write_coordinates(picks, tmp_path / f"flipped{suffix}", flip_y=True, **kw)
    atol = 1e-3
    np.testing.assert_allclose(read_coordinates(flipped).y, [239.0, 89.0], atol=atol)  # height - 1 - y
    read_kw = {} if suffix == ".cs" else {"image_height": height}
    np.testing.assert_allclose(read_coordinates(flipped, flip_y=True, **read_kw).y, picks.y, atol=atol)
    np.testing.assert_allclose(read_coordinates(plain, flip_y=True, **read_kw).y, [239.0, 89.0], atol=atol)
    np.testing.assert_allclose(read_coordinates(plain).x, picks.x, atol=atol)


def test_flip_y_needs_a_height(tmp_path):
    with pytest.raises(ValueError, match="image_height"):
        read_coordinates(DATA / "mic_001.box", flip_y=True)
    with pytest.raises(ValueError, match="image_height"):
        write_coordinates(_picks(), tmp_path / "a.star", flip_y=True)


# --- folders ----------------------------------------------------------------------------------------


def test_write_and_read_a_folder(tmp_path):
    picks = Picks.concat([_picks("Movies/a.mrc", 3, 1), _picks("Movies/b.mrc", 2, 2)])
    written = write_coordinate_folder(picks, tmp_path / "out", "star", suffix="_autopick",
                                      micrographs=["Movies/a.mrc", "Movies/b.mrc", "Movies/c.mrc"])
    assert [p.name for p in written] == ["a_autopick.star", "b_autopick.star", "c_autopick.star"]
    back = read_coordinate_folder(tmp_path / "out")
    assert back.micrographs() == ["a", "b"]
    _same(picks, back)
    boxes = write_coordinate_folder(picks, tmp_path / "boxes", "box")
    assert len(read_coordinate_folder(str(tmp_path / "boxes" / "*.box"))) == len(picks)
    assert len(boxes) == 2
    with pytest.raises(FormatError, match="holds no coordinate files"):
        read_coordinate_folder(tmp_path / "out", "box")


# --- errors -----------------------------------------------------------------------------------------


def _one_line_error(path, match, **kwargs):
    with pytest.raises(FormatError, match=match) as info:
        read_coordinates(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path.name) in message
    return message


def test_star_without_coordinate_columns(tmp_path):
    path = tmp_path / "x.star"
    path.write_text("\n# version 30001\n\ndata_\n\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\n"
                    "a.mrc 10000\n")
    message = _one_line_error(path, "has no _rlnCoordinateX column")
    assert "columns found: _rlnDefocusU, _rlnMicrographName" in message


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a STAR file: it is not text"),
    (b"hello world\n", "before any data_ block"),
    (b"data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n3\n", "row with 1 values where 2 columns"),
    (b"data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 abc\n",
     "non-numeric value 'abc' in _rlnCoordinateY"),
    (b"data_\nloop_\n_rlnCoordinateX #1\n1\n", "no _rlnCoordinateY column"),
    (b"data_\n_rlnCoordinateX 1 2 3\n", "expected '_name value'"),
])
def test_garbage_star_files(tmp_path, content, match):
    path = tmp_path / "bad.star"
    path.write_bytes(content)
    _one_line_error(path, match)


def test_autopick_star_with_missing_coordinate_file(tmp_path):
    path = tmp_path / "autopick.star"
    path.write_text("data_coordinate_files\nloop_\n_rlnMicrographName\n_rlnMicrographCoordinates\n"
                    "a.mrc AutoPick/job001/a_autopick.star\n")
    _one_line_error(path, "lists coordinates 'AutoPick/job001/a_autopick.star' for a.mrc")


@pytest.mark.parametrize("content, match", [
    ("1\t2\t3\n", "line 1 has 3 columns; x_corner y_corner width height"),
    ("1\t2\t3\t4\n1\t2\t3\t4\t5\t6\n", "line 2 has 6 columns"),
    ("1\tx\t3\t4\n", "line 1 is not numeric"),
])
def test_garbage_box_files(tmp_path, content, match):
    path = tmp_path / "bad.box"
    path.write_text(content)
    _one_line_error(path, match)


def test_garbage_topaz_cbox_and_cs(tmp_path):
    topaz = tmp_path / "bad.txt"
    topaz.write_text("mic x y\nmic 1 2\n")
    _one_line_error(topaz, "expected a header 'image_name x_coord y_coord score'")
    topaz.write_text("image_name\tx_coord\ty_coord\tscore\nmic\t1\t2\n")
    _one_line_error(topaz, "line 2 has 3 columns")
    cbox = tmp_path / "bad.cbox"
    cbox.write_text("data_cryolo\nloop_\n_CoordinateX #1\n_CoordinateY #2\n1 2\n")
    _one_line_error(cbox, "has no _Width _Height column")
    cs = tmp_path / "bad.cs"
    cs.write_bytes(b"not numpy at all")
    _one_line_error(cs, "not a cryoSPARC .cs file")
    with open(cs, "wb") as f:
        np.save(f, np.zeros(3, dtype=[("uid", "<u8"), ("location/center_x_frac", "<f4")]))
    message = _one_line_error(cs, "has no location/micrograph_path")
    assert "fields found: uid, location/center_x_frac" in message


def test_unknown_extension_lists_formats(tmp_path):
    path = tmp_path / "picks.json"
    path.write_text("{}")
    message = _one_line_error(path, "cannot tell the coordinate format")
    assert all(name in message for name in FORMATS)
    with pytest.raises(ValueError, match="unknown coordinate format 'xml'"):
        read_coordinates(path, "xml")
    assert len(read_coordinates(DATA / "mic_001.box", "eman")) == 4  # aliases and explicit formats


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "absent.star", "does not exist")
    _one_line_error(tmp_path / "absent.cs", "does not exist")


# --- property: every writable format returns what it was given ------------------------------------

_coord = st.floats(min_value=0, max_value=4000, allow_nan=False, allow_infinity=False)
_names = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xy=st.lists(st.tuples(_coord, _coord, st.floats(0, 1)), min_size=0, max_size=20), name=_names)
def test_round_trip_property(tmp_path, xy, name):
    arr = np.array(xy, dtype=float).reshape(-1, 3)
    picks = Picks(micrograph=name + ".mrc", x=arr[:, 0], y=arr[:, 1], score=arr[:, 2], diameter_px=64.0)
    for suffix, atol, kwargs in [(".star", 1e-5, {}), (".box", 0.5, {}), (".txt", 0.5, {}),
                                 (".cs", 4000 * 2e-7 + 1e-6, {"image_shape": (4096, 4096)})]:
        back = read_coordinates(write_coordinates(picks, tmp_path / f"{name}{suffix}", **kwargs))
        _same(picks, back, atol=atol)


def test_autopick_star_listing_itself_is_an_error(tmp_path):
    path = tmp_path / "autopick.star"
    path.write_text("data_coordinate_files\nloop_\n_rlnMicrographName\n_rlnMicrographCoordinates\n"
                    "a.mrc autopick.star\n")
    _one_line_error(path, "lists further coordinate files")


def test_relion_job_outside_a_job_folder_reads_back(tmp_path):
    """An output folder that is not AutoPick/jobNNN still gives an autopick.star that reads back."""
    from hydrapick.io import read_coordinates, write_relion_job
    from hydrapick.picks import Picks

    picks = Picks(["Movies/a.mrc", "Movies/b.mrc"], [10.0, 20.0], [30.0, 40.0], [0.9, 0.8])
    star = write_relion_job(picks, tmp_path / "picks", ["Movies/a.mrc", "Movies/b.mrc"])
    back = read_coordinates(star)
    assert sorted(back.x.tolist()) == [10.0, 20.0]
    assert set(back.micrographs()) == {"Movies/a.mrc", "Movies/b.mrc"}
