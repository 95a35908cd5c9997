import math

import pytest
import torch
from torch import nn

from hydrapick.config import ModelConfig
from hydrapick.model import GENERIC_HEAD, Head, HydraPicker, head_strides, prior_bias
from hydrapick.model.anchors import anchor_centres, build_targets, detect, grid_shape
from hydrapick.model.dropout import SampleDropout, per_sample_dropout
from hydrapick.model.losses import detection_loss

TINY = ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(8, 8, 8, 8))
TINY_STRIDED = ModelConfig(stem_stride=2, body_channels=8, body_blocks=1, group_norm_groups=4,
                           head_channels=(8, 8, 8, 8))
TINY_STEM4 = ModelConfig(stem_stride=4, body_channels=8, body_blocks=1, group_norm_groups=4,
                         head_channels=(8, 16))
TINY_STEM4_K5 = ModelConfig(stem_stride=4, stem_kernel=5, body_channels=8, body_blocks=1, group_norm_groups=4,
                            head_channels=(8, 16))
CONFIGS = [TINY, TINY_STRIDED, TINY_STEM4, TINY_STEM4_K5]
CONFIG_IDS = ["stem1", "stem2", "stem4", "stem4-kernel5"]




@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("h,w", [(368, 368), (777, 1000), (15, 17), (1, 1), (64, 31)])
def test_output_shape_matches_grid_shape(config, h, w):
    model = HydraPicker(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    ha, wa = grid_shape(h, w, config)
    assert out.shape == (2, ha * wa, 3)
    assert (ha, wa) == (math.ceil(h / 16), math.ceil(w / 16))


def test_head_strides_keep_total_stride():
    assert head_strides(ModelConfig()) == (2, 2, 2, 2)
    assert head_strides(ModelConfig.light()) == (1, 2, 2, 2)
    assert head_strides(ModelConfig(stem_stride=4, head_channels=(64, 64, 64))) == (1, 2, 2)


def _linearised(model: HydraPicker) -> HydraPicker:
    """Replace GroupNorm/ReLU/Dropout by identities: the receptive field is then exactly visible."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.GroupNorm | nn.ReLU | nn.Dropout):
                setattr(module, name, nn.Identity())
    return model


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_anchor_centres_sit_at_the_centre_of_each_receptive_field(config):
    torch.manual_seed(0)
    model = _linearised(HydraPicker(config)).double()
    for block in model.body.blocks:  # the zero-initialised residual scale was a GroupNorm weight
        assert isinstance(block.norm2, nn.Identity)
    h, w = 161, 190
    x = torch.zeros(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    out = model(x)
    ha, wa = grid_shape(h, w, config)
    anchors = anchor_centres(h, w, config)
    for r, c in [(4, 5), (5, 6), (4, 4)]:
        a = r * wa + c
        (grad,) = torch.autograd.grad(out[0, a, 2], x, retain_graph=True)
        ys, xs = torch.nonzero(grad[0, 0].abs() > 0, as_tuple=True)
        # Receptive field fully inside the image: its centre is the anchor.
        assert 0 < int(xs.min()) and int(xs.max()) < w - 1 and 0 < int(ys.min()) and int(ys.max()) < h - 1
        centre = ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2)
        assert (float(centre[0]), float(centre[1])) == tuple(anchors[a].tolist())


def _pixels_read_by_the_stem(config: ModelConfig) -> torch.Tensor:
    """Which input pixels reach the body's output at all (a nonzero gradient), on a 32 x 32 input."""
    model = _linearised(HydraPicker(config)).double()
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        model.body.stem[0].weight.fill_(1.0)
    (grad,) = torch.autograd.grad(model.body.stem[0](x).sum(), x)
    return grad[0, 0] != 0


def test_a_5x5_stem_at_stride_4_reads_every_pixel_where_3x3_skips_rows_and_columns():
    read3 = _pixels_read_by_the_stem(TINY_STEM4)
    assert not read3[2::4].any() and not read3[:, 2::4].any()  # rows/columns 2 mod 4 are never read
    assert float(read3[4:28, 4:28].double().mean()) == 9 / 16  # away from the edges
    assert _pixels_read_by_the_stem(TINY_STEM4_K5)[:31, :31].all()  # the last row/column lies past 4j+2


def test_stem_kernel_must_be_odd_and_defaults_to_3_for_older_checkpoints():
    assert ModelConfig().stem_kernel == 3
    for bad in (0, 4):
        with pytest.raises(ValueError, match="stem_kernel must be odd"):
            ModelConfig(stem_kernel=bad)


def test_prior_bias_initialisation():
    model = HydraPicker(ModelConfig.light(prior_probability=0.01)).eval()
    head = model.heads[GENERIC_HEAD]
    assert head.output.bias[2].item() == pytest.approx(-math.log(99))
    assert prior_bias(0.5) == 0
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 64))
    # Every anchor starts near the prior (logit within 0.25 of -log 99) and near its anchor.
    assert (out[..., 2] + math.log(99)).abs().max() < 0.25
    assert out[..., :2].abs().max() < 0.25


def test_heads_add_copy_freeze_and_select():
    torch.manual_seed(0)
    model = HydraPicker(TINY, ["a", "b"]).eval()
    assert model.head_names == ["a", "b"] and set(model.heads) == {GENERIC_HEAD, "a", "b"}
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        outs = {name: model(x, head=name) for name in model.heads}
    assert not torch.allclose(outs["a"], outs["b"])  # fresh heads differ
    new = model.add_head("c", init_from="a")
    assert model.head_names == ["a", "b", "c"] and isinstance(new, Head)
    with torch.no_grad():
        assert torch.equal(model(x, head="c"), outs["a"])
        # features + head_forward is forward
        assert torch.equal(model.head_forward(model.features(x), "b"), outs["b"])
    with pytest.raises(ValueError, match="already exists"):
        model.add_head("a")
    with pytest.raises(ValueError, match="not allowed"):
        model.add_head("bad.name")
    with pytest.raises(KeyError, match="no head named 'zzz'"):
        model(x, head="zzz")
    model.freeze_body()
    model.freeze_head("a")
    assert not any(p.requires_grad for p in model.body.parameters())
    assert not any(p.requires_grad for p in model.heads["a"].parameters())
    assert all(p.requires_grad for p in model.heads["b"].parameters())
    copied = model.add_head("d", init_from="a")  # a copy of a frozen head is trainable
    assert all(p.requires_grad for p in copied.parameters())
    model.freeze_body(False)
    assert all(p.requires_grad for p in model.body.parameters())


def test_dropout_masks_follow_the_sample_not_the_batch():
    # Inside per_sample_dropout, sample k's masks come from seeds[k] alone: a batch split over two
    # processes gets the masks one process gives the whole batch. Outside it, dropout is nn.Dropout's.
    model = HydraPicker(ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(8, 8),
                                    anchor_stride=4, head_dropout=0.5)).train()
    x = torch.randn(4, 1, 32, 32)
    seeds = [11, 12, 13, 14]
    with per_sample_dropout(model, seeds):
        whole = model(x)
        assert not torch.allclose(model(x), whole)  # a second pass continues the samples' streams
    with per_sample_dropout(model, seeds):
        assert torch.equal(model(x), whole)  # the same seeds, the same masks
    parts = []
    for lo, hi in [(0, 1), (1, 4)]:
        with per_sample_dropout(model, seeds[lo:hi]):
            parts.append(model(x[lo:hi]))
    assert torch.allclose(torch.cat(parts), whole, atol=1e-6)
    with per_sample_dropout(model, [21, 12, 13, 14]):
        other = model(x)
    assert not torch.allclose(other[0], whole[0]) and torch.allclose(other[1:], whole[1:], atol=1e-6)
    with pytest.raises(ValueError, match="dropout streams"), per_sample_dropout(model, seeds[:2]):
        model(x)
    layer = model.heads[GENERIC_HEAD].blocks[3]
    assert isinstance(layer, SampleDropout) and layer.streams is None
    torch.manual_seed(0)
    plain = layer(torch.ones(1000))
    torch.manual_seed(0)
    assert torch.equal(plain, nn.functional.dropout(torch.ones(1000), 0.5))  # nn.Dropout's draws
    assert torch.equal(model.eval()(x), model(x))


def test_input_shape_checked():
    model = HydraPicker(TINY)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(1, 48, 48))


def test_gradients_reach_body_and_selected_head_only():
    torch.manual_seed(0)
    model = HydraPicker(TINY, ["a", "b"])
    # Residual branches start switched off (zero GroupNorm scale), which blocks their weights' gradients
    # at step 0 only; switch them on to see every path.
    for block in model.body.blocks:
        nn.init.ones_(block.norm2.weight)
    out = model(torch.randn(2, 1, 48, 48), head="a")
    out.square().sum().backward()
    for name, p in model.body.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in model.heads["a"].parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for head in (GENERIC_HEAD, "b"):
        assert all(p.grad is None for p in model.heads[head].parameters())


def test_tiny_model_overfits_one_crop_of_blobs():
    """Loss falls and detect() finds the particles again: the pieces fit together end to end."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    config = ModelConfig(stem_stride=2, body_channels=8, body_blocks=1, group_norm_groups=4,
                         head_channels=(8, 16, 16, 16), head_dropout=0.0, particle_diameter_px=24.0)
    h = w = 128
    truth = torch.tensor([[20.0, 25.0], [70.0, 30.0], [105.0, 60.0], [40.0, 90.0], [90.0, 105.0]])
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    image = torch.randn((h, w), generator=g)
    for x0, y0 in truth.tolist():
        image += 2.5 * torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 5.0**2))
    x = image[None, None]
    model = HydraPicker(config)
    anchors = anchor_centres(h, w, config)
    labels, offsets, positive = build_targets(anchors, [truth], config)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        parts = detection_loss(model(x), labels, offsets, positive)
        optimiser.zero_grad()
        parts["loss"].backward()
        optimiser.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        centres, scores = detect(model(x)[0], anchors, config, min_distance_px=12.0, score_floor=0.5)
    assert len(centres) == len(truth)
    error = torch.cdist(truth, centres).min(dim=1).values
    assert error.max() < 3.0, error


def test_mix_styles_swaps_feature_statistics_and_keeps_content():
    from hydrapick.model.body import mix_styles

    torch.manual_seed(0)
    content = torch.randn(2, 3, 16, 16)
    content = (content - content.mean(dim=(2, 3), keepdim=True)) / content.std(dim=(2, 3), keepdim=True,
                                                                                 unbiased=False)
    styles = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])[:, :, None, None]
    x = content * 2.0 + styles
    torch.manual_seed(1)
    mixed = mix_styles(x, alpha=0.1)
    mu = mixed.mean(dim=(2, 3))
    # Each sample's channel means lie between the two samples' (a convex mix), and the normalised
    # content is untouched.
    low, high = torch.minimum(styles[0], styles[1]).flatten(), torch.maximum(styles[0], styles[1]).flatten()
    assert torch.all(mu >= low - 1e-4) and torch.all(mu <= high + 1e-4)
    normalised = (mixed - mixed.mean(dim=(2, 3), keepdim=True)) / mixed.std(dim=(2, 3), keepdim=True,
                                                                            unbiased=False)
    assert torch.allclose(normalised, content, atol=1e-3)
    assert torch.equal(mix_styles(x[:1]), x[:1])  # nothing to mix with


def test_mix_style_acts_only_in_training_and_only_when_set():
    torch.manual_seed(0)
    model = HydraPicker(TINY_STEM4_K5)
    x = torch.randn(4, 1, 64, 64)
    model.eval()
    before = model(x)
    model.body.mix_style = 1.0
    assert torch.equal(model(x), before)  # never at picking
    model.train()
    torch.manual_seed(2)
    mixed = model.body(x)
    model.body.mix_style = 0.0
    torch.manual_seed(2)
    assert not torch.allclose(mixed, model.body(x))
