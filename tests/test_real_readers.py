"""hydrapick's outputs read by the programs they are written for: RELION 3.1 and cryosparc-tools.

Each test prints one line saying what the real reader found; ``.ci/run`` runs this module with ``-rA`` so
the CI log shows those lines. A test is skipped, saying why, where its program is not installed
(RELION: Debian's ``relion`` package; cryosparc-tools: the ``test`` extra).
"""

from __future__ import annotations

import shutil
import subprocess

import mrcfile
import numpy as np
import pytest
import starfile
from test_picking import DIAMETER_A, trained_checkpoint
from test_relion_external import (
    APIX,
    N_MICS,
    make_project,
    relion45_extract_lookup,
    star_column_bytes,
    vary_star_names,
)

from hydrapick.io import read_coordinates, read_micrograph
from hydrapick.picking import pick

BOX_PX = int(DIAMETER_A / APIX)  # hydrapick's default border keeps every such box inside the micrograph


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path)


@pytest.mark.skipif(shutil.which("relion_preprocess") is None,
                    reason="relion_preprocess not installed (Debian package 'relion'; .ci/run installs it)")
def test_relion_preprocess_extracts_every_pick_at_its_place(project, tmp_path):
    # Names as a project may hold them (absolute, ./, //): RELION copies them into particles.star as
    # written, and RELION 4/5 find coordinates by them string for string.
    vary_star_names(tmp_path, project)
    report = pick(["CtfFind/job003/micrographs_ctf.star"], "AutoPick/job006", model=trained_checkpoint(),
                  diameter_A=DIAMETER_A)
    picks = read_coordinates("AutoPick/job006", "relion")
    assert len(picks) == len(report.picks) > 0
    # RELION 3.1 finds a micrograph's coordinates at coord_dir + (path after jobNNN/) + suffix
    # (Preprocessing::getCoordinateFileName in src/preprocessing.cpp).
    command = ["relion_preprocess", "--i", "CtfFind/job003/micrographs_ctf.star", "--coord_dir",
               "AutoPick/job006/", "--coord_suffix", "_autopick.star", "--part_star",
               "Extract/job007/particles.star", "--part_dir", "Extract/job007/", "--extract",
               "--extract_size", str(BOX_PX)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    particles = starfile.read("Extract/job007/particles.star")["particles"]
    assert len(particles) == len(picks)
    mics, index = "CtfFind/job003/micrographs_ctf.star", "AutoPick/job006/autopick.star"
    names = star_column_bytes(index, "_rlnMicrographName")
    assert names == star_column_bytes(mics, "_rlnMicrographName")
    assert set(star_column_bytes("Extract/job007/particles.star", "_rlnMicrographName")) == set(names)
    assert all(relion45_extract_lookup(mics, index).values())  # RELION 4/5's --coord_list would find each
    # Each particle is the micrograph's box around its pick: RELION truncates the coordinate to a pixel and
    # puts it at the box's centre pixel, BOX/2 (Preprocessing::extractParticlesFromOneFrame).
    checked = 0
    for mic in sorted(set(particles["rlnMicrographName"])):
        rows = particles[particles["rlnMicrographName"] == mic]
        image = np.asarray(read_micrograph(mic).data)
        mine = picks[picks.micrograph == mic]
        np.testing.assert_allclose(np.sort(rows["rlnCoordinateX"]), np.sort(mine.x), atol=1e-3)
        for _, row in rows.iterrows():
            index, stack = row["rlnImageName"].split("@")
            box = mrcfile.read(stack)[int(index) - 1]
            x, y = int(row["rlnCoordinateX"]), int(row["rlnCoordinateY"])
            half = BOX_PX // 2
            np.testing.assert_array_equal(box, image[y - half:y - half + BOX_PX, x - half:x - half + BOX_PX])
            checked += 1
    version = subprocess.run(["relion_preprocess", "--version"], capture_output=True, text=True).stdout
    print(f"REAL READER relion_preprocess ({' '.join(version.split()[:3])}): extracted {len(particles)} "
          f"particles from {particles['rlnMicrographName'].nunique()} micrographs; hydrapick picked "
          f"{len(picks)}; {checked} boxes equal the micrograph around their pick; the {len(names)} names "
          "of autopick.star equal the input STAR's and particles.star's byte for byte")


def test_cryosparc_tools_loads_the_cs_file(project):
    dataset_module = pytest.importorskip("cryosparc.dataset",
                                         reason="cryosparc-tools not installed (pip install -e '.[test]')")
    report = pick(["CtfFind/job003/micrographs_ctf.star"], "picks.cs", model=trained_checkpoint(),
                  diameter_A=DIAMETER_A)
    picks = report.picks
    data = dataset_module.Dataset.load("picks.cs")
    assert len(data) == len(picks) > 0
    paths = [p.decode() if isinstance(p, bytes) else str(p) for p in data["location/micrograph_path"]]
    assert paths == [str(m) for m in picks.micrograph]
    assert set(paths) == set(project) and len(set(paths)) == N_MICS
    shape = np.asarray(data["location/micrograph_shape"])
    assert (shape == [240, 320]).all()  # (height, width)
    np.testing.assert_allclose(data["location/micrograph_psize_A"], APIX)
    # x and y as fractions of width and height, y counted from the first row as read (data[y, x]):
    # cryoSPARC's own convention, so no flip (the RELION star of the same picks has the same y).
    np.testing.assert_allclose(data["location/center_x_frac"] * 320, picks.x, atol=1e-3)
    np.testing.assert_allclose(data["location/center_y_frac"] * 240, picks.y, atol=1e-3)
    np.testing.assert_allclose(data["pick_stats/ncc_score"], picks.score, atol=1e-6)
    assert len(set(np.asarray(data["uid"]).tolist())) == len(data)
    import cryosparc

    print(f"REAL READER cryosparc-tools {getattr(cryosparc, '__version__', '?')}: Dataset.load read "
          f"{len(data)} particles on {len(set(paths))} micrographs (hydrapick picked {len(picks)}); "
          f"fields {', '.join(f for f in data.fields() if f.startswith(('location', 'pick_stats')))}")
