"""Regenerate cryosparc_picks.cs, the golden cryoSPARC file (binary, so it is made by this script).

The dtype follows a cryoSPARC picked-particles file (fields and order as cryoSPARC writes them); it is
written independently of hydrapick's writer so that the reader is tested against a foreign file.
Run: python tests/data/make_cryosparc_cs.py
"""

from pathlib import Path

import numpy as np

PARTICLES = {"mic_001": [(100, 50, 0.95), (180, 120, 0.80), (64, 200, 0.55), (210, 190, 0.30)],
             "mic_002": [(40, 60, 0.70), (150, 90, 0.45)]}
HEIGHT, WIDTH = 240, 256

dtype = np.dtype([
    ("uid", "<u8"),
    ("location/micrograph_uid", "<u8"),
    ("location/exp_group_id", "<u4"),
    ("location/micrograph_path", "S64"),
    ("location/micrograph_psize_A", "<f4"),
    ("location/micrograph_shape", "<u4", (2,)),
    ("location/center_x_frac", "<f4"),
    ("location/center_y_frac", "<f4"),
    ("location/min_dist_A", "<f4"),
    ("pick_stats/ncc_score", "<f4"),
    ("pick_stats/power", "<f4"),
    ("pick_stats/template_idx", "<u4"),
    ("pick_stats/angle_rad", "<f4"),
])
rows = [(m, x, y, s) for m, picks in PARTICLES.items() for x, y, s in picks]
array = np.zeros(len(rows), dtype=dtype)
for i, (m, x, y, s) in enumerate(rows):
    array[i]["uid"] = 6_000_000_000_000_000_000 + 7919 * i
    array[i]["location/micrograph_uid"] = 1000 + int(m[-1])
    array[i]["location/micrograph_path"] = f"J2/motioncorrected/{m}.mrc".encode()
    array[i]["location/micrograph_psize_A"] = 1.06
    array[i]["location/micrograph_shape"] = (HEIGHT, WIDTH)
    array[i]["location/center_x_frac"] = x / WIDTH
    array[i]["location/center_y_frac"] = y / HEIGHT
    array[i]["location/min_dist_A"] = 60.0
    array[i]["pick_stats/ncc_score"] = s
    array[i]["pick_stats/power"] = 500.0 + i
with open(Path(__file__).with_name("cryosparc_picks.cs"), "wb") as f:
    np.save(f, array)
