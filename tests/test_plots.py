"""Figures: PR/ROC curves and overlays are written as real PNGs with boxes where the particles are."""

import subprocess
import sys

import numpy as np
import pytest

from hydrapick.evaluation import evaluate, plots
from hydrapick.picks import Picks

BOX = 20.0


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]  # (H, W, 3) floats in 0..1


def disk_image(height=200, width=300, centres=((60, 50), (150, 120), (240, 60))):
    yy, xx = np.mgrid[:height, :width]
    image = np.random.default_rng(0).normal(0, 1, (height, width)).astype(np.float32)
    for x, y in centres:
        image[(xx - x) ** 2 + (yy - y) ** 2 < 8**2] -= 6.0  # dark particles, as in cryo-EM
    return image


def dominant(rgb, channel):
    """True when `channel` (0 red, 1 green) clearly dominates the other two."""
    other = [c for c in range(3) if c != channel]
    return rgb[channel] > 0.6 and all(rgb[channel] > rgb[c] + 0.3 for c in other)


def test_overlay_draws_truth_green_and_picks_red_where_they_are(tmp_path):
    image = disk_image()
    truth = Picks("m", x=[60.0, 150.0], y=[50.0, 120.0])
    picks = Picks("m", x=[240.0], y=[60.0], score=[0.9])
    path = plots.overlay(image, tmp_path / "o.png", picks=picks, truth=truth, box_px=BOX)
    assert path.exists() and path.stat().st_size > 10_000
    png = read_png(path)
    assert png.shape[:2] == image.shape  # factor 1, one figure pixel per micrograph pixel
    # Left edges of the boxes: x - 10 (pixel centres at integers, so the edge lies at x - 10).
    assert dominant(png[50, 50], 1)  # truth at (60, 50)
    assert dominant(png[120, 140], 1)  # truth at (150, 120)
    assert dominant(png[60, 230], 0)  # pick at (240, 60)
    assert not dominant(png[60, 240], 0) and not dominant(png[50, 60], 1)  # centres are not painted


def test_overlay_threshold_hides_low_scores_and_downsamples(tmp_path):
    image = disk_image(400, 600, centres=((100, 100), (400, 300)))
    picks = Picks("m", x=[100.0, 400.0], y=[100.0, 300.0], score=[0.9, 0.1])
    path = plots.overlay(image, tmp_path / "o.png", picks=picks, box_px=40.0, threshold=0.5, max_size_px=300,
                         title="threshold 0.5")
    png = read_png(path)
    assert png.shape[:2] == (200, 300)  # binned by 2
    assert dominant(png[50, 40], 0)  # kept pick, left edge at x = 80 -> 40 in the view
    assert not any(dominant(png[150, c], 0) for c in range(185, 195))  # hidden pick, edge at 380 -> 190


def test_overlay_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2D"):
        plots.overlay(np.zeros((2, 3, 4)), tmp_path / "x.png", box_px=5)
    with pytest.raises(ValueError, match="box_px"):
        plots.overlay(np.zeros((8, 8)), tmp_path / "x.png", box_px=0)


def test_curves_for_several_pickers(tmp_path):
    truth = Picks("m", x=100.0 * np.arange(1, 21), y=np.full(20, 50.0))
    rng = np.random.default_rng(3)
    good = Picks("m", x=np.r_[truth.x, rng.uniform(0, 3000, 5)], y=np.r_[truth.y, rng.uniform(0, 300, 5)],
                 score=np.r_[rng.uniform(0.5, 1, 20), rng.uniform(0, 0.6, 5)])
    bad = Picks("m", x=np.r_[truth.x[:10], rng.uniform(0, 3000, 20)],
                y=np.r_[truth.y[:10], rng.uniform(0, 300, 20)], score=rng.random(30))
    reports = {"good": evaluate(truth, good, 20.0), "bad": evaluate(truth, bad, 20.0)}
    for draw, name in ((plots.pr_curves, "pr.png"), (plots.roc_curves, "roc.png")):
        path = draw(reports, tmp_path / "figs" / name)
        png = read_png(path)
        assert path.stat().st_size > 10_000
        assert png.std() > 0.05  # not a blank canvas
        # Both pickers' default colours (matplotlib C0 blue, C1 orange) appear.
        blue = (png[..., 2] > 0.6) & (png[..., 0] < 0.3)
        orange = (png[..., 0] > 0.9) & (png[..., 1] > 0.4) & (png[..., 1] < 0.6) & (png[..., 2] < 0.2)
        assert blue.sum() > 50 and orange.sum() > 50


def test_helpers():
    image = np.arange(36, dtype=float).reshape(6, 6)
    view, factor = plots.downsample_for_view(image, 3)
    assert factor == 2 and view.shape == (3, 3) and view[0, 0] == pytest.approx((0 + 1 + 6 + 7) / 4)
    assert plots.downsample_for_view(image, 6)[1] == 1
    norm = plots.contrast_normalise(np.r_[np.zeros(98), 1000.0, -1000.0].reshape(10, 10), 1, 99)
    assert norm.min() == 0.0 and norm.max() == 1.0
    assert np.all(plots.contrast_normalise(np.ones((4, 4))) == 0)


def test_importing_plots_does_not_import_matplotlib():
    code = ("import sys, hydrapick.evaluation.plots; "
            "assert 'matplotlib' not in sys.modules, 'imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
