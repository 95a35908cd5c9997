"""Training batches made ahead by worker processes: the same batches, in step order."""

import pytest
import torch

from hydrapick.training.augment import Augmentation, make_batch
from hydrapick.training.datasets import MicrographSample, TrainingDataset
from hydrapick.training.loader import BatchLoader
from hydrapick.training.randomise import Randomisation
from hydrapick.training.sampler import DatasetBatchSampler


def _datasets():
    g = torch.Generator().manual_seed(3)
    out = []
    for d in range(2):
        samples = [MicrographSample(name=f"d{d}m{i}", source="", image=torch.randn(150, 170, generator=g),
                                    centres=torch.rand(6, 2, generator=g) * 150, pixel_size_A=2.0,
                                    diameter_A=60.0) for i in range(3)]
        out.append(TrainingDataset(name=f"d{d}", diameter_A=60.0, train=samples))
    return out


# Random scale and random preprocessing on: every random draw of a crop must follow its step's seed.
AUG = Augmentation(crop_px=64, flips=True, any_angle=False, randomisation=Randomisation(0.75, 1.35, 0.5))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_make_batch_of_each_step_in_order(workers):
    datasets = _datasets()
    steps = DatasetBatchSampler([3, 3], batch_size=3, steps_per_epoch=7, seed=5).epoch(0)
    loader = BatchLoader(datasets, AUG, workers)
    try:
        got = list(loader.batches(steps))
        again = list(loader.batches(steps[:2]))  # the pool is reused from one epoch to the next
    finally:
        loader.close()
    assert len(got) == len(steps) and len(again) == 2
    for step, (images, centres, _) in zip(steps, got, strict=True):
        ds = datasets[step.dataset]
        want_images, want_centres, _ = make_batch([ds.train[i] for i in step.micrographs], AUG, step.seed,
                                               step.positions)
        assert torch.equal(images, want_images)
        assert all(torch.equal(a, b) for a, b in zip(centres, want_centres, strict=True))
    assert torch.equal(again[1][0], got[1][0])


def test_negative_workers_are_refused():
    with pytest.raises(ValueError, match="loader workers"):
        BatchLoader(_datasets(), AUG, -1)
