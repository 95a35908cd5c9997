"""Training losses of HydraPicker (thesis eq. 3.1-3.4).

``loss = loc + cls_weight * cls`` per batch (`detection_loss`), plus ``bias_weight * bias_loss(model)``
added by the training loop. Deviations from the thesis, and why, are in docs/method.md:

- the focal loss drops eq. 3.3's factor 1/2 (a constant absorbed by ``cls_weight``; without it the loss
  and ``alpha`` mean what they mean in RetinaNet, whose defaults we use);
- the localisation loss is eq. 3.2 measured in units of ``anchor_stride`` rather than pixels (a constant
  factor 1/stride) so it is on the same scale as the classification loss;
- both are divided by ``max(1, number of positive anchors)`` so a crop with few particles does not
  blow up the loss (on several processes, of the whole global batch: ``divisor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .anchors import build_targets
from .hydra import GENERIC_HEAD


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), summed over all elements.

    ``-alpha_t (1 - p_t)^gamma log(p_t)`` where ``p_t`` is the predicted probability of the true class and
    ``alpha_t = alpha`` for particles (target 1), ``1 - alpha`` for background (target 0).

    Parameters
    ----------
    logits, targets : tensors of the same shape; targets in [0, 1]
    alpha : float in [0, 1], or negative to switch the class weighting off
    gamma : float >= 0; 0 gives (weighted) binary cross-entropy

    Returns
    -------
    0-d tensor: the sum (not mean) over all elements.
    """
    targets = targets.to(logits.dtype)
    # -log(p_t) computed from the logits: stable for confident predictions.
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma if gamma else ce
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def localisation_loss(pred: torch.Tensor, target: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """L1 distance between predicted and target offsets, summed over positive anchors and both axes.

    Parameters
    ----------
    pred, target : (N, A, 2) offsets in units of ``anchor_stride``
    positive : (N, A) bool

    Returns
    -------
    0-d tensor (0 with a gradient path when there are no positives).
    """
    if pred.shape != target.shape or pred.shape[:-1] != positive.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
                         f"positive {tuple(positive.shape)}")
    return (pred[positive] - target[positive].to(pred.dtype)).abs().sum()


def bias_loss(model: nn.Module, heads: Sequence[str] | None = None) -> torch.Tensor:
    """Head-similarity loss, thesis eq. 3.4: ``(1/N) sum_k ||W_Sk - W_G||_2``.

    ``W`` is the vector of all parameters of a head; ``N`` the number of dataset heads compared with the
    generic head (all dataset heads of ``model``, or those named in ``heads``). This is the only term
    through which the generic head learns during multi-head training.

    Returns 0 (a 0-d tensor) when there are no dataset heads.
    """
    names = list(model.head_names if heads is None else heads)
    generic = list(model.heads[GENERIC_HEAD].parameters())
    if not names:
        return torch.zeros((), device=generic[0].device, dtype=generic[0].dtype)
    total = generic[0].new_zeros(())
    for name in names:
        if name == GENERIC_HEAD:
            raise ValueError("bias_loss compares dataset heads with the generic head; "
                             "'generic' cannot be one of them")
        params = list(model.heads[name].parameters())
        sq = sum(((w - g) ** 2).sum() for w, g in zip(params, generic, strict=True))
        # sqrt has an infinite derivative at 0 and heads are initialised as copies of the generic head:
        # the tiny epsilon keeps the first step finite (its effect on the value is < 1e-6).
        total = total + torch.sqrt(sq + 1e-12)
    return total / len(names)


def detection_loss(outputs: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor,
                   positive: torch.Tensor, *, cls_weight: float = 1.0, alpha: float = 0.25,
                   gamma: float = 2.0, ignore: torch.Tensor | None = None,
                   divisor: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Classification + localisation loss of one batch, normalised by ``max(1, num_pos)``.

    Parameters
    ----------
    outputs : (N, A, 3) raw model outputs [dx, dy, logit]
    labels : (N, A) float 0/1, offsets : (N, A, 2), positive : (N, A) bool — from
        `hydrapick.anchors.build_targets`

    Returns
    -------
    dict with 0-d tensors ``loss`` (= loc + cls_weight * cls), ``cls``, ``loc`` and ``num_pos``
    (long; the number of positive anchors in the batch).

    ``ignore`` (N, A) bool marks anchors whose label is unknown (label-free adaptation): they add no
    classification loss unless they are positive. ``divisor`` replaces ``max(1, num_pos)``
    (`hydrapick.training.distributed.loss_divisor`: one batch shared by several processes).
    """
    if outputs.dim() != 3 or outputs.shape[-1] != 3 or outputs.shape[:2] != labels.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} do not fit labels {tuple(labels.shape)}")
    num_pos = positive.sum()
    norm = (num_pos.clamp(min=1) if divisor is None else divisor).to(outputs.dtype)
    if ignore is None:
        cls = focal_loss(outputs[..., 2], labels, alpha=alpha, gamma=gamma) / norm
    else:
        scored = ~ignore | positive
        cls = focal_loss(outputs[..., 2][scored], labels[scored], alpha=alpha, gamma=gamma) / norm
    loc = localisation_loss(outputs[..., :2], offsets, positive) / norm
    return {"loss": loc + cls_weight * cls, "cls": cls, "loc": loc, "num_pos": num_pos}


def count_penalty(logits: torch.Tensor, prior: float) -> torch.Tensor:
    """How far the number of particles ``logits`` predict is from ``prior`` x their number (0-d tensor).

    The positive-unlabelled objective of Topaz (GE-binomial; Bepler et al., Nat. Methods 2019): among
    anchors with no label, the count of particles the head predicts, a sum of Bernoulli variables
    approximated by a normal distribution (mean sum p, variance sum p(1-p)), should follow the binomial
    count that a particle share ``prior`` implies (normal approximation, mean N prior, variance
    N prior (1 - prior)). The penalty is the Kullback-Leibler divergence of the first from the second.
    """
    p = torch.sigmoid(logits.float())
    n = p.numel()
    if n == 0:
        return logits.sum() * 0.0
    mean_q, var_q = p.sum(), (p * (1 - p)).sum() + 1e-6
    mean_b, var_b = n * prior, n * prior * (1 - prior)
    return 0.5 * (torch.log(var_b / var_q) + (var_q + (mean_q - mean_b) ** 2) / var_b - 1)


def non_negative_pu_loss(logits: torch.Tensor, positive: torch.Tensor, unlabelled: torch.Tensor,
                         share: float, *, alpha: float = 0.25, gamma: float = 2.0,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification loss when the positives are only some of the particles (non-negative PU risk).

    The focal loss of a fully labelled batch is ``(sum over particles of l(g, 1) + sum over background
    of l(g, 0)) / number of particles``. With sparse labels the background is unknown; it is estimated
    from the unlabelled anchors (Kiryo et al., NeurIPS 2017): the unlabelled anchors hold ``share`` x
    their number of particle anchors, which look like the labelled ones (labels are a random subset), so

    - background term = sum over unlabelled of l(g, 0) - (unlabelled particle anchors) x mean over
      labelled of l(g, 0);
    - particle term = (labelled + unlabelled particle anchors) x mean over labelled of l(g, 1);

    both divided by the estimated number of particle anchors. The background term estimates a sum of
    non-negative losses, so when it comes out negative the model is overfitting the labelled particles;
    then (nnPU) the reported loss clips it at 0 and the gradient step instead ascends it (``objective``
    = minus the background term), which pushes the unlabelled scores back down.

    Parameters
    ----------
    logits : (N, A) classification logits
    positive, unlabelled : (N, A) bool; labelled particle anchors, and anchors whose class is unknown
    share : float in [0, 1)
        Fraction of the unlabelled anchors that are particle anchors (the class prior of the unlabelled
        set); 0 makes this the ordinary focal loss with every unlabelled anchor background.
    alpha, gamma : focal loss parameters (`focal_loss`)

    Returns
    -------
    objective, value : 0-d tensors
        The quantity to minimise this step, and the (non-negative) risk estimate to report.
    """
    lp, lu = logits[positive].float(), logits[unlabelled].float()
    if lp.numel() == 0:  # no labelled particle to estimate the particle losses from: no signal
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    n_p, n_u = lp.numel(), lu.numel()
    ones, zeros = torch.ones_like(lp), torch.zeros_like(lp)
    as_particle = focal_loss(lp, ones, alpha, gamma) / n_p        # mean l(g, 1) over labelled
    labelled_as_bg = focal_loss(lp, zeros, alpha, gamma) / n_p    # mean l(g, 0) over labelled
    unlabelled_particles = share * n_u
    particles = n_p + unlabelled_particles
    background = focal_loss(lu, torch.zeros_like(lu), alpha, gamma) - unlabelled_particles * labelled_as_bg
    norm = max(1.0, particles)
    particle_term = particles * as_particle / norm
    background = background / norm
    if float(background.detach()) < 0:
        return -background, particle_term.detach()
    value = particle_term + background
    return value, value.detach()


def batch_loss(outputs: torch.Tensor, centres: Sequence[torch.Tensor], anchors: torch.Tensor,
               model_config: ModelConfig, *, cls_weight: float = 1.0, alpha: float = 0.25,
               gamma: float = 2.0, ignore: torch.Tensor | None = None,
               divisor: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """`detection_loss` of raw ``outputs`` (N, A, 3) against particle ``centres`` (targets built here).

    ``divisor``, if given, turns the batch's number of positive anchors into the loss's divisor.
    """
    labels, offsets, positive = build_targets(anchors, list(centres), model_config)
    return detection_loss(outputs.float(), labels, offsets, positive, cls_weight=cls_weight, alpha=alpha,
                          gamma=gamma, ignore=ignore,
                          divisor=None if divisor is None else divisor(positive.sum()))


def ignore_mask(anchors: torch.Tensor, uncertain: Sequence[torch.Tensor], radius_px: float,
                ) -> torch.Tensor | None:
    """(N, A) bool: anchors within ``radius_px`` of an uncertain place of their image (None: none).

    Uncertain places are neither particle nor background: the unsure seeds of label-free adaptation,
    or places a training manifest marks with ``ignore_coordinates`` (e.g. particles in aggregates).
    """
    if not any(len(u) for u in uncertain):
        return None
    mask = torch.zeros((len(uncertain), anchors.shape[0]), dtype=torch.bool, device=anchors.device)
    for i, u in enumerate(uncertain):
        if len(u):
            mask[i] = torch.cdist(anchors, u.to(anchors)).min(dim=1).values < radius_px
    return mask
