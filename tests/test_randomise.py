"""Domain randomisation of training crops: random particle scale and random preprocessing chains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydrapick.config import TrainConfig
from hydrapick.training.augment import Augmentation, augmentation_for, random_crop
from hydrapick.training.datasets import MicrographSample
from hydrapick.training.randomise import (
    Randomisation,
    clahe8,
    draw_scale,
    edge_preserving_denoise,
    equalise,
    gaussian_blur,
    quantise,
    random_preprocess,
    tilt_spectrum,
    zoom,
)


def disc_sample(seed: int = 1) -> MicrographSample:
    """A 400 x 400 noise micrograph with 20 dark discs of diameter 32 at known centres."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:400, :400]
    pts = rng.uniform(30, 370, (20, 2))
    image = rng.normal(0, 1, (400, 400)).astype(np.float32)
    for x, y in pts:
        image[(xx - x) ** 2 + (yy - y) ** 2 < 16 ** 2] -= 3
    return MicrographSample("a", "a", torch.tensor(image), torch.tensor(pts, dtype=torch.float32), 1.0, 32.0)


def test_default_randomisation_changes_nothing():
    sample = disc_sample()
    plain = Augmentation(crop_px=128)
    off = Augmentation(crop_px=128, randomisation=Randomisation())
    a = random_crop(sample, plain, np.random.default_rng(3), torch.Generator().manual_seed(0))
    b = random_crop(sample, off, np.random.default_rng(3), torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert augmentation_for(TrainConfig(crop_px=128)) == Augmentation(crop_px=128)


@pytest.mark.parametrize(("randomisation", "on_dark"), [
    (Randomisation(0.75, 1.35, 0.5), 0.97),
    # CLAHE remaps each tile on its own, so a disc among many others can end up lighter than the crop's
    # mean; a misplaced centre would sit on a disc about half the time.
    (Randomisation(0.75, 1.35, 1.0, denoisers=True, spectral_tilt=True, bilateral_probability=0.5,
                   clahe_probability=0.5), 0.95),
], ids=["families of stages 5-18", "every family"])
def test_randomised_crops_keep_centres_on_the_particles(randomisation: Randomisation, on_dark: float):
    sample = disc_sample()
    aug = Augmentation(crop_px=128, randomisation=randomisation)
    contrast = []
    gen = torch.Generator().manual_seed(0)
    for k in range(60):
        image, centres, _ = random_crop(sample, aug, np.random.default_rng(k), gen)
        assert image.shape == (128, 128) and torch.isfinite(image).all()
        for x, y in centres.round().int().tolist():
            if 3 <= x < 125 and 3 <= y < 125:  # a 5 x 5 mean: whitened crops have strong pixel noise
                contrast.append(float(image[y - 2:y + 3, x - 2:x + 3].mean() - image.mean()))
    assert len(contrast) > 50
    # Every labelled centre still sits on a dark disc, whatever the scale and preprocessing.
    assert np.mean(np.array(contrast) < 0) > on_dark


def test_zoom_maps_pixel_centres_exactly():
    image = torch.zeros(100, 100)
    image[39:42, 59:62] = 1.0  # a 3 px square centred on (60, 40)
    out, c = zoom(image, torch.tensor([[60.0, 40.0]]), 150)
    assert torch.allclose(c, torch.tensor([[(60.5 * 1.5) - 0.5, (40.5 * 1.5) - 0.5]]))
    yy, xx = torch.meshgrid(torch.arange(150.0), torch.arange(150.0), indexing="ij")
    cx, cy = float((out * xx).sum() / out.sum()), float((out * yy).sum() / out.sum())
    assert cx == pytest.approx(float(c[0, 0]), abs=0.05) and cy == pytest.approx(float(c[0, 1]), abs=0.05)


def test_scale_draws_stay_in_range_and_are_log_uniform():
    rng = np.random.default_rng(0)
    cfg = Randomisation(0.75, 1.35)
    draws = np.array([draw_scale(cfg, rng) for _ in range(4000)])
    assert draws.min() >= 0.75 and draws.max() <= 1.35
    # log-uniform: as many draws below the geometric mean as above it
    assert abs(np.mean(draws < np.sqrt(0.75 * 1.35)) - 0.5) < 0.03
    assert draw_scale(Randomisation(), rng) == 1.0


def test_preprocessing_families():
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.normal(size=(64, 64)), dtype=torch.float32)
    assert gaussian_blur(image, 2.0).std() < 0.5 * image.std()  # noise is smoothed
    assert gaussian_blur(torch.ones(64, 64), 8.0).allclose(torch.ones(64, 64), atol=1e-5)
    eq = equalise(image)
    assert eq.min() == 0 and eq.max() == 1 and abs(float(eq.mean()) - 0.5) < 1e-3
    q = quantise(image, 16, 1.0)
    assert len(torch.unique(q)) <= 16
    out = random_preprocess(image, rng, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_train_config_checks_randomisation():
    with pytest.raises(ValueError, match="scale_min"):
        TrainConfig(scale_min=1.2, scale_max=1.0)
    with pytest.raises(ValueError, match="preprocess_probability"):
        TrainConfig(preprocess_probability=1.5)


def test_blur_max_px_widens_the_low_pass_family_only():
    # Same random stream, wider blur range: every chain that blurs is smoother, the others are unchanged.
    noise = torch.randn(96, 96, generator=torch.Generator().manual_seed(0))

    def roughness(x: torch.Tensor) -> float:
        return float((x[:, 1:] - x[:, :-1]).std() / x.std())

    narrower, wider = [], []
    for seed in range(24):
        a = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed))
        b = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              blur_max_px=8.0)
        narrower.append(roughness(a))
        wider.append(roughness(b))
    smoother = [w < n - 0.01 for n, w in zip(narrower, wider, strict=True)]
    same = [abs(w - n) < 1e-6 for n, w in zip(narrower, wider, strict=True)]
    assert all(s or e for s, e in zip(smoother, same, strict=True))
    assert sum(smoother) >= 8 and sum(same) >= 3  # about 60% of chains blur
    assert TrainConfig().blur_max_px == 2.5
    assert augmentation_for(TrainConfig(blur_max_px=6)).randomisation.blur_max_px == 6
    with pytest.raises(ValueError, match="blur_max_px"):
        TrainConfig(blur_max_px=0.1)


def disc_image(seed: int = 0, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A 96 x 96 image: a bright disc of radius 20 at the centre on flat ice, with Gaussian noise; and the
    disc's mask."""
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    disc = ((xx - 48) ** 2 + (yy - 48) ** 2 < 20**2).float()
    g = torch.Generator().manual_seed(seed)
    return disc + noise * torch.randn(96, 96, generator=g), disc


def test_edge_preserving_denoise_smooths_ice_but_keeps_the_particle_edge():
    image, _ = disc_image()
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    radius = ((xx - 48) ** 2 + (yy - 48) ** 2).sqrt()
    flat = (slice(2, 20), slice(2, 20))  # a corner of ice, far from the disc
    for sigma in (1.0, 2.0, 3.0):
        bilateral = edge_preserving_denoise(image, sigma, 0.5)
        gauss = gaussian_blur(image, sigma)
        assert float(bilateral[flat].std()) < 0.6 * float(image[flat].std())  # noise averaged away

        def edge_step(x: torch.Tensor) -> float:
            # Mean over a ring just inside the disc's edge minus over a ring just outside it (1-3 px).
            inside, outside = (radius >= 17) & (radius < 19.5), (radius >= 20.5) & (radius < 23)
            return float(x[inside].mean() - x[outside].mean())

        # The step across the disc's edge (1 before filtering) stays steeper than a Gaussian blur of the
        # same width leaves it.
        assert edge_step(bilateral) > edge_step(gauss) + 0.1
    assert edge_preserving_denoise(torch.ones(40, 40), 2.0, 1.0).allclose(torch.ones(40, 40), atol=1e-5)


def test_clahe8_equalises_each_tile_within_the_contrast_limit():
    rng = np.random.default_rng(0)
    dim = rng.integers(40, 60, (128, 128))  # a low-contrast texture on the left ...
    dim[:, 64:] += 150  # ... and the same on the right, brighter
    image8 = dim.astype(np.uint8)
    out = clahe8(image8, tiles=2, clip_limit=256.0)  # no effective limit: equalisation per tile
    assert out.dtype == np.uint8 and out.shape == image8.shape
    # Each half is stretched to (almost) the full range, where the global range of a half was 20 levels.
    for half in (out[:, :32], out[:, 96:]):
        assert half.max() - half.min() > 200
    # Order within a tile is kept: a brighter input pixel never maps darker (far from tile borders).
    left_in, left_out = image8[:32, :32].ravel(), out[:32, :32].ravel()
    order = np.argsort(left_in, kind="stable")
    assert np.all(np.diff(left_out[order].astype(int)) >= 0)
    # A low clip limit stretches less.
    limited = clahe8(image8, tiles=2, clip_limit=1.5)
    assert limited[:, :32].std() < out[:, :32].std()


def test_denoisers_join_the_chain_only_when_asked():
    noise = torch.randn(96, 96, generator=torch.Generator().manual_seed(0))
    same, changed = 0, 0
    for seed in range(24):
        a = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed))
        b = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              denoisers=False)
        c = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              denoisers=True)
        assert torch.equal(a, b)  # off: the chains (and random draws) of earlier stages, unchanged
        assert c.shape == noise.shape and torch.isfinite(c).all()
        same += int(torch.equal(a, c))
        changed += int(not torch.equal(a, c))
    assert changed >= 8 and same >= 1
    assert augmentation_for(TrainConfig(denoisers=True)).randomisation.denoisers
    assert not TrainConfig().denoisers


def test_tilt_spectrum_whitens_or_reddens_around_the_pivot():
    noise = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) + 3.0
    fy, fx = torch.fft.fftfreq(256)[:, None], torch.fft.rfftfreq(256)[None, :]
    f = torch.sqrt(fx**2 + fy**2)

    def high_over_low(x: torch.Tensor) -> float:
        power = torch.fft.rfft2(x).abs() ** 2
        return float(power[(f > 0.3) & (f < 0.45)].mean() / power[(f > 0.03) & (f < 0.06)].mean())

    flat = high_over_low(noise)
    assert tilt_spectrum(noise, 0.0).allclose(noise, atol=1e-4)
    # White noise: the power ratio between 0.3-0.45 and 0.03-0.06 cycles/px follows (f_high/f_low)^exponent
    # (about 8.5^exponent), and the mean (the zero frequency) is kept.
    assert high_over_low(tilt_spectrum(noise, 1.5)) > 10 * flat
    assert high_over_low(tilt_spectrum(noise, -1.5)) < 0.1 * flat
    assert float(tilt_spectrum(noise, 1.5).mean()) == pytest.approx(float(noise.mean()), abs=1e-4)


def test_spectral_tilt_joins_the_chain_only_when_asked():
    noise = torch.randn(96, 96, generator=torch.Generator().manual_seed(1))
    changed = 0
    for seed in range(16):
        a = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed))
        b = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              spectral_tilt=True)
        assert b.shape == noise.shape and torch.isfinite(b).all()
        changed += int(not torch.allclose(a, b))
    assert changed >= 4
    assert augmentation_for(TrainConfig(spectral_tilt=True)).randomisation.spectral_tilt
    assert not TrainConfig().spectral_tilt


def test_bilateral_and_clahe_families_are_drawn_on_top_when_asked():
    noise = torch.randn(96, 96, generator=torch.Generator().manual_seed(2))
    for seed in range(8):
        a = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed))
        b = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              bilateral_probability=0.0, clahe_probability=0.0)
        c = random_preprocess(noise, np.random.default_rng(seed), torch.Generator().manual_seed(seed),
                              bilateral_probability=1.0, clahe_probability=1.0)
        assert torch.equal(a, b)  # at 0 the chains and their random draws are those of earlier recipes
        assert torch.isfinite(c).all() and not torch.allclose(a, c)
    aug = augmentation_for(TrainConfig(bilateral_probability=0.3, clahe_probability=0.15)).randomisation
    assert (aug.bilateral_probability, aug.clahe_probability) == (0.3, 0.15)
    with pytest.raises(ValueError, match="clahe_probability"):
        TrainConfig(clahe_probability=1.5)
