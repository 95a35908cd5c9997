"""Every file a pick run writes, read by its consumer's own reader: STAR files by ``starfile`` (as RELION
tooling reads them), ``.cs`` files field by field as cryoSPARC reads its numpy arrays."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import starfile
from test_picking import DIAMETER_A, trained_checkpoint, write_blob_micrographs

from hydrapick.io import read_coordinates, read_micrograph
from hydrapick.picking import pick
from hydrapick.picks import micrograph_key


@pytest.fixture
def picked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("consumers")
    import os

    before = os.getcwd()
    os.chdir(folder)
    try:
        write_blob_micrographs(Path("Movies"), 2, pixel_size_A=2.0, particles=5, seed=8)
        runs = {out: pick("Movies/*.mrc", out, model=trained_checkpoint(), diameter_A=DIAMETER_A)
                for out in ("picks.star", "AutoPick/job007", "picks.cs")}
        yield folder, runs
    finally:
        os.chdir(before)


def _as_frame(table):
    return table if not isinstance(table, dict) else next(iter(table.values()))


def test_every_star_file_reads_with_starfile(picked):
    folder, runs = picked
    stars = sorted(folder.rglob("*.star"))
    # combined picks and candidates, autopick.star, candidates.star, per-micrograph picks and candidates
    assert len(stars) == 2 + 2 + 2 * 2
    for path in stars:
        table = starfile.read(path, always_dict=True)
        assert table, path
        if path.name == "autopick.star":
            frame = table["coordinate_files"]
            assert list(frame["rlnMicrographName"]) == ["Movies/mic_000.mrc", "Movies/mic_001.mrc"]
            for coords in frame["rlnMicrographCoordinates"]:
                assert (folder / coords).is_file()
            continue
        frame = _as_frame(table)
        ours = read_coordinates(path)
        np.testing.assert_allclose(frame["rlnCoordinateX"], ours.x, atol=1e-3)
        np.testing.assert_allclose(frame["rlnCoordinateY"], ours.y, atol=1e-3)
        np.testing.assert_allclose(frame["rlnAutopickFigureOfMerit"], ours.score, atol=1e-3)
        if "rlnMicrographName" in frame:
            assert list(frame["rlnMicrographName"]) == list(ours.micrograph)
    combined = folder / "picks.star"
    assert not any(line.startswith("# version") for line in combined.read_text().splitlines())
    assert not any(line.startswith("# version") for line in (folder / "picks_candidates.star")
                   .read_text().splitlines())
    assert len(starfile.read(combined)) == len(runs["picks.star"].picks) > 0


def test_every_cs_field(picked):
    folder, runs = picked
    for name in ("picks.cs", "picks_candidates.cs"):
        array = np.load(folder / name, allow_pickle=False)
        picks = runs["picks.cs"].picks if name == "picks.cs" else runs["picks.cs"].candidates
        assert len(array) == len(picks) > 0
        assert array.dtype.names == ("uid", "location/micrograph_uid", "location/exp_group_id",
                                     "location/micrograph_path", "location/micrograph_psize_A",
                                     "location/micrograph_shape", "location/center_x_frac",
                                     "location/center_y_frac", "pick_stats/ncc_score")
        assert len(np.unique(array["uid"])) == len(array) and (array["uid"] > 0).all()
        paths = [p.decode() for p in array["location/micrograph_path"]]
        assert paths == list(picks.micrograph)
        np.testing.assert_array_equal(array["location/micrograph_uid"],
                                      [zlib.crc32(micrograph_key(p).encode()) for p in paths])
        assert (array["location/exp_group_id"] == 0).all()
        np.testing.assert_array_equal(array["location/micrograph_psize_A"], np.float32(2.0))
        for path in set(paths):
            rows = array[np.array(paths) == path]
            assert (rows["location/micrograph_shape"] == read_micrograph(folder / path).shape).all()
        shape = array["location/micrograph_shape"].astype(np.float64)
        np.testing.assert_allclose(array["location/center_x_frac"] * shape[:, 1], picks.x, atol=1e-3)
        np.testing.assert_allclose(array["location/center_y_frac"] * shape[:, 0], picks.y, atol=1e-3)
        assert ((array["location/center_x_frac"] >= 0) & (array["location/center_x_frac"] < 1)).all()
        np.testing.assert_allclose(array["pick_stats/ncc_score"], picks.score, atol=1e-6)
