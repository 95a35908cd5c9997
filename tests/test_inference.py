"""Inference over whole and tiled micrographs: tile layout, receptive field, tiled equals whole, and
test-time augmentation over the symmetries of the square."""

import pytest
import torch

from hydrapick.config import ModelConfig
from hydrapick.model import HydraPicker
from hydrapick.model.anchors import anchor_centres, decode, grid_shape
from hydrapick.picking.inference import (
    SYMMETRIES,
    auto_tile_px,
    infer,
    infer_symmetrised,
    receptive_field_px,
    tile_margin_px,
    tile_spans,
    transform_image,
    untransform_grid,
    widest_activation_per_px,
)


def _random_model(seed: int) -> HydraPicker:
    torch.manual_seed(seed)
    cfg = ModelConfig(body_channels=8, body_blocks=1, head_channels=(8, 8, 16, 16), group_norm_groups=4)
    model = HydraPicker(cfg).eval()
    with torch.no_grad():  # make every layer matter (the residual branch starts at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_tile_spans_partition_and_align():
    spans = tile_spans(1000, 256, 64)
    assert spans[0] == (0, 320, 0, 256)
    assert [s[2] for s in spans] == [0, 256, 512, 768]
    assert spans[-1] == (704, 1000, 768, 1000)
    owned = [x for s in spans for x in range(s[2], s[3])]
    assert owned == list(range(1000))


def test_receptive_field_of_the_thesis_network():
    # 14 body convs at stride 1 (+2 each), head convs at strides 1, 2, 4, 8 (+2, +4, +8, +16), output conv
    # at stride 16 (+32): 1 + 28 + 30 + 32 = 91.
    assert receptive_field_px(HydraPicker(ModelConfig.thesis())) == 91


def test_tiled_inference_equals_whole_micrograph():
    model = _random_model(3)
    cfg = model.config
    margin = tile_margin_px(model)
    assert margin % cfg.anchor_stride == 0 and 2 * margin >= receptive_field_px(model)
    image = torch.randn(1, 1, 150, 200)
    whole = infer(model, image)
    tiled = infer(model, image, max_tile_px=2 * margin + 96)  # 2 x 3 tiles, ragged last ones
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-4), float((tiled - whole).abs().max())


@pytest.mark.parametrize("k, mirror", SYMMETRIES)
def test_untransform_grid_maps_offsets_and_scores_back(k, mirror):
    # A grid made in a transformed frame, whose offsets all point at one particle and whose logits are a
    # known map of the original grid, must come back as that map with offsets to the original particle.
    cfg = ModelConfig.light()
    stride = cfg.anchor_stride
    height, width = 3 * stride + 1, 5 * stride + 1
    image = torch.zeros(height, width)
    particle = (37, 21)  # (x, y)
    image[particle[1], particle[0]] = 1.0
    moved = transform_image(image, k, mirror)
    y_t, x_t = divmod(int(moved.argmax()), moved.shape[1])
    ha, wa = grid_shape(height, width, cfg)
    logits = torch.arange(ha * wa, dtype=torch.float32).reshape(ha, wa)
    anchors_t = anchor_centres(moved.shape[0], moved.shape[1], cfg)
    offsets_t = (torch.tensor([x_t, y_t], dtype=torch.float32) - anchors_t) / stride
    grid_t = torch.cat([offsets_t.reshape(*transform_image(logits, k, mirror).shape, 2),
                        transform_image(logits, k, mirror)[..., None]], dim=-1)
    back = untransform_grid(grid_t[None], k, mirror)[0]
    assert torch.equal(back[..., 2], logits)
    centres = decode(back[..., :2].reshape(-1, 2), anchor_centres(height, width, cfg), stride)
    assert torch.allclose(centres, torch.tensor(particle, dtype=torch.float32).expand_as(centres), atol=1e-4)


def test_symmetrised_outputs_are_invariant_to_the_symmetries():
    # Averaged over the group, the outputs of a turned or mirrored micrograph, mapped back, are those of
    # the micrograph itself (sides of 16 m + 1 pixels, so no padding differs between the copies).
    model = _random_model(4)
    stride = model.config.anchor_stride
    image = torch.randn(1, 1, 6 * stride + 1, 8 * stride + 1)
    ha, wa = grid_shape(image.shape[-2], image.shape[-1], model.config)
    reference = infer_symmetrised(model, image).reshape(1, ha, wa, 3)
    assert not torch.allclose(reference, infer(model, image).reshape(1, ha, wa, 3), atol=1e-3)
    for k, mirror in SYMMETRIES[1:]:
        moved = transform_image(image, k, mirror)
        gh, gw = grid_shape(moved.shape[-2], moved.shape[-1], model.config)
        out = infer_symmetrised(model, moved).reshape(1, gh, gw, 3)
        assert torch.allclose(untransform_grid(out, k, mirror), reference, atol=1e-4), (k, mirror)


def test_symmetrised_inference_pads_any_size_and_keeps_the_grid():
    model = _random_model(5)
    image = torch.randn(2, 1, 70, 45)
    out = infer_symmetrised(model, image)
    assert out.shape == infer(model, image).shape


def test_widest_activation_and_auto_tile_size():
    # Thesis network: the 64-channel body at full resolution is the widest activation, 64 values per
    # input pixel, so a 1 GiB budget gives sqrt(2**30 / (4 * 64)) = 2048 px, the former fixed limit.
    thesis = HydraPicker(ModelConfig()).eval()
    assert widest_activation_per_px(thesis) == 64.0
    assert auto_tile_px(thesis, "generic", 2**30) == 2048
    # Light network with a stride-4 stem (the bundled model's shape): 128 channels at 1/4 resolution.
    light = HydraPicker(ModelConfig.light(stem_stride=4)).eval()
    assert widest_activation_per_px(light) == 128 / 16
    assert auto_tile_px(light, "generic", 2**30) == 5792  # sqrt(2**30 / 32) = 5792.6, in strides of 16


def test_reuse_freed_memory_nests_and_gives_results_unchanged():
    from hydrapick.device import reuse_freed_memory

    model = _random_model(3)
    image = torch.randn(1, 1, 96, 128)
    whole = infer(model, image)
    with reuse_freed_memory(), reuse_freed_memory():
        again = infer(model, image)
    assert torch.equal(whole, again)
