"""Inference over whole and tiled micrographs: tile layout, receptive field, tiled equals whole."""

import torch

from hydrapick.config import ModelConfig
from hydrapick.inference import infer, receptive_field_px, tile_margin_px, tile_spans
from hydrapick.model import HydraPicker


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
    torch.manual_seed(3)
    cfg = ModelConfig(body_channels=8, body_blocks=1, head_channels=(8, 8, 16, 16), group_norm_groups=4)
    model = HydraPicker(cfg).eval()
    with torch.no_grad():  # make every layer matter (the residual branch starts at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    margin = tile_margin_px(model)
    assert margin % cfg.anchor_stride == 0 and 2 * margin >= receptive_field_px(model)
    image = torch.randn(1, 1, 150, 200)
    whole = infer(model, image)
    tiled = infer(model, image, max_tile_px=2 * margin + 96)  # 2 x 3 tiles, ragged last ones
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-4), float((tiled - whole).abs().max())
