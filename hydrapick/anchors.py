"""Anchors: where the network's outputs sit on the input, matching particles to them, decoding, NMS.

Geometry. Coordinates are in input pixels with the pixel-centre convention of `hydrapick.preprocess`
(pixel ``i`` is centred on ``i``). Every convolution that changes resolution is 3x3 with padding 1, so
output cell ``j`` of a stride-2 convolution is centred on input pixel ``2j``; composing them, head output
cell ``(r, c)`` is centred on input pixel ``(x, y) = (anchor_stride * c, anchor_stride * r)``. That point
is the centre of the cell's receptive field, so it is where the anchor sits. The grid has
``ceil(H / anchor_stride)`` rows (each stride-2 conv maps n to ``(n - 1) // 2 + 1``).

Matching (thesis eq. 3.2): a particle and an anchor are matched when the axis-aligned squares of side
``box_px`` centred on them overlap with IoU > ``iou_threshold``. Each particle is also matched to its best
anchor, so a particle lying between anchors (where, for small boxes, no anchor reaches the threshold) is
still a positive. See docs/method.md for the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import ModelConfig

# Pairs of (anchor, particle) IoUs computed at once in `match`; bounds its memory for whole micrographs.
_MATCH_CHUNK = 1 << 22


def _grid_len(n: int, config: ModelConfig) -> int:
    from .model.head import head_strides

    for stride in (config.stem_stride, *head_strides(config)):
        n = (n - 1) // stride + 1  # 3x3 conv, padding 1
    return n


def grid_shape(height: int, width: int, config: ModelConfig) -> tuple[int, int]:
    """Shape (Ha, Wa) of the anchor grid the network produces for an input of ``height`` x ``width``."""
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height} x {width}")
    return _grid_len(int(height), config), _grid_len(int(width), config)


def anchor_centres(height: int, width: int, config: ModelConfig,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Anchor centres (A, 2) float32 of (x, y) in input pixels, row-major like the head output."""
    ha, wa = grid_shape(height, width, config)
    s = float(config.anchor_stride)
    ys = torch.arange(ha, dtype=torch.float32, device=device) * s
    xs = torch.arange(wa, dtype=torch.float32, device=device) * s
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def box_iou(a: torch.Tensor, b: torch.Tensor, box_px: float) -> torch.Tensor:
    """IoU (len(a), len(b)) of axis-aligned squares of side ``box_px`` centred on points ``a`` and ``b``."""
    d = (a[:, None, :] - b[None, :, :]).abs()
    overlap = (box_px - d).clamp(min=0).prod(dim=-1)
    return overlap / (2 * box_px * box_px - overlap)


def match(anchors: torch.Tensor, centres: torch.Tensor, box_px: float,
          iou_threshold: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Match particle centres to anchors.

    1. Every (anchor, particle) pair with box IoU > ``iou_threshold`` is a candidate; an anchor takes the
       particle it overlaps most.
    2. Every particle also gets its best anchor (highest IoU, then nearest), overriding step 1. When two
       particles have the same best anchor, the one with the higher IoU keeps it and the other takes its
       best anchor not claimed in this step. Particles farther than one anchor spacing from every anchor
       (centres outside the image) get no forced anchor.

    Parameters
    ----------
    anchors : (A, 2) float tensor
        Anchor centres (x, y) in input pixels.
    centres : (P, 2) float tensor
        Particle centres (x, y) in input pixels.
    box_px : float
        Box side in input pixels (the particle diameter at the model's scale).
    iou_threshold : float
        IoU a pair must exceed to match in step 1.

    Returns
    -------
    positive : (A,) bool tensor
    matched : (A,) long tensor
        Index into ``centres`` of each anchor's particle, -1 for unmatched anchors.
    """
    if box_px <= 0:
        raise ValueError(f"box_px must be positive, got {box_px}")
    n_a = anchors.shape[0]
    device = anchors.device
    matched = torch.full((n_a,), -1, dtype=torch.long, device=device)
    centres = centres.to(device=device, dtype=anchors.dtype).reshape(-1, 2)
    n_p = centres.shape[0]
    if n_a == 0 or n_p == 0:
        return matched >= 0, matched

    best_iou_a = torch.zeros(n_a, dtype=anchors.dtype, device=device)
    best_a = torch.empty(n_p, dtype=torch.long, device=device)
    best_iou_p = torch.empty(n_p, dtype=anchors.dtype, device=device)
    chunk = max(1, _MATCH_CHUNK // n_a)
    for start in range(0, n_p, chunk):
        stop = min(n_p, start + chunk)
        iou = box_iou(anchors, centres[start:stop], box_px)  # (A, p)
        # Step 1, per anchor: the particle with the highest IoU above the threshold.
        value, index = iou.max(dim=1)
        better = (value > iou_threshold) & (value > best_iou_a)
        best_iou_a = torch.where(better, value, best_iou_a)
        matched = torch.where(better, index + start, matched)
        # Step 2 needs each particle's best anchor: highest IoU, ties (and IoU 0) broken by distance.
        dist2 = ((anchors[:, None, :] - centres[None, start:stop, :]) ** 2).sum(-1)
        top = iou.max(dim=0, keepdim=True).values
        cand = torch.where(iou >= top, dist2, torch.full_like(dist2, math.inf))
        best_a[start:stop] = cand.argmin(dim=0)
        best_iou_p[start:stop] = top[0]

    stride = _spacing(anchors)
    gap = (anchors[best_a] - centres).abs().amax(dim=1)
    reachable = gap < stride if stride > 0 else torch.ones_like(gap, dtype=torch.bool)
    idx = torch.arange(n_p, device=device)
    # Among particles forced onto the same anchor, the highest IoU (then lowest index) wins.
    key = torch.where(reachable, best_iou_p, torch.full_like(best_iou_p, -1.0))
    top_key = torch.full((n_a,), -2.0, dtype=key.dtype, device=device).scatter_reduce(
        0, best_a, key, reduce="amax")
    is_top = reachable & (key == top_key[best_a])
    first = torch.full((n_a,), n_p, dtype=torch.long, device=device).scatter_reduce(
        0, best_a[is_top], idx[is_top], reduce="amin")
    winner = is_top & (first[best_a] == idx)
    forced = torch.zeros(n_a, dtype=torch.bool, device=device)
    forced[best_a[winner]] = True
    matched[best_a[winner]] = idx[winner]

    # Rare: particles that lost their best anchor to a closer neighbour take their best unclaimed anchor.
    losers = idx[reachable & ~winner]
    if losers.numel():
        order = losers[torch.argsort(best_iou_p[losers], descending=True, stable=True)]
        for j in order.tolist():
            c = centres[j : j + 1]
            iou = box_iou(anchors, c, box_px)[:, 0]
            near = (anchors - c).abs().amax(dim=1) < stride
            d2 = ((anchors - c) ** 2).sum(-1)
            ok = near & ~forced
            if not bool(ok.any()):
                continue
            # Highest IoU first, nearest among equals.
            score = torch.where(ok, iou, torch.full_like(iou, -1.0))
            cand = torch.where(score >= score.max(), d2, torch.full_like(d2, math.inf))
            a = int(cand.argmin())
            forced[a] = True
            matched[a] = j
    return matched >= 0, matched


def _spacing(anchors: torch.Tensor) -> float:
    """Anchor spacing of a regular grid (largest gap between sorted distinct coordinates along an axis)."""
    spacing = 0.0
    for axis in range(2):
        values = torch.unique(anchors[:, axis])
        if values.numel() > 1:
            spacing = max(spacing, float((values[1:] - values[:-1]).max()))
    return spacing


def encode(anchors: torch.Tensor, targets: torch.Tensor, stride: float) -> torch.Tensor:
    """Offsets (A, 2) of ``targets`` from ``anchors`` in units of ``stride``: ``(t - a) / stride``."""
    return (targets - anchors) / stride


def decode(offsets: torch.Tensor, anchors: torch.Tensor, stride: float) -> torch.Tensor:
    """Centres (..., A, 2) in input pixels from offsets (..., A, 2) in units of ``stride``."""
    return anchors + offsets * stride


def build_targets(anchors: torch.Tensor, centres_per_image: Sequence[torch.Tensor],
                  config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets for a batch.

    Parameters
    ----------
    anchors : (A, 2) float tensor
        From `anchor_centres` for the batch's input size.
    centres_per_image : list of (P_i, 2) float tensors
        Particle centres (x, y) of each image, in input pixels.
    config : ModelConfig
        Supplies ``particle_diameter_px`` (box side), ``match_iou`` and ``anchor_stride``.

    Returns
    -------
    labels : (N, A) float tensor, 1 for matched anchors, 0 otherwise
    offsets : (N, A, 2) float tensor, encoded target offsets (0 where unmatched)
    positive : (N, A) bool tensor
    """
    n = len(centres_per_image)
    a = anchors.shape[0]
    labels = torch.zeros((n, a), dtype=anchors.dtype, device=anchors.device)
    offsets = torch.zeros((n, a, 2), dtype=anchors.dtype, device=anchors.device)
    positive = torch.zeros((n, a), dtype=torch.bool, device=anchors.device)
    for i, centres in enumerate(centres_per_image):
        centres = torch.as_tensor(centres, dtype=anchors.dtype).to(anchors.device).reshape(-1, 2)
        pos, idx = match(anchors, centres, config.particle_diameter_px, config.match_iou)
        positive[i] = pos
        labels[i] = pos.to(anchors.dtype)
        if pos.any():
            offsets[i, pos] = encode(anchors[pos], centres[idx[pos]], config.anchor_stride)
    return labels, offsets, positive


def max_offset_px(config: ModelConfig) -> float:
    """Largest offset of a matched particle from its anchor, per axis, in input pixels.

    Threshold matches satisfy ``|d| < box * (1 - t) / (1 + t)``; forced matches ``|d| < anchor_stride``.
    """
    t = config.match_iou
    return max(float(config.anchor_stride), config.particle_diameter_px * (1 - t) / (1 + t))


def nms_by_distance(centres: torch.Tensor, scores: torch.Tensor, min_distance: float) -> torch.Tensor:
    """Greedy non-maximum suppression by centre distance.

    Candidates are visited by descending score; a candidate is kept unless a kept one lies closer than
    ``min_distance`` (Euclidean, strict). Ties in score go to the lower index.

    Implementation: neighbour pairs are found through a grid of ``min_distance`` cells (memory and time
    grow with the number of close pairs, not K^2), then the greedy result is computed in parallel rounds:
    a candidate is decided once all its higher-ranked neighbours are. The result is identical to the
    sequential greedy algorithm.

    Parameters
    ----------
    centres : (K, 2) float tensor
    scores : (K,) float tensor
    min_distance : float
        In the units of ``centres``; <= 0 keeps everything.

    Returns
    -------
    (M,) long tensor of kept indices, in descending score order.
    """
    k = scores.shape[0]
    device = scores.device
    order = torch.sort(scores, descending=True, stable=True).indices
    if k == 0 or min_distance <= 0:
        return order
    rank = torch.empty(k, dtype=torch.long, device=device)
    rank[order] = torch.arange(k, device=device)
    hi, lo = _close_pairs(centres, rank, float(min_distance))  # hi outranks lo
    UNDECIDED, KEPT, SUPPRESSED = 0, 1, 2
    state = torch.zeros(k, dtype=torch.int8, device=device)
    while True:
        undecided = state == UNDECIDED
        if not bool(undecided.any()):
            break
        # Kept: every higher-ranked neighbour is already suppressed.
        blocked = torch.zeros(k, dtype=torch.bool, device=device)
        if hi.numel():
            blocked[lo[state[hi] != SUPPRESSED]] = True
        state[undecided & ~blocked] = KEPT
        # Suppressed: a higher-ranked neighbour is kept.
        if hi.numel():
            hit = torch.zeros(k, dtype=torch.bool, device=device)
            hit[lo[state[hi] == KEPT]] = True
            state[(state == UNDECIDED) & hit] = SUPPRESSED
            # Edges whose both ends are decided are no longer needed.
            live = state[lo] == UNDECIDED
            hi, lo = hi[live], lo[live]
    return order[state[order] == KEPT]


def _close_pairs(centres: torch.Tensor, rank: torch.Tensor, d: float,
                 chunk: int = 1 << 15) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (hi, lo) closer than ``d`` with ``rank[hi] < rank[lo]``, via a grid of ``d`` cells."""
    k = centres.shape[0]
    device = centres.device
    xy = centres.to(torch.float64)
    cell = torch.floor((xy - xy.min(dim=0).values) / d).long()
    ncols = int(cell[:, 0].max()) + 3  # +3: room for the -1/+1 neighbours without wrapping
    key = (cell[:, 1] + 1) * ncols + (cell[:, 0] + 1)
    sort_key, perm = torch.sort(key)
    his, los = [], []
    offsets = [dy * ncols + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for start in range(0, k, chunk):
        q = torch.arange(start, min(k, start + chunk), device=device)
        for off in offsets:
            target = key[q] + off
            first = torch.searchsorted(sort_key, target)
            last = torch.searchsorted(sort_key, target, right=True)
            count = last - first
            if int(count.sum()) == 0:
                continue
            qi = torch.repeat_interleave(q, count)
            # Position of each pair inside its neighbour cell's run in the sorted order.
            base = torch.repeat_interleave(first - torch.cumsum(count, 0) + count, count)
            pj = perm[base + torch.arange(qi.numel(), device=device)]
            keep = (rank[qi] < rank[pj]) & (((xy[qi] - xy[pj]) ** 2).sum(-1) < d * d)
            his.append(qi[keep])
            los.append(pj[keep])
    if not his:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(his), torch.cat(los)


def detect(outputs: torch.Tensor, anchors: torch.Tensor, config: ModelConfig, min_distance_px: float,
           score_floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored particle centres from the raw outputs of ONE image.

    Parameters
    ----------
    outputs : (A, 3) float tensor
        Raw head output [dx, dy, logit] for one image.
    anchors : (A, 2) float tensor
        `anchor_centres` of that image's input size.
    config : ModelConfig
    min_distance_px : float
        NMS distance in input pixels (typically a fraction of ``config.particle_diameter_px``).
    score_floor : float
        Candidates with probability below this are dropped before NMS.

    Returns
    -------
    centres : (K, 2) float tensor, (x, y) in input pixels
    scores : (K,) float tensor, sigmoid probabilities, descending
    """
    if outputs.dim() != 2 or outputs.shape[1] != 3 or outputs.shape[0] != anchors.shape[0]:
        raise ValueError(f"detect expects outputs (A, 3) for one image with A = {anchors.shape[0]}, "
                         f"got {tuple(outputs.shape)}")
    outputs = outputs.detach().float()
    scores = torch.sigmoid(outputs[:, 2])
    keep = scores >= score_floor
    # Matched targets never lie farther than max_offset_px from their anchor; clamping keeps a wild
    # prediction from landing far away (and bounds how many candidates can crowd one spot).
    limit = max_offset_px(config) / config.anchor_stride
    offsets = outputs[keep, :2].clamp(-limit, limit)
    centres = decode(offsets, anchors[keep].to(offsets), config.anchor_stride)
    scores = scores[keep]
    kept = nms_by_distance(centres, scores, min_distance_px)
    return centres[kept], scores[kept]
