"""Picking end to end on small simulated micrographs with a tiny model trained here in a few seconds.

The model is trained once per test process (`trained_checkpoint`) on Gaussian-blob "particles" pushed
through `hydrapick.preprocess.prepare`, so it really finds particles: tests compare picks with known
particle positions and would fail if coordinates, scaling, thresholds or outputs were wrong.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hydrapick.checkpoint import CheckpointError, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.io import read_coordinates, read_micrograph, write_micrograph
from hydrapick.io.inputs import InputError, MicrographInput, gather_inputs
from hydrapick.model import HydraPicker
from hydrapick.model.anchors import anchor_centres, build_targets
from hydrapick.model.losses import detection_loss
from hydrapick.picking import load_model, pick, pick_micrographs
from hydrapick.picking.shards import parse_shard, select_shard, shard_from_environment
from hydrapick.picks import Picks
from hydrapick.preprocess import prepare

# A tiny network: strided stem, one residual block, anchors every 8 px, particles 24 px wide.
TINY = ModelConfig.light(body_channels=8, body_blocks=1, head_channels=(16, 32), group_norm_groups=4,
                         anchor_stride=8, particle_diameter_px=24.0, head_dropout=0.0)
# The tiny checkpoint's calibrated threshold. Its scores depend on the CPU's float kernels: on some CPUs a
# true blob scores 0.3-0.4 while no false candidate passes 0.05 (measured on 12 held-out images), so the
# cut sits in that gap, as `hydrapick train`'s calibration would put it.
THRESHOLD = 0.2
DIAMETER_A = 72.0


# --- shared helpers (also used by test_cli_pick.py) ------------------------------------------------------

def blob_image(rng: np.random.Generator, shape: tuple[int, int], n: int, diameter_px: float,
               margin: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noise with ``n`` dark Gaussian blobs of ``diameter_px`` at least 1.2 diameters apart.

    Returns the image (H, W) float32 and the centres (n, 2) as (x, y) pixels.
    """
    h, w = shape
    margin = diameter_px if margin is None else margin
    centres: list[np.ndarray] = []
    for _ in range(10_000):
        if len(centres) == n:
            break
        p = rng.uniform([margin, margin], [w - 1 - margin, h - 1 - margin])
        if all(np.hypot(*(p - q)) > 1.2 * diameter_px for q in centres):
            centres.append(p)
    pts = np.array(centres, dtype=np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[:h, :w]
    image = rng.normal(0.0, 1.0, size=shape)
    sigma = diameter_px / 4
    for x, y in pts:
        image -= 2.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma))
    return image.astype(np.float32), pts


def _train_tiny(steps: int = 120, seed: int = 0) -> HydraPicker:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    model = HydraPicker(TINY)
    params = [p for p in model.parameters() if p.requires_grad]
    # A few lines of Adam by hand: torch.optim imports torch's compiler stack, seconds on a busy machine.
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    lr, b1, b2 = 5e-3, 0.9, 0.999
    side = 96
    anchors = anchor_centres(side, side, TINY)
    for step in range(1, steps + 1):
        images, centres = [], []
        for _ in range(8):
            # Crops at the model's scale, made exactly as picking makes them (prepare at scale 1).
            n = int(rng.integers(1, 5))
            img, pts = blob_image(rng, (side, side), n, TINY.particle_diameter_px, margin=6)
            images.append(prepare(img, 1.0, TINY.particle_diameter_px, TINY).image)
            centres.append(torch.tensor(pts, dtype=torch.float32))
        labels, offsets, positive = build_targets(anchors, centres, TINY)
        loss = detection_loss(model(torch.stack(images)[:, None]), labels, offsets, positive)["loss"]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, a, b in zip(params, grads, m1, m2, strict=True):
                a.mul_(b1).add_(g, alpha=1 - b1)
                b.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.sub_(lr * (a / (1 - b1 ** step)) / ((b / (1 - b2 ** step)).sqrt() + 1e-8))
    return model.eval()


@functools.cache
def trained_checkpoint(with_diameter: bool = False) -> str:
    """Path of a checkpoint of the tiny trained model (trained once per process)."""
    folder = tempfile.mkdtemp(prefix="hydrapick-test-model-")
    atexit.register(shutil.rmtree, folder, True)
    model = _trained_model()
    meta = {"thresholds": {"generic": THRESHOLD},
            "diameters_A": {"generic": DIAMETER_A if with_diameter else None}}
    return str(save_checkpoint(Path(folder) / "tiny.pt", model, meta))


@functools.cache
def _trained_model() -> HydraPicker:
    return _train_tiny()


def write_blob_micrographs(folder: Path, n: int, *, pixel_size_A: float = 2.0, shape=(240, 320),
                           particles: int = 6, seed: int = 1, diameter_A: float = DIAMETER_A,
                           ) -> dict[str, np.ndarray]:
    """MRC micrographs of blobs; returns {path: true centres (P, 2)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        image, pts = blob_image(rng, shape, particles, diameter_A / pixel_size_A)
        path = folder / f"mic_{i:03d}.mrc"
        write_micrograph(path, image, pixel_size_A)
        truth[str(path)] = pts
    return truth


def match_fraction(picks: Picks, truth: np.ndarray, tolerance_px: float) -> tuple[float, float]:
    """(recall, precision): fraction of true centres with a pick within tolerance, and vice versa."""
    if len(truth) == 0 or len(picks) == 0:
        return (0.0 if len(truth) else 1.0), (0.0 if len(picks) else 1.0)
    xy = np.stack([picks.x, picks.y], axis=1)
    d = np.sqrt(((xy[:, None, :] - truth[None, :, :]) ** 2).sum(-1))
    return float((d.min(axis=0) <= tolerance_px).mean()), float((d.min(axis=1) <= tolerance_px).mean())




# --- inputs ----------------------------------------------------------------------------------------------

def _touch_mrcs(folder: Path, names: list[str]) -> list[Path]:
    out = []
    for name in names:
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        write_micrograph(p, np.zeros((8, 8), np.float32), 1.5)
        out.append(p)
    return out


def test_gather_inputs_paths_globs_folders_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch_mrcs(tmp_path, ["a/m2.mrc", "a/m1.mrc", "b/m3.mrc"])
    (tmp_path / "a" / "notes.txt").write_text("not a micrograph")
    items = gather_inputs(["a/*.mrc", "b", "a/m1.mrc"])
    assert [i.name for i in items] == ["a/m1.mrc", "a/m2.mrc", "b/m3.mrc"]  # glob sorted, duplicate dropped
    assert all(i.pixel_size_A is None for i in items)
    assert [i.name for i in gather_inputs(["**/m3.mrc"])] == ["b/m3.mrc"]
    assert gather_inputs(["a/m1.mrc"], pixel_size_A=3.0)[0].pixel_size_A == 3.0


def test_gather_inputs_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no MRC, TIFF, PNG or JPEG micrographs match 'x/\\*.mrc'"):
        gather_inputs(["x/*.mrc"])
    # A missing micrograph is listed: reading it reports "does not exist" and the run picks the rest.
    assert [m.path for m in gather_inputs(["missing.mrc"])] == ["missing.mrc"]
    with pytest.raises(InputError, match="'missing' does not exist"):
        gather_inputs(["missing"])
    with pytest.raises(InputError, match="folder 'empty' holds no MRC, TIFF, PNG or JPEG micrographs"):
        gather_inputs(["empty"])
    with pytest.raises(InputError, match="no micrographs given"):
        gather_inputs([])


def test_gather_inputs_text_list_and_relion_star_with_optics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch_mrcs(tmp_path, ["MotionCorr/job002/Movies/m1.mrc", "MotionCorr/job002/Movies/m2.mrc"])
    (tmp_path / "list.txt").write_text("# two micrographs\nMotionCorr/job002/Movies/m2.mrc\n\n"
                                       "MotionCorr/job002/Movies/m1.mrc\n")
    assert [i.name for i in gather_inputs(["list.txt"])] == ["MotionCorr/job002/Movies/m2.mrc",
                                                             "MotionCorr/job002/Movies/m1.mrc"]
    star = tmp_path / "CtfFind" / "job003" / "micrographs_ctf.star"
    star.parent.mkdir(parents=True)
    star.write_text(
        "\n# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnMicrographPixelSize #3\nopticsGroup1 1 1.34\nopticsGroup2 2 0.885\n\n"
        "# version 30001\n\ndata_micrographs\n\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
        "MotionCorr/job002/Movies/m1.mrc 1\nMotionCorr/job002/Movies/m2.mrc 2\n")
    items = gather_inputs([str(star)])
    assert [(i.name, i.pixel_size_A) for i in items] == [("MotionCorr/job002/Movies/m1.mrc", 1.34),
                                                         ("MotionCorr/job002/Movies/m2.mrc", 0.885)]
    assert all(Path(i.path).is_file() for i in items)
    # --apix overrides the optics table.
    assert {i.pixel_size_A for i in gather_inputs([str(star)], pixel_size_A=2.0)} == {2.0}


# --- sharding --------------------------------------------------------------------------------------------

def test_shards_partition_the_input():
    items = list(range(23))
    shards = [select_shard(items, k, 5) for k in range(5)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert select_shard(items, 2, 5)[:3] == [2, 7, 12]


@pytest.mark.parametrize("text", ["3", "1/0", "5/5", "-1/4", "a/b", "1/2/3"])
def test_parse_shard_rejects_bad_specs(text):
    with pytest.raises(InputError):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 7/8 ") == (7, 8)


def test_shard_from_slurm_environment():
    assert shard_from_environment({}) is None
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"}) == (3, 8)
    # --array=1-8: task ids start at 1.
    env = {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_environment(env) == (7, 8)
    # --array=0-20:10 -> tasks 0, 10, 20.
    env = {"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_STEP": "10"}
    assert shard_from_environment(env) == (2, 3)
    with pytest.raises(InputError):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "8"})


# --- model loading and options -----------------------------------------------------------------------

def test_load_model_without_bundled_weights_says_what_to_do(monkeypatch):
    import hydrapick.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "BUNDLED_MODEL", "no-such-model.pt")
    with pytest.raises(CheckpointError, match="--model"):
        load_model()


def test_load_model_from_file_and_missing_file(tmp_path):
    model, meta = load_model(trained_checkpoint())
    assert not model.training
    assert meta["thresholds"]["generic"] == THRESHOLD
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nothing.pt")


def test_diameter_is_required_unless_the_head_records_one(tmp_path):
    truth = write_blob_micrographs(tmp_path, 1, particles=4)
    with pytest.raises(ValueError, match="--diameter"):
        list(pick_micrographs(truth, model=trained_checkpoint()))
    result, = pick_micrographs(truth, model=trained_checkpoint(with_diameter=True))
    assert result.ok and result.picks.diameter_px[0] == pytest.approx(DIAMETER_A / 2.0)


# --- picking -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pixel_size_A, shape", [(2.0, (200, 330)), (1.5, (310, 230))])
def test_coordinates_survive_resampling(tmp_path, pixel_size_A, shape):
    """Known particle positions, two pixel sizes (scale 2/3 and 1/2), non-square micrographs."""
    truth = write_blob_micrographs(tmp_path, 2, pixel_size_A=pixel_size_A, shape=shape, particles=5,
                                   seed=int(pixel_size_A * 10))
    diameter_px = DIAMETER_A / pixel_size_A
    results = list(pick_micrographs(truth, model=trained_checkpoint(), diameter_A=DIAMETER_A))
    for result in results:
        assert result.ok, result.error
        assert result.shape == shape and result.pixel_size_A == pytest.approx(pixel_size_A)
        recall, precision = match_fraction(result.selected, truth[result.path], 0.15 * diameter_px)
        assert recall == 1.0 and precision == 1.0, (result.path, recall, precision)
        xy = np.stack([result.selected.x, result.selected.y], 1)
        err = np.sqrt(((xy[:, None] - truth[result.path][None]) ** 2).sum(-1)).min(axis=0)
        assert np.median(err) < 0.1 * diameter_px


def test_candidates_rethresholded_equal_picking_at_that_threshold(tmp_path):
    truth = write_blob_micrographs(tmp_path, 1, particles=6)
    loose, = pick_micrographs(truth, model=trained_checkpoint(), diameter_A=DIAMETER_A, threshold=0.2)
    cut = float(np.median(loose.picks.score))
    strict, = pick_micrographs(truth, model=trained_checkpoint(), diameter_A=DIAMETER_A, threshold=cut)
    assert len(loose.picks) == len(strict.picks) > len(strict.selected) > 0
    again = loose.picks.above(cut)
    np.testing.assert_allclose(np.c_[again.x, again.y, again.score],
                               np.c_[strict.selected.x, strict.selected.y, strict.selected.score])
    assert np.all(np.diff(loose.picks.score) <= 0)  # highest score first
    assert loose.picks.score.min() >= 0.05  # the score floor


def test_tiled_picking_gives_the_same_picks(tmp_path):
    truth = write_blob_micrographs(tmp_path, 1, shape=(300, 420), particles=8)
    # float32: the equality is exact up to float rounding (bfloat16 would add its own rounding per tile).
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, mixed_precision=False)
    whole, = pick_micrographs(truth, **kwargs)
    tiled, = pick_micrographs(truth, max_tile_px=160, **kwargs)  # model scale 200 x 280 -> 2 x 3 tiles
    assert len(whole.picks) == len(tiled.picks) > 0
    np.testing.assert_allclose(np.c_[tiled.picks.x, tiled.picks.y], np.c_[whole.picks.x, whole.picks.y],
                               atol=1e-3)
    np.testing.assert_allclose(tiled.picks.score, whole.picks.score, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Data array contains NaN:RuntimeWarning")
def test_bad_micrographs_are_reported_and_the_rest_picked(tmp_path):
    truth = write_blob_micrographs(tmp_path, 2, particles=4)
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x00" * 100)
    nan = tmp_path / "nan.mrc"
    write_micrograph(nan, np.full((64, 64), np.nan, np.float32), 2.0)
    no_apix = tmp_path / "noapix.mrc"
    write_micrograph(no_apix, np.zeros((64, 64), np.float32), 1.0)  # 1.0 = unset in many tools
    paths = [str(bad), *truth, str(nan), str(no_apix)]
    results = list(pick_micrographs(paths, model=trained_checkpoint(), diameter_A=DIAMETER_A, batch_size=2))
    assert [r.path for r in results] == paths  # input order kept
    errors = {Path(r.path).name: r.error for r in results if not r.ok}
    assert set(errors) == {"bad.mrc", "nan.mrc", "noapix.mrc"}
    assert "bad.mrc" in errors["bad.mrc"] and "MRC" in errors["bad.mrc"]
    assert "NaN" in errors["nan.mrc"]
    assert "--apix" in errors["noapix.mrc"]
    for r in results:
        if r.ok:
            assert match_fraction(r.selected, truth[r.path], 5.0)[0] == 1.0


def test_empty_micrograph_gives_valid_empty_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    write_micrograph("mics/empty.mrc", rng.normal(size=(200, 260)).astype(np.float32), 2.0)
    write_micrograph("mics/flat.mrc", np.full((200, 260), 3.0, np.float32), 2.0)
    report = pick(["mics/*.mrc"], "AutoPick/job001", model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert report.n_failed == 0 and len(report.picks) == 0
    for stem in ("empty", "flat"):
        assert read_coordinates(f"AutoPick/job001/mics/{stem}_autopick.star").x.size == 0
    assert len(read_coordinates("AutoPick/job001", "relion")) == 0
    report = pick(["mics/*.mrc"], "p.star", model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert Path("p.star").is_file() and len(read_coordinates("p.star")) == 0


def test_border_drops_picks_near_the_edge(tmp_path):
    truth = write_blob_micrographs(tmp_path, 1, particles=8)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    full, = pick_micrographs(truth, border_A=0.0, **kwargs)
    border_A = 100.0  # 50 px; particles lie at least 36 px (one diameter) from the edge
    cut, = pick_micrographs(truth, border_A=border_A, **kwargs)
    b = border_A / 2.0
    h, w = full.shape
    near = (full.picks.x < b) | (full.picks.y < b) | (full.picks.x > w - 1 - b) | (full.picks.y > h - 1 - b)
    assert near.any() and not near.all()
    assert len(cut.picks) == int((~near).sum())


def test_test_time_augmentation_finds_the_same_particles(tmp_path):
    """--tta averages 8 turned/mirrored copies: particles still land where they are, scores change."""
    truth = write_blob_micrographs(tmp_path, 2, shape=(200, 330), particles=5, seed=9)
    diameter_px = DIAMETER_A / 2.0
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    plain = list(pick_micrographs(truth, **kwargs))
    tta = list(pick_micrographs(truth, tta=True, **kwargs))
    for p, t in zip(plain, tta, strict=True):
        assert t.ok and t.shape == p.shape
        recall, precision = match_fraction(t.selected, truth[t.path], 0.15 * diameter_px)
        assert recall == 1.0 and precision == 1.0, (t.path, recall, precision)
        xy = np.stack([t.selected.x, t.selected.y], 1)
        err = np.sqrt(((xy[:, None] - truth[t.path][None]) ** 2).sum(-1)).min(axis=0)
        assert np.median(err) < 0.1 * diameter_px
        assert not np.array_equal(t.picks.score, p.picks.score)


def test_default_border_keeps_only_particles_wholly_inside(tmp_path):
    # Crop a blob micrograph so that two particles sit 6 px from the left edge: cut in half by it.
    truth = write_blob_micrographs(tmp_path / "full", 1, particles=8)
    (path, centres), = truth.items()
    image = read_micrograph(path).data
    r = DIAMETER_A / 2 / 2.0  # radius in pixels (2 A/px)
    left = int(round(np.sort(centres[:, 0])[1])) - 6
    write_micrograph(tmp_path / "cut.mrc", np.ascontiguousarray(image[:, left:]), 2.0)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    default, = pick_micrographs([tmp_path / "cut.mrc"], **kwargs)
    radius, = pick_micrographs([tmp_path / "cut.mrc"], border_A=DIAMETER_A / 2, **kwargs)
    everything, = pick_micrographs([tmp_path / "cut.mrc"], border_A=0.0, **kwargs)
    h, w = default.shape
    assert (everything.picks.x < r - 0.5).any()
    assert np.array_equal(default.picks.x, radius.picks.x) and np.array_equal(default.picks.y, radius.picks.y)
    assert (default.picks.x >= r - 0.5).all() and (default.picks.x < w - 0.5 - r).all()
    assert (default.picks.y >= r - 0.5).all() and (default.picks.y < h - 0.5 - r).all()
    assert len(default.picks) == int(((everything.picks.x >= r - 0.5) & (everything.picks.x < w - 0.5 - r)
                                      & (everything.picks.y >= r - 0.5)
                                      & (everything.picks.y < h - 0.5 - r)).sum())


def test_batches_of_mixed_shapes_give_the_same_picks(tmp_path):
    a = write_blob_micrographs(tmp_path / "a", 2, shape=(200, 260), particles=4, seed=7)
    b = write_blob_micrographs(tmp_path / "b", 2, shape=(230, 200), particles=4, seed=8)
    paths = [*a, *b][::-1]
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, mixed_precision=False)
    one = list(pick_micrographs(paths, batch_size=1, **kwargs))
    four = list(pick_micrographs(paths, batch_size=4, num_workers=2, **kwargs))
    assert [r.path for r in four] == paths
    for r1, r4 in zip(one, four, strict=True):
        np.testing.assert_allclose(np.c_[r4.picks.x, r4.picks.y, r4.picks.score],
                                   np.c_[r1.picks.x, r1.picks.y, r1.picks.score], atol=1e-4)


def test_micrograph_inputs_carry_their_names_and_pixel_sizes(tmp_path):
    truth = write_blob_micrographs(tmp_path, 1, pixel_size_A=2.0, particles=4)
    path = next(iter(truth))
    item = MicrographInput(path=path, name="Movies/renamed.mrc", pixel_size_A=2.0)
    result, = pick_micrographs([item], model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert set(result.picks.micrograph) == {"Movies/renamed.mrc"} and result.name == "Movies/renamed.mrc"
    # A wrong pixel size changes the scale: a 1.5x larger pixel makes the blobs look 1.5x smaller. Whether
    # the tiny model still finds them all depends on the CPU's float kernels, so what is checked is that
    # the given pixel size, not the header's, set the box and the resampling the network saw.
    wrong = MicrographInput(path=path, name="x", pixel_size_A=3.0)
    other, = pick_micrographs([wrong], model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert other.pixel_size_A == 3.0 and len(other.picks) and len(result.picks)
    np.testing.assert_allclose(result.picks.diameter_px, DIAMETER_A / 2.0)
    np.testing.assert_allclose(other.picks.diameter_px, DIAMETER_A / 3.0)
    best = min(len(result.picks), len(other.picks), 4)
    assert not np.allclose(np.sort(other.picks.score)[-best:], np.sort(result.picks.score)[-best:], atol=1e-3)


# --- runs: outputs, sharding, skip_existing --------------------------------------------------------------

def test_shards_together_equal_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("."), 5, particles=4)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    pick(["*.mrc"], "all.star", **kwargs)
    parts = [pick(["*.mrc"], "part.star", shard=(k, 3), **kwargs) for k in range(3)]
    assert [p.n_micrographs for p in parts] == [2, 2, 1]
    files = sorted(Path(".").glob("part.shard*of3.star"))
    assert [f.name for f in files] == ["part.shard0of3.star", "part.shard1of3.star", "part.shard2of3.star"]
    merged = Picks.concat(read_coordinates(f) for f in files)
    reference = read_coordinates("all.star")

    def rows(p):
        return sorted(zip(p.micrograph, np.round(p.x, 3), np.round(p.y, 3), np.round(p.score, 5),
                          strict=True))

    assert len(reference) > 0 and rows(merged) == rows(reference)


def test_sharded_job_folder_then_merge_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 4, particles=4)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    reference = pick(["Movies/*.mrc"], "AutoPick/job001", **kwargs)
    for k in range(2):
        pick(["Movies/*.mrc"], "AutoPick/job002", shard=f"{k}/2", **kwargs)
    assert not Path("AutoPick/job002/autopick.star").exists()  # written by the merge run
    merge = pick(["Movies/*.mrc"], "AutoPick/job002", skip_existing=True, **kwargs)
    assert merge.n_skipped == 4 and merge.n_picked == 0
    a, b = read_coordinates("AutoPick/job001", "relion"), read_coordinates("AutoPick/job002", "relion")
    assert len(a) == len(reference.picks) > 0
    np.testing.assert_allclose(np.c_[a.x, a.y, a.score], np.c_[b.x, b.y, b.score])
    assert list(a.micrograph) == list(b.micrograph)
    assert len(read_coordinates("AutoPick/job002/candidates.star")) == len(reference.candidates)


def test_skip_existing_continues_an_interrupted_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 3, particles=4)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    first = pick(["Movies/*.mrc"], "AutoPick/job005", **kwargs)
    assert first.n_picked == 3
    done = Path("AutoPick/job005/Movies/mic_000_autopick.star")
    # Mark a finished micrograph: a skipped one is read back, not picked again.
    lines = done.read_text().rstrip("\n").splitlines()
    done.write_text("\n".join(lines[:-2]) + "\n")
    n_kept = len(read_coordinates(done))
    Path("AutoPick/job005/Movies/mic_002_autopick.star").unlink()  # "interrupted" before this one finished
    again = pick(["Movies/*.mrc"], "AutoPick/job005", skip_existing=True, **kwargs)
    assert (again.n_skipped, again.n_picked) == (2, 1)
    assert len(read_coordinates(done)) == n_kept
    assert Path("AutoPick/job005/Movies/mic_002_autopick.star").is_file()
    assert len(read_coordinates("AutoPick/job005", "relion").micrographs()) == 3
    with pytest.raises(ValueError, match="folder output"):
        pick(["Movies/*.mrc"], "p.star", skip_existing=True, **kwargs)


def test_box_folder_output_with_scores_and_candidates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    truth = write_blob_micrographs(Path("Movies"), 2, particles=4)
    report = pick(["Movies/*.mrc"], "boxes", format="box", model=trained_checkpoint(), diameter_A=DIAMETER_A)
    # At the particles' own diameter (calibration off) every blob is found, once.
    typed = pick(["Movies/*.mrc"], "typed", format="box", model=trained_checkpoint(), diameter_A=DIAMETER_A,
                 calibrate=False)
    for path, pts in truth.items():
        stem = Path(path).stem
        picks = read_coordinates(f"boxes/{stem}.box")
        # The box is the diameter picked at (measured by the calibration), in whole, even pixels.
        assert np.all(np.abs(picks.diameter_px - report.calibration.diameter_A / 2.0) <= 1.0)
        assert len(read_coordinates(f"boxes/candidates/{stem}.box")) >= len(picks)
        at_typed = read_coordinates(f"typed/{stem}.box")
        assert np.all(np.abs(at_typed.diameter_px - DIAMETER_A / 2.0) <= 1.0)
        assert match_fraction(at_typed, pts, 5.0) == (1.0, 1.0)
    assert report.outputs == [Path("boxes")] and typed.outputs == [Path("typed")]


def test_pick_is_exported_lazily():
    import hydrapick

    assert hydrapick.pick is pick


def test_no_stray_temporary_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 2, particles=3)
    for out, fmt in (("p.star", None), ("p.txt", None), ("p.cs", None), ("job", "relion"), ("b", "box")):
        pick(["Movies/*.mrc"], out, format=fmt, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    leftovers = [p for p in Path(".").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []




def test_mixed_precision_picks_match_float32(tmp_path, monkeypatch):
    from hydrapick.checkpoint import load_model
    from hydrapick.picking import engine

    # Autocast runs on CPUs with hardware bf16 only; pretend this one has it, so the comparison below is
    # bf16 against float32 on every machine rather than float32 against itself.
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    truth = write_blob_micrographs(tmp_path, 1, particles=6, seed=31)
    net, meta = load_model(trained_checkpoint())
    dtypes: list[torch.dtype] = []
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    # The engine's one probe pass on a tiny zero image (sizing the tiles, `auto_tile_px`) is not picking:
    # only passes over the micrograph itself count.
    probe_px = 4 * TINY.anchor_stride
    first_conv.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype) if args[0].shape[-1] > probe_px else None)
    kwargs = dict(model=(net, meta), diameter_A=DIAMETER_A, device="cpu")
    fast, = pick_micrographs(truth, **kwargs)
    assert dtypes and set(dtypes) == {torch.bfloat16}, dtypes  # autocast ran
    dtypes.clear()
    exact, = pick_micrographs(truth, mixed_precision=False, **kwargs)
    assert dtypes and set(dtypes) == {torch.float32}, dtypes
    a, b = fast.selected, exact.selected
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(np.sort(a.score), np.sort(b.score), atol=0.03)
    d = np.hypot(a.x[:, None] - b.x[None], a.y[:, None] - b.y[None]).min(axis=1)
    assert d.max() < 1.0  # pixels


def test_pick_keeps_input_order_and_drops_repeats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("."), 3, particles=2)
    names = ["mic_002.mrc", "mic_000.mrc", "mic_002.mrc", "mic_001.mrc"]
    Path("list.txt").write_text("mic_000.mrc\n")
    report = pick([*names, "list.txt"], "p.star", model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert report.n_micrographs == 3
    assert read_coordinates("p.star").micrographs() == ["mic_002.mrc", "mic_000.mrc", "mic_001.mrc"]
