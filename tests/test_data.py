"""Manifest parsing and checks, the model-scale cache, augmentation, validation tiles and the sampler."""

import math

import numpy as np
import pytest
import torch

from hydrapick.config import ModelConfig
from hydrapick.io import write_coordinates, write_micrograph
from hydrapick.picks import Picks
from hydrapick.training.augment import Augmentation, dihedral, make_batch, random_crop, rotate, tiles
from hydrapick.training.datasets import MicrographSample, inspect_manifest, load_datasets
from hydrapick.training.manifest import ManifestError, read_manifest, split_names
from hydrapick.training.randomise import Randomisation
from hydrapick.training.sampler import DatasetBatchSampler

MODEL = ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(16, 16),
                    stem_stride=2, anchor_stride=8, particle_diameter_px=32)


def _write_dataset(folder, n=4, shape=(200, 300), pixel_size_A=2.0, per_mic=5, seed=0, skip_coords=()):
    """n MRC micrographs with per-micrograph STAR files; returns the picks written."""
    rng = np.random.default_rng(seed)
    (folder / "mics").mkdir(parents=True, exist_ok=True)
    (folder / "coords").mkdir(exist_ok=True)
    written = {}
    for i in range(n):
        name = f"mic_{i:03d}"
        image = rng.normal(size=shape).astype(np.float32)
        write_micrograph(folder / "mics" / f"{name}.mrc", image, pixel_size_A)
        picks = Picks(name, rng.uniform(10, shape[1] - 10, per_mic), rng.uniform(10, shape[0] - 10, per_mic))
        if i not in skip_coords:
            write_coordinates(picks, folder / "coords" / f"{name}.star")
        written[name] = picks
    return written


def _manifest(tmp_path, text):
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


# --- manifest ----------------------------------------------------------------------------------------

def test_manifest_loads_micrographs_at_model_scale_with_picks(tmp_path):
    written = _write_dataset(tmp_path / "a", n=4)
    path = _manifest(tmp_path, """
valid_fraction = 0.25
test_fraction = 0.0
[datasets.alpha]
micrographs = "a/mics/*.mrc"
coordinates = "a/coords"
diameter_A = 32.0
""")
    manifest = read_manifest(path)
    assert manifest.names == ["alpha"]
    (ds,) = load_datasets(manifest, MODEL)
    assert (len(ds.train), len(ds.valid), len(ds.test_names)) == (3, 1, 0)
    # 32 Å at 2 Å/px is 16 px; the model wants 32 px, so everything doubles.
    sample = (ds.train + ds.valid)[0]
    assert sample.shape == (400, 600)
    truth = written[sample.name]
    expected = np.stack([(truth.x + 0.5) * 2 - 0.5, (truth.y + 0.5) * 2 - 0.5], axis=1)
    np.testing.assert_allclose(sample.centres.numpy(), expected, atol=1e-3)
    assert sample.pixel_size_A == pytest.approx(2.0) and sample.diameter_A == 32.0
    assert abs(float(sample.image.median())) < 0.1  # normalised by prepare()
    summary = ds.summary()
    assert summary["particles_train"] == 15 and summary["micrographs"]["valid"] == [ds.valid[0].name]


def test_explicit_split_and_pixel_size_override(tmp_path):
    _write_dataset(tmp_path / "a", n=4, pixel_size_A=2.0)
    path = _manifest(tmp_path, """
[datasets.alpha]
micrographs = ["a/mics/mic_000.mrc", "a/mics/mic_001.mrc", "a/mics/mic_002.mrc", "a/mics/mic_003.mrc"]
coordinates = "a/coords/*.star"
diameter_A = 32.0
pixel_size_A = 4.0
valid = ["mic_001"]
test = ["mic_003.mrc"]
""")
    (ds,) = load_datasets(path, MODEL, cache_dtype=torch.float16)
    assert [s.name for s in ds.train] == ["mic_000", "mic_002"]
    assert [s.name for s in ds.valid] == ["mic_001"] and ds.test_names == ["mic_003"]
    assert ds.train[0].shape == (800, 1200)  # 32 Å at 4 Å/px = 8 px -> x4
    assert ds.train[0].image.dtype == torch.float16


def test_micrographs_without_coordinates_are_all_named(tmp_path):
    _write_dataset(tmp_path / "a", n=5, skip_coords=(1, 3))
    text = """
[datasets.alpha]
micrographs = "a/mics"
coordinates = "a/coords"
diameter_A = 32.0
"""
    with pytest.raises(ManifestError) as info:
        load_datasets(_manifest(tmp_path, text), MODEL)
    (problem,) = info.value.problems
    assert "2 micrograph(s) without coordinates: mic_001, mic_003" in problem
    # allow_empty accepts them as particle-free micrographs.
    (ds,) = load_datasets(_manifest(tmp_path, text + "allow_empty = true\n"), MODEL)
    assert sum(len(s.centres) == 0 for s in ds.train + ds.valid) == 2


@pytest.mark.parametrize("entry", ["a/coords", "a/coords/*.star"])
def test_an_empty_coordinate_file_labels_a_micrograph_without_particles(tmp_path, entry):
    # As in `hydrapick evaluate`: an empty per-micrograph file says "no particles here" (the simulator
    # writes one for a micrograph whose particles are all on carbon); only a missing file is an error.
    _write_dataset(tmp_path / "a", n=5, skip_coords=(1, 3))
    write_coordinates(Picks.empty(), tmp_path / "a" / "coords" / "mic_001.star")
    text = f"""
valid_fraction = 0.0
test_fraction = 0.0
[datasets.alpha]
micrographs = "a/mics"
coordinates = "{entry}"
diameter_A = 32.0
"""
    with pytest.raises(ManifestError) as info:
        load_datasets(_manifest(tmp_path, text), MODEL)
    (problem,) = info.value.problems
    assert "1 micrograph(s) without coordinates: mic_003" in problem
    write_coordinates(Picks.empty(), tmp_path / "a" / "coords" / "mic_003.star")
    (ds,) = load_datasets(_manifest(tmp_path, text), MODEL)
    samples = {s.name: s for s in ds.train + ds.valid}
    assert len(samples) == 5
    assert len(samples["mic_001"].centres) == 0 and len(samples["mic_003"].centres) == 0
    assert len(samples["mic_000"].centres) == 5


def test_coordinates_outside_the_micrograph_and_missing_pixel_size(tmp_path):
    _write_dataset(tmp_path / "a", n=2)
    write_coordinates(Picks("mic_000", [5.0, 900.0], [5.0, 5.0]), tmp_path / "a" / "coords" / "mic_000.star")
    write_micrograph(tmp_path / "a" / "mics" / "mic_001.mrc", np.zeros((200, 300), np.float32), 1.0)
    path = _manifest(tmp_path, """
[datasets.alpha]
micrographs = "a/mics"
coordinates = "a/coords"
diameter_A = 32.0
""")
    with pytest.raises(ManifestError) as info:
        inspect_manifest(path)
    text = "\n".join(info.value.problems)
    assert "1 coordinate(s) of 'mic_000' lie outside the 300x200 micrograph" in text
    assert "mic_001.mrc' has no pixel size in its header; give it (pixel_size_A" in text


def test_inspect_manifest_counts_without_loading(tmp_path):
    _write_dataset(tmp_path / "a", n=10, per_mic=3)
    path = _manifest(tmp_path, """
[datasets.alpha]
micrographs = "a/mics"
coordinates = "a/coords"
diameter_A = 32.0
""")
    (row,) = inspect_manifest(path)
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (8, 1, 1)
    assert row["particles"] == 27 and row["pixel_size_A"] == [2.0, 2.0]


def test_seeded_split_rules():
    names = [f"m{i}" for i in range(20)]
    a = split_names(names, "set", valid_fraction=0.1, test_fraction=0.1, seed=3)
    assert a == split_names(names, "set", valid_fraction=0.1, test_fraction=0.1, seed=3)
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (16, 2, 2)
    assert sorted(a["train"] + a["valid"] + a["test"]) == sorted(names)
    assert a != split_names(names, "other", valid_fraction=0.1, test_fraction=0.1, seed=3)
    assert split_names(names[:3], "set")["valid"] and not split_names(names[:3], "set")["test"]
    assert split_names(names[:2], "set") == {"train": names[:2], "valid": [], "test": []}
    explicit = split_names(names[:4], "set", explicit={"valid": ["m1"], "train": ["m0", "m2"]})
    assert explicit == {"train": ["m0", "m2"], "valid": ["m1"], "test": []}  # m3 left out


# --- augmentation ------------------------------------------------------------------------------------

def _marked(h, w, points):
    """An image that is 1 exactly on each (x, y) point and 0 elsewhere."""
    image = torch.zeros(h, w)
    for x, y in points:
        image[y, x] = 1.0
    return image, torch.tensor(points, dtype=torch.float32)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_moves_centres_with_pixels(k, flip):
    image, centres = _marked(5, 7, [(4, 1), (0, 0), (6, 4)])
    out, moved = dihedral(image, centres, k, flip)
    assert out.shape == ((7, 5) if k % 2 else (5, 7))
    for x, y in moved.round().long().tolist():
        assert out[y, x] == 1.0
    assert int(out.sum()) == 3


def test_rotate_moves_centres_with_pixels():
    image = torch.zeros(61, 61)
    yy, xx = torch.meshgrid(torch.arange(61.0), torch.arange(61.0), indexing="ij")
    image += torch.exp(-((xx - 42) ** 2 + (yy - 25) ** 2) / 4)
    for angle in (0.3, 1.0, 2.5):
        out, moved = rotate(image, torch.tensor([[42.0, 25.0]]), angle, 41)
        peak = divmod(int(out.argmax()), 41)
        assert abs(peak[1] - moved[0, 0]) <= 1 and abs(peak[0] - moved[0, 1]) <= 1


def _sample(h, w, points):
    image, centres = _marked(h, w, points)
    return MicrographSample("m", "memory", image, centres, 1.0, 32.0)


@pytest.mark.parametrize("aug", [Augmentation(crop_px=24), Augmentation(crop_px=24, flips=False),
                                 Augmentation(crop_px=64)], ids=["flips", "plain", "padded"])
def test_random_crop_keeps_particles_on_their_pixels(aug):
    rng = np.random.default_rng(0)
    points = [(int(x), int(y)) for x, y in rng.integers(0, [50, 40], size=(40, 2))]
    sample = _sample(40, 50, list(dict.fromkeys(points)))
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(20):
        image, centres, _ = random_crop(sample, aug, rng, gen)
        assert image.shape == (aug.crop_px, aug.crop_px) and image.dtype == torch.float32
        for x, y in centres.round().long().tolist():
            assert image[y, x] == 1.0
        # Every marked pixel in the crop is listed as a particle (none lost at the crop edges).
        assert int((image == 1.0).sum()) == len(centres)
        seen += len(centres)
    assert seen > 0


@pytest.mark.parametrize("aug", [Augmentation(crop_px=24), Augmentation(crop_px=24, flips=False),
                                 Augmentation(crop_px=64)], ids=["flips", "plain", "padded"])
def test_places_to_ignore_move_with_their_pixels(aug):
    # Particles are marked 1 and places to ignore 2: after any crop, each lands on its own mark, and
    # every mark in the crop is listed in its own list.
    rng = np.random.default_rng(4)
    points = list(dict.fromkeys((int(x), int(y)) for x, y in rng.integers(0, [50, 40], size=(40, 2))))
    image, centres = _marked(40, 50, points[:20])
    for x, y in points[20:]:
        image[y, x] = 2.0
    sample = MicrographSample("m", "memory", image, centres, 1.0, 32.0,
                              ignore=torch.tensor(points[20:], dtype=torch.float32))
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(20):
        crop, particles, ignore = random_crop(sample, aug, rng, gen)
        for places, mark in ((particles, 1.0), (ignore, 2.0)):
            for x, y in places.round().long().tolist():
                assert crop[y, x] == mark
            assert int((crop == mark).sum()) == len(places)
        seen += len(ignore)
    assert seen > 0


def test_padding_looks_like_background():
    sample = MicrographSample("m", "memory", torch.randn(30, 30) * 2 + 5, torch.zeros(0, 2), 1.0, 32.0)
    image, _, _ = random_crop(sample, Augmentation(crop_px=120, flips=False), np.random.default_rng(1),
                           torch.Generator().manual_seed(1))
    assert abs(float(image.mean()) - 5) < 0.3 and abs(float(image.std()) - 2) < 0.3


def test_arbitrary_rotation_crop():
    rng = np.random.default_rng(2)
    sample = _sample(100, 100, [(50, 50)])
    box = torch.ones(1, 1, 5, 5)
    sample.image = torch.nn.functional.conv2d(sample.image[None, None], box, padding=2)[0, 0]
    image, centres, _ = random_crop(sample, Augmentation(crop_px=40, any_angle=True), rng,
                                 torch.Generator().manual_seed(0))
    assert image.shape == (40, 40)
    for x, y in centres.tolist():
        assert image[round(y), round(x)] > 0.5


def test_make_batch_is_a_function_of_its_seed():
    sample = MicrographSample("m", "memory", torch.randn(100, 90), torch.rand(30, 2) * 90, 1.0, 32.0)
    aug = Augmentation(crop_px=32)
    a, ca, _ = make_batch([sample, sample, sample], aug, (0, 1, 2, 3, 0))
    b, cb, _ = make_batch([sample, sample, sample], aug, (0, 1, 2, 3, 0))
    c, _, _ = make_batch([sample, sample, sample], aug, (0, 1, 2, 4, 0))
    assert a.shape == (3, 1, 32, 32)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ca, cb, strict=True))
    assert not torch.equal(a, c)


def test_a_slice_of_a_batch_draws_the_crops_of_the_whole_batch():
    # Every random choice of a crop comes from (step seed, position): the crops rank r draws for its
    # positions are those one process draws for the whole global batch. Small micrographs (padding noise),
    # any angle, random scale and preprocessing exercise every draw.
    gen = torch.Generator().manual_seed(1)
    shapes = [(100, 90), (30, 50), (64, 64), (80, 20)]
    samples = [MicrographSample(f"m{i}", "memory", torch.randn(h, w, generator=gen), torch.rand(20, 2) * 40,
                                1.0, 32.0) for i, (h, w) in enumerate(shapes)]
    aug = Augmentation(crop_px=32, any_angle=True, randomisation=Randomisation(0.8, 1.25, 0.7))
    whole, whole_centres, _ = make_batch(samples, aug, (3, 1, 2, 5))
    for lo, hi in [(0, 2), (2, 4), (1, 3), (3, 4)]:
        part, centres, _ = make_batch(samples[lo:hi], aug, (3, 1, 2, 5), range(lo, hi))
        assert torch.equal(part, whole[lo:hi])
        assert all(torch.equal(a, b) for a, b in zip(centres, whole_centres[lo:hi], strict=True))
    with pytest.raises(ValueError, match="positions"):
        make_batch(samples, aug, (3, 1, 2, 5), [0, 1])


def test_tiles_cover_every_particle():
    rng = np.random.default_rng(3)
    points = list(dict.fromkeys((int(x), int(y)) for x, y in rng.integers(0, [70, 50], size=(60, 2))))
    sample = _sample(50, 70, points)
    parts = tiles(sample, 32)
    assert len(parts) == 3 * 2  # starts 0, 32, 38 across; 0, 18 down
    found = set()
    for image, centres in parts:
        assert image.shape == (32, 32)
        for x, y in centres.round().long().tolist():
            assert image[y, x] == 1.0
    starts = [(x0, y0) for y0 in (0, 18) for x0 in (0, 32, 38)]
    for (x0, y0), (_, centres) in zip(starts, parts, strict=True):
        found |= {(x + x0, y + y0) for x, y in centres.round().long().tolist()}
    assert found == set(points)
    small = tiles(_sample(10, 12, [(3, 4)]), 32, seed=5)
    assert len(small) == 1 and small[0][0].shape == (32, 32)
    assert torch.equal(small[0][0], tiles(_sample(10, 12, [(3, 4)]), 32, seed=5)[0][0])


# --- sampling ----------------------------------------------------------------------------------------

def test_sampler_batches_come_from_one_dataset_and_balance_datasets():
    sampler = DatasetBatchSampler([3, 50, 7], batch_size=4, steps_per_epoch=30, seed=1)
    steps = sampler.epoch(0)
    assert len(steps) == 30
    counts = np.bincount([s.dataset for s in steps], minlength=3)
    assert counts.tolist() == [10, 10, 10]  # tiny datasets are not drowned by the big one
    sizes = [3, 50, 7]
    for s in steps:
        assert len(s.micrographs) == 4 and all(0 <= m < sizes[s.dataset] for m in s.micrographs)
        if sizes[s.dataset] >= 4:
            assert len(set(s.micrographs)) == 4  # without replacement when the dataset is large enough
    assert steps == sampler.epoch(0)
    assert steps != sampler.epoch(1) and steps != sampler.epoch(0, phase=1)


def test_sampler_weights():
    sampler = DatasetBatchSampler([5, 5], batch_size=1, steps_per_epoch=2000, weights=[1, 3], seed=0)
    counts = np.bincount([s.dataset for s in sampler.epoch(0)], minlength=2)
    assert abs(counts[1] / 2000 - 0.75) < 0.04


def test_sampler_shards_one_global_batch_over_ranks():
    sizes, world, batch = [6, 40, 9], 3, 2
    full = DatasetBatchSampler(sizes, batch * world, 25, seed=7).epoch(4, phase=1)
    shards = [DatasetBatchSampler(sizes, batch, 25, seed=7, rank=r, world_size=world).epoch(4, phase=1)
              for r in range(world)]
    for i, step in enumerate(full):
        parts = [shards[r][i] for r in range(world)]
        assert all(p.dataset == step.dataset for p in parts)  # every rank trains the same head
        assert sum((p.micrographs for p in parts), ()) == step.micrographs
        # Each rank holds its slice of the global batch's positions, so its random streams too.
        assert all(p.seed == step.seed for p in parts)
        assert sum((p.positions for p in parts), ()) == step.positions == tuple(range(batch * world))
        assert sum((p.dropout_seeds() for p in parts), []) == step.dropout_seeds()
    with pytest.raises(ValueError, match="rank"):
        DatasetBatchSampler(sizes, 2, 5, rank=3, world_size=3)
    with pytest.raises(ValueError, match="at least one training micrograph"):
        DatasetBatchSampler([3, 0], 2, 5)


def test_crop_streams_differ_for_every_step_and_sample():
    steps = [s for r in range(2) for s in DatasetBatchSampler([4], 2, 10, rank=r, world_size=2).epoch(0)]
    assert len({(*s.seed, p) for s in steps for p in s.positions}) == 40  # 10 steps x 4 crops
    assert len({d for s in steps for d in s.dropout_seeds()}) == 40
    assert math.isclose(sum(DatasetBatchSampler([4, 4], 1, 10).weights), 1.0)


# --- simulated datasets ------------------------------------------------------------------------------

SIMULATED = """
valid_fraction = 0.25
test_fraction = 0.25
[datasets.sim]
diameter_A = 120
[datasets.sim.simulated]
procedural = "globular"
mass_kDa = 150.0
seed = 4
n_micrographs = 5
[datasets.sim.simulated.config]
shape_px = [96, 128]
n_views = 8
particle_diameter_px_range = [20.0, 30.0]
"""


def test_simulated_dataset_is_generated_once_and_reproducibly(tmp_path):
    path = _manifest(tmp_path, SIMULATED)
    (row,) = inspect_manifest(path)
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (3, 1, 1)
    assert row["kind"].startswith("simulated")
    (a,) = load_datasets(path, MODEL)
    (b,) = load_datasets(path, MODEL)
    assert a.kind == "simulated" and a.diameter_A == 120.0  # the manifest's diameter wins
    assert len(a.train) == 3 and len(a.valid) == 1 and a.test_names[0].startswith("sim_000")
    for x, y in zip(a.train + a.valid, b.train + b.valid, strict=True):
        assert torch.equal(x.image, y.image) and torch.equal(x.centres, y.centres)
        assert x.source.startswith("simulated:sim/")
    # Resampled so that the 120 Å particle is MODEL.particle_diameter_px wide.
    sample = a.train[0]
    assert sample.shape[0] == round(96 * MODEL.particle_diameter_px / (120 / sample.pixel_size_A))
