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

from ..config import MIN_DISTANCE_FRACTION, ModelConfig
from ..picks import Picks
from .head import head_strides


def _grid_len(n: int, config: ModelConfig) -> int:
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
       particle it overlaps most (ties: the lower particle index).
    2. Every particle also gets its best anchor (highest IoU, then nearest, then lowest index), overriding
       step 1. When two particles have the same best anchor, the one with the higher IoU keeps it and the
       other takes its best anchor not claimed in this step (if every anchor within reach is claimed,
       it keeps only its step-1 matches, if any). Particles at least one anchor spacing from every anchor
       (centres outside the image) get no forced anchor.

    Only anchors within ``max(box_px, spacing)`` of a particle are examined, so whole micrographs with
    thousands of particles cost little.

    Parameters
    ----------
    anchors : (A, 2) float tensor
        Anchor centres (x, y) in input pixels (a regular grid, as from `anchor_centres`).
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
    if not box_px > 0:
        raise ValueError(f"box_px must be positive, got {box_px}")
    n_a = anchors.shape[0]
    device = anchors.device
    matched = torch.full((n_a,), -1, dtype=torch.long, device=device)
    centres = torch.as_tensor(centres).to(device=device, dtype=anchors.dtype).reshape(-1, 2)
    n_p = centres.shape[0]
    if n_a == 0 or n_p == 0:
        return matched >= 0, matched

    spacing = _spacing(anchors)
    pj, ai = _pairs_within(centres, anchors, max(float(box_px), spacing))
    d = anchors[ai].double() - centres[pj].double()
    gap = d.abs()
    overlap = (box_px - gap).clamp(min=0).prod(dim=-1)
    iou = overlap / (2 * box_px * box_px - overlap)
    dist2 = (d * d).sum(-1)

    # Step 1: per anchor, the particle with the highest IoU above the threshold.
    sel = iou > iou_threshold
    if bool(sel.any()):
        a1, p1, v1 = ai[sel], pj[sel], iou[sel]
        top = torch.full((n_a,), -1.0, dtype=v1.dtype, device=device).scatter_reduce(0, a1, v1, "amax")
        is_top = v1 == top[a1]
        first = torch.full((n_a,), n_p, dtype=torch.long, device=device).scatter_reduce(
            0, a1[is_top], p1[is_top], "amin")
        matched = torch.where(first < n_p, first, matched)

    # Step 2: each particle's best reachable anchor (IoU, then distance, then index).
    if spacing > 0:
        near = gap.amax(dim=-1) < spacing
        ai, pj, iou, dist2 = ai[near], pj[near], iou[near], dist2[near]
    best_a, best_iou = _best_per_particle(ai, pj, iou, dist2, n_p, n_a)
    has = best_a < n_a
    idx = torch.arange(n_p, device=device)
    # Among particles forced onto the same anchor, the highest IoU (then the lowest index) wins.
    safe_a = torch.where(has, best_a, torch.zeros_like(best_a))
    top = torch.full((n_a,), -2.0, dtype=best_iou.dtype, device=device).scatter_reduce(
        0, best_a[has], best_iou[has], "amax")
    is_top = has & (best_iou == top[safe_a])
    first = torch.full((n_a,), n_p, dtype=torch.long, device=device).scatter_reduce(
        0, best_a[is_top], idx[is_top], "amin")
    winner = is_top & (first[safe_a] == idx)
    forced = torch.zeros(n_a, dtype=torch.bool, device=device)
    forced[best_a[winner]] = True
    matched[best_a[winner]] = idx[winner]

    # Rare (near-duplicate particles): losers take their best anchor not forced to another particle.
    losers = idx[has & ~winner]
    if losers.numel():
        order = losers[torch.argsort(best_iou[losers], descending=True, stable=True)]
        by_particle = torch.argsort(pj, stable=True)
        starts = torch.searchsorted(pj[by_particle], order)
        stops = torch.searchsorted(pj[by_particle], order, right=True)
        for j, lo, hi in zip(order.tolist(), starts.tolist(), stops.tolist(), strict=True):
            rows = by_particle[lo:hi]
            rows = rows[~forced[ai[rows]]]
            if rows.numel() == 0:
                continue
            a, _ = _best_per_particle(ai[rows], torch.zeros_like(rows), iou[rows], dist2[rows], 1, n_a)
            forced[a] = True
            matched[a] = j
    return matched >= 0, matched


def _best_per_particle(ai: torch.Tensor, pj: torch.Tensor, iou: torch.Tensor, dist2: torch.Tensor,
                       n_p: int, n_a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per particle, the anchor of highest IoU, then smallest distance, then lowest index (n_a: none)."""
    device = ai.device
    best_iou = torch.full((n_p,), -1.0, dtype=iou.dtype, device=device).scatter_reduce(0, pj, iou, "amax")
    c = iou == best_iou[pj]
    min_d = torch.full((n_p,), math.inf, dtype=dist2.dtype, device=device).scatter_reduce(
        0, pj[c], dist2[c], "amin")
    c &= dist2 == min_d[pj]
    best_a = torch.full((n_p,), n_a, dtype=torch.long, device=device).scatter_reduce(
        0, pj[c], ai[c], "amin")
    return best_a, best_iou


def _spacing(anchors: torch.Tensor) -> float:
    """Anchor spacing of a regular grid (largest gap between sorted distinct coordinates along an axis)."""
    spacing = 0.0
    for axis in range(2):
        values = torch.unique(anchors[:, axis])
        if values.numel() > 1:
            spacing = max(spacing, float((values[1:] - values[:-1]).max()))
    return spacing


def _pairs_within(query: torch.Tensor, ref: torch.Tensor, radius: float,
                  chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """All index pairs (i, j) with ``max(|query[i] - ref[j]|) < radius`` (Chebyshev distance).

    Points are bucketed into square cells of side ``radius``: a pair can only come from the same or a
    neighbouring cell, so the work grows with the number of close pairs, not with len(query) * len(ref).
    """
    device = ref.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    nq, nr = query.shape[0], ref.shape[0]
    if nq == 0 or nr == 0:
        return empty, empty
    q, r = query.double(), ref.double()
    lo = torch.minimum(q.min(dim=0).values, r.min(dim=0).values)
    extent = float((torch.maximum(q.max(dim=0).values, r.max(dim=0).values) - lo).max())
    # Cells no smaller than extent / 2^30 keep the cell keys well inside int64.
    cell = max(float(radius), extent / 2**30, 1e-300)
    rc = torch.floor((r - lo) / cell).long()
    qc = torch.floor((q - lo) / cell).long()
    ncols = int(max(int(rc[:, 0].max()), int(qc[:, 0].max()))) + 3  # room for the -1/+1 neighbours
    r_key = (rc[:, 1] + 1) * ncols + rc[:, 0] + 1
    q_key = (qc[:, 1] + 1) * ncols + qc[:, 0] + 1
    sorted_key, perm = torch.sort(r_key)
    neighbours = torch.tensor([dy * ncols + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device)
    out_q, out_r = [], []
    for start in range(0, nq, chunk):
        qi = torch.arange(start, min(nq, start + chunk), device=device)
        target = (q_key[qi, None] + neighbours).reshape(-1)  # (c * 9,)
        first = torch.searchsorted(sorted_key, target)
        count = torch.searchsorted(sorted_key, target, right=True) - first
        total = int(count.sum())
        if total == 0:
            continue
        pair_q = torch.repeat_interleave(qi.repeat_interleave(9), count)
        # Position of each pair inside its cell's run of the sorted order.
        run_start = torch.repeat_interleave(first - torch.cumsum(count, 0) + count, count)
        pair_r = perm[run_start + torch.arange(total, device=device)]
        close = (q[pair_q] - r[pair_r]).abs().amax(dim=-1) < radius
        out_q.append(pair_q[close])
        out_r.append(pair_r[close])
    if not out_q:
        return empty, empty
    return torch.cat(out_q), torch.cat(out_r)


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


def nms_by_distance(centres: torch.Tensor, scores: torch.Tensor, min_distance: float,
                    block: int = 512, limit: int | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression by centre distance.

    Candidates are visited by descending score; a candidate is kept unless a kept one lies closer than
    ``min_distance`` (Euclidean, strict). Ties in score go to the lower index.

    Implementation: candidates are taken in blocks of ``block`` by rank. A block's candidates near an
    already kept one (found through a grid of cells, so the cost grows with the number of close pairs,
    not K^2) are dropped; the rest are resolved among themselves on a small dense distance matrix. The
    result is identical to the sequential greedy algorithm.

    Parameters
    ----------
    centres : (K, 2) float tensor
    scores : (K,) float tensor
    min_distance : float
        In the units of ``centres``; <= 0 keeps everything.
    limit : int, optional
        Only the ``limit`` best kept candidates are wanted: blocks are smaller and the work stops once
        that many are kept (what is kept among the higher ranks never depends on the lower ones, so
        they are the same as the first ``limit`` of the full result).

    Returns
    -------
    (M,) long tensor of kept indices, in descending score order.
    """
    k = scores.shape[0]
    if centres.shape != (k, 2):
        raise ValueError(f"centres {tuple(centres.shape)} do not fit scores {tuple(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    if k == 0 or min_distance <= 0:
        return order[:limit]
    if limit is not None:
        block = min(block, max(64, 8 * limit))
    d2 = float(min_distance) ** 2
    xy = centres[order].double()  # rank order from here on
    kept: list[torch.Tensor] = []
    kept_xy = xy[:0]
    for start in range(0, k, block):
        cand = xy[start : start + block]
        alive = torch.ones(cand.shape[0], dtype=torch.bool, device=cand.device)
        if kept_xy.shape[0]:
            qi, ri = _pairs_within(cand, kept_xy, float(min_distance))
            close = ((cand[qi] - kept_xy[ri]) ** 2).sum(-1) < d2
            alive[qi[close]] = False
        idx = alive.nonzero().flatten()
        if idx.numel() == 0:
            continue
        sub = cand[idx]
        # adj[i, j]: i outranks j and is closer than min_distance.
        dx = sub[:, None, 0] - sub[None, :, 0]
        dy = sub[:, None, 1] - sub[None, :, 1]
        adj = (dx * dx + dy * dy < d2).triu(diagonal=1)
        new = idx[_greedy_dense(adj)] + start
        kept.append(new)
        kept_xy = torch.cat([kept_xy, xy[new]])
        if limit is not None and kept_xy.shape[0] >= limit:
            break
    return order[torch.cat(kept)][:limit] if kept else order[:0]


def _greedy_dense(adj: torch.Tensor, max_rounds: int = 16) -> torch.Tensor:
    """Greedy NMS on candidates already in rank order, given ``adj[i, j]`` (i outranks and is close to j).

    Parallel rounds (a candidate is decided once every higher-ranked neighbour is) usually finish in a
    few rounds; long chains fall back to a sequential pass. Returns the kept positions, ascending.
    """
    n = adj.shape[0]
    UNDECIDED, KEPT, SUPPRESSED = 0, 1, 2
    state = torch.zeros(n, dtype=torch.int8, device=adj.device)
    for _ in range(max_rounds):
        undecided = state == UNDECIDED
        if not bool(undecided.any()):
            return (state == KEPT).nonzero().flatten()
        blocked = (adj & (state != SUPPRESSED)[:, None]).any(dim=0)
        state[undecided & ~blocked] = KEPT
        hit = (adj & (state == KEPT)[:, None]).any(dim=0)
        state[(state == UNDECIDED) & hit] = SUPPRESSED
    # Sequential finish: in rank order, every earlier candidate is decided when we reach one.
    a = adj.cpu().numpy()
    s = state.cpu().numpy()
    for j in (s == UNDECIDED).nonzero()[0]:
        s[j] = SUPPRESSED if (a[:j, j] & (s[:j] == KEPT)).any() else KEPT
    return torch.from_numpy(s == KEPT).to(adj.device).nonzero().flatten()


def detect(outputs: torch.Tensor, anchors: torch.Tensor, config: ModelConfig, min_distance_px: float,
           score_floor: float = 0.0, max_kept: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    max_kept : int, optional
        Only the best ``max_kept`` centres (`nms_by_distance`'s ``limit``).

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
    kept = nms_by_distance(centres, scores, min_distance_px, limit=max_kept)
    return centres[kept], scores[kept]


def detect_picks(outputs: torch.Tensor, anchors: torch.Tensor, config: ModelConfig, name: str, *,
                 min_distance_px: float | None = None, score_floor: float = 0.0,
                 max_kept: int | None = None) -> Picks:
    """`detect` on the raw outputs of ONE image, as `Picks` in that image's (model) pixels.

    This is the one place network outputs become picks: picking, validation during training and
    fine-tuning's calibration all call it, so they share the NMS distance rule. ``outputs``,
    ``anchors``, ``config``, ``score_floor`` and ``max_kept`` are as in `detect`; ``name`` is the
    micrograph the picks carry; ``min_distance_px`` defaults to ``MIN_DISTANCE_FRACTION`` x
    ``config.particle_diameter_px``.
    """
    if min_distance_px is None:
        min_distance_px = MIN_DISTANCE_FRACTION * config.particle_diameter_px
    centres, scores = detect(outputs.float(), anchors, config, min_distance_px=min_distance_px,
                             score_floor=score_floor, max_kept=max_kept)
    centres = centres.cpu().double().numpy()
    return Picks(name, centres[:, 0], centres[:, 1], scores.cpu().double().numpy())
