import math

import pytest
import torch
from torch import nn

from hydrapick.config import ModelConfig
from hydrapick.model import GENERIC_HEAD, HydraPicker
from hydrapick.model.losses import bias_loss, detection_loss, focal_loss, localisation_loss
from hydrapick.training.distributed import DistContext, loss_divisor

TINY = ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(8, 8, 8, 8))


def test_focal_loss_against_direct_formula():
    logits = torch.tensor([2.0, -1.0, 0.0, -3.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    alpha, gamma = 0.25, 2.0
    expected = 0.0
    for z, t in zip(logits.tolist(), targets.tolist(), strict=True):
        p = 1 / (1 + math.exp(-z))
        if t == 1:
            expected += -alpha * (1 - p) ** gamma * math.log(p)
        else:
            expected += -(1 - alpha) * p ** gamma * math.log(1 - p)
    assert focal_loss(logits, targets, alpha, gamma).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_special_cases():
    logits = torch.randn(50)
    targets = (torch.rand(50) > 0.5).float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert focal_loss(logits, targets, alpha=-1, gamma=0).item() == pytest.approx(bce.item(), rel=1e-6)
    # Confident, correct predictions cost almost nothing; extreme logits stay finite.
    assert focal_loss(torch.tensor([30.0, -30.0]), torch.tensor([1.0, 0.0])).item() < 1e-20
    assert math.isfinite(focal_loss(torch.tensor([-100.0]), torch.tensor([1.0])).item())


def test_localisation_loss_only_on_positives():
    pred = torch.tensor([[[0.5, 0.0], [9.0, 9.0], [0.0, -0.25]]])
    target = torch.tensor([[[0.0, 0.5], [0.0, 0.0], [0.0, 0.0]]])
    positive = torch.tensor([[True, False, True]])
    assert localisation_loss(pred, target, positive).item() == pytest.approx(0.5 + 0.5 + 0.25)
    with pytest.raises(ValueError, match="shape"):
        localisation_loss(pred, target[:, :2], positive)


def test_detection_loss_normalised_by_positives():
    outputs = torch.zeros((2, 4, 3))
    labels = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]])
    positive = labels.bool()
    offsets = torch.zeros((2, 4, 2))
    offsets[0, 0] = torch.tensor([0.5, -0.5])
    parts = detection_loss(outputs, labels, offsets, positive, cls_weight=2.0)
    assert parts["num_pos"].item() == 3
    # logit 0: p = 0.5 -> each positive 0.25 * 0.25 * log 2, each negative 0.75 * 0.25 * log 2.
    cls = (3 * 0.25 + 5 * 0.75) * 0.25 * math.log(2) / 3
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert parts["loc"].item() == pytest.approx(1.0 / 3)
    assert parts["loss"].item() == pytest.approx(1.0 / 3 + 2 * cls, rel=1e-6)
    # No particle at all: divided by 1, not 0.
    empty = detection_loss(outputs, torch.zeros((2, 4)), offsets, torch.zeros((2, 4), dtype=torch.bool))
    assert empty["num_pos"].item() == 0 and math.isfinite(empty["loss"].item())
    assert empty["loc"].item() == 0


def test_halves_divided_by_the_whole_batchs_positives_average_to_the_whole_batchs_gradient():
    # What two DDP ranks compute (`loss_divisor`: each divides by half the positives of both), averaged
    # as DDP averages gradients, is the gradient of one process's loss over the whole batch.
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn((4, 6, 3), generator=gen, requires_grad=True)
    labels = (torch.rand((4, 6), generator=gen) < 0.3).float()
    labels[0] = 0  # a crop without particles: its own max(1, 0) would be the wrong divisor
    offsets = torch.randn((4, 6, 2), generator=gen)
    whole = detection_loss(outputs, labels, offsets, labels.bool(), cls_weight=2.0)
    assert torch.equal(whole["loss"], detection_loss(outputs, labels, offsets, labels.bool(), cls_weight=2.0,
                                                     divisor=loss_divisor(labels.bool().sum(),
                                                                          DistContext()))["loss"])
    (expected,) = torch.autograd.grad(whole["loss"], outputs)
    total = labels.sum()
    halves = [detection_loss(outputs[i:i + 2], labels[i:i + 2], offsets[i:i + 2], labels[i:i + 2].bool(),
                             cls_weight=2.0, divisor=total / 2)["loss"] for i in (0, 2)]
    (averaged,) = torch.autograd.grad((halves[0] + halves[1]) / 2, outputs)
    assert torch.allclose(averaged, expected, rtol=1e-6, atol=1e-7)
    assert (halves[0] + halves[1]).item() / 2 == pytest.approx(whole["loss"].item(), rel=1e-6)


def test_bias_loss_hand_computed():
    model = HydraPicker(TINY, ["a", "b"])
    for name in ("a", "b"):
        model.heads[name].load_state_dict(model.heads[GENERIC_HEAD].state_dict())
    assert bias_loss(model).item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.heads["a"].output.bias.add_(torch.tensor([3.0, 0.0, 4.0]))  # ||.|| = 5
        model.heads["b"].blocks[0].weight.view(-1)[0] += 1.0  # ||.|| = 1
    assert bias_loss(model).item() == pytest.approx((5 + 1) / 2, rel=1e-5)
    assert bias_loss(model, heads=["a"]).item() == pytest.approx(5, rel=1e-5)
    assert bias_loss(HydraPicker(TINY)).item() == 0
    with pytest.raises(ValueError, match="generic"):
        bias_loss(model, heads=[GENERIC_HEAD])


def test_bias_loss_gradient_finite_for_identical_heads():
    model = HydraPicker(TINY)
    model.add_head("a")  # copy of the generic head
    bias_loss(model).backward()
    for p in model.heads[GENERIC_HEAD].parameters():
        assert torch.isfinite(p.grad).all()


def test_generic_head_learns_only_through_bias_loss():
    torch.manual_seed(0)
    model = HydraPicker(TINY, ["a", "b"])
    for block in model.body.blocks:
        nn.init.ones_(block.norm2.weight)
    x = torch.randn(2, 1, 48, 48)
    labels = torch.zeros((2, 9))
    labels[:, 4] = 1
    out = model(x, head="a")
    detection_loss(out, labels, torch.zeros((2, 9, 2)), labels.bool())["loss"].backward()
    assert all(p.grad is None for p in model.heads[GENERIC_HEAD].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters())
    assert all(p.grad is not None for p in model.heads["a"].parameters())
    model.zero_grad(set_to_none=True)
    bias_loss(model).backward()
    # d/dW_G of (1/N) sum_k ||W_Sk - W_G|| = -(1/N) sum_k (W_Sk - W_G) / ||W_Sk - W_G||.
    vec = {n: nn.utils.parameters_to_vector(model.heads[n].parameters()).detach() for n in model.heads}
    expected = -sum((vec[k] - vec[GENERIC_HEAD]) / (vec[k] - vec[GENERIC_HEAD]).norm() for k in "ab") / 2
    got = nn.utils.parameters_to_vector(p.grad for p in model.heads[GENERIC_HEAD].parameters())
    assert torch.allclose(got, expected, atol=1e-7)
    assert all(p.grad is None for p in model.body.parameters())
