"""`hydrapick.preprocess`: the pixel-centre convention of `Prepared.to_model`/`to_original`, exactly."""

from __future__ import annotations

import numpy as np
import torch

from hydrapick.config import ModelConfig
from hydrapick.picks import Picks
from hydrapick.preprocess import Prepared, prepare, tail_quantiles


def test_sub_pixel_round_trip_is_exact():
    # Model pixel i covers original pixels [(i) / s - 0.5, (i + 1) / s - 0.5): its centre is
    # (i + 0.5) / s - 0.5. Without the +-0.5 terms a large particle (s = 1/8) would move by 3.5 px.
    prep = Prepared(torch.zeros(10, 10), scale_y=0.125, scale_x=0.25, original_shape=(80, 40))
    model = Picks(micrograph="m", x=[0.0, 3.0, 2.25], y=[0.0, 3.0, 7.75], diameter_px=[8.0, 8.0, 8.0])
    original = prep.to_original(model)
    np.testing.assert_array_equal(original.x, [1.5, 13.5, 10.5])  # (x + 0.5) / 0.25 - 0.5
    np.testing.assert_array_equal(original.y, [3.5, 27.5, 65.5])  # (y + 0.5) / 0.125 - 0.5
    np.testing.assert_array_equal(original.diameter_px, [32.0, 32.0, 32.0])
    back = prep.to_model(original)
    np.testing.assert_array_equal(back.x, model.x)
    np.testing.assert_array_equal(back.y, model.y)
    np.testing.assert_array_equal(back.diameter_px, model.diameter_px)


def test_image_centre_maps_to_image_centre():
    # The centre of the image is the same point at every scale: ((W - 1) / 2 in both grids).
    config = ModelConfig(particle_diameter_px=16)
    prep = prepare(np.zeros((90, 120), np.float32), pixel_size_A=1.0, diameter_A=48.0, model_config=config)
    assert prep.image.shape == (30, 40)
    centre = Picks(micrograph="m", x=[(40 - 1) / 2], y=[(30 - 1) / 2])
    mapped = prep.to_original(centre)
    assert mapped.x[0] == (120 - 1) / 2 and mapped.y[0] == (90 - 1) / 2


def test_a_constant_micrograph_prepares_to_zeros_not_to_amplified_rounding():
    # Resampling a constant leaves float rounding of ~1e-7 of its value; scaled to unit variance that
    # became CPU-dependent noise the network picked in.
    config = ModelConfig(particle_diameter_px=24.0)
    for value in (3.0, -250.0, 1e4):
        prepared = prepare(np.full((200, 260), value, np.float32), 2.0, 72.0, config)
        assert prepared.image.shape == (133, 173) and not prepared.image.any()


def test_small_but_real_variation_is_scaled_up_not_discarded():
    rng = np.random.default_rng(0)
    for offset, sigma in ((0.0, 1e-4), (100.0, 0.05)):
        image = (offset + sigma * rng.normal(size=(128, 128))).astype(np.float32)
        prepared = prepare(image, 1.0, 24.0, ModelConfig(particle_diameter_px=24.0))
        assert 0.5 < float(prepared.image.std()) < 2.0


def test_input_lowpass_matches_a_reference_gaussian_and_is_off_by_default():
    from scipy import ndimage

    from hydrapick.preprocess import gaussian_blur, normalise

    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 52)).astype(np.float32)
    blurred = gaussian_blur(torch.from_numpy(image), 1.5).numpy()  # the edges mirrored, 3 sigma wide
    np.testing.assert_allclose(blurred, ndimage.gaussian_filter(image, 1.5, mode="mirror", truncate=3.0),
                               atol=1e-5)

    config = ModelConfig.light(particle_diameter_px=32.0)
    plain = prepare(image, 1.0, 32.0, config).image
    # Off: the image at the model's scale (here already) is only normalised.
    np.testing.assert_array_equal(plain.numpy(), normalise(torch.from_numpy(image)).numpy())
    blurring = ModelConfig.light(particle_diameter_px=32.0, input_lowpass_px=1.0)
    smooth = prepare(image, 1.0, 32.0, blurring).image
    assert config.input_lowpass_px == 0.0
    # White noise: the low-pass removes most of its high-frequency energy, so neighbours correlate.
    def neighbour_correlation(a):
        a = a.numpy()
        return np.corrcoef(a[:, 1:].ravel(), a[:, :-1].ravel())[0, 1]
    assert abs(neighbour_correlation(plain)) < 0.2
    assert neighbour_correlation(smooth) > 0.6


def test_input_lowpass_range_is_checked():
    import pytest

    with pytest.raises(ValueError, match="input_lowpass_px"):
        ModelConfig(input_lowpass_px=-1.0)
    with pytest.raises(ValueError, match="input_lowpass_px"):
        ModelConfig(particle_diameter_px=48.0, input_lowpass_px=20.0)


def test_tail_quantiles_are_torch_quantile_to_the_bit():
    # normalise's clip bounds come from the tails alone; any other rounding than torch.quantile's would
    # move picks (and every model trained on prepared images) for no gain.
    rng = torch.Generator().manual_seed(3)
    for n in (1, 2, 7, 1000, 1001, 36864, 1_000_000):
        values = torch.randn(n, generator=rng) * 4 + 2
        for q in (0.0, 0.001, 0.01, 0.25, 0.5):
            expected = torch.quantile(values, torch.tensor([q, 1 - q])).tolist()
            assert list(tail_quantiles(values, q)) == expected, (n, q)
