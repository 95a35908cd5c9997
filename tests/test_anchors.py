import math

import pytest
import torch

from hydrapick.config import ModelConfig
from hydrapick.model.anchors import (
    anchor_centres,
    box_iou,
    build_targets,
    decode,
    detect,
    encode,
    grid_shape,
    match,
    max_offset_px,
    nms_by_distance,
)

THESIS = ModelConfig()
LIGHT = ModelConfig.light()




@pytest.mark.parametrize("config", [THESIS, LIGHT], ids=["thesis", "light"])
@pytest.mark.parametrize("h,w,expected", [(368, 368, (23, 23)), (777, 1000, (49, 63)), (16, 17, (1, 2)),
                                          (1, 1, (1, 1)), (33, 48, (3, 3))])
def test_grid_shape_is_ceil_of_size_over_stride(config, h, w, expected):
    assert grid_shape(h, w, config) == expected


def test_grid_shape_rejects_empty_input():
    with pytest.raises(ValueError, match="positive"):
        grid_shape(0, 10, THESIS)


def test_anchor_centres_row_major_on_16px_grid():
    a = anchor_centres(40, 20, THESIS)  # grid 3 x 2
    expected = torch.tensor([[0, 0], [16, 0], [0, 16], [16, 16], [0, 32], [16, 32]], dtype=torch.float32)
    assert torch.equal(a, expected)


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [16.0, 0.0], [8.0, 8.0], [64.0, 0.0], [32.0, 32.0]])
    iou = box_iou(a, b, 64.0)[0]
    # overlap 48*64 = 3072 of union 8192 - 3072; 56*56 = 3136 of 8192 - 3136; 32*32 = 1024 of 7168.
    expected = torch.tensor([1.0, 3072 / 5120, 3136 / 5056, 0.0, 1024 / 7168])
    assert torch.allclose(iou, expected)


def test_match_particle_on_anchor_and_between_anchors():
    anchors = anchor_centres(64, 64, THESIS)  # 4 x 4 grid at 0, 16, 32, 48
    # p0 sits on anchor (16, 16); neighbours at 16 px have IoU exactly 0.6, which is not > 0.6.
    # p1 sits in the middle of four anchors (40, 40): each has IoU 56^2/(2*64^2 - 56^2) = 0.620 > 0.6.
    centres = torch.tensor([[16.0, 16.0], [40.0, 40.0]])
    pos, idx = match(anchors, centres, box_px=64.0, iou_threshold=0.6)
    grid = idx.reshape(4, 4)
    expected = torch.full((4, 4), -1)
    expected[1, 1] = 0
    expected[2:4, 2:4] = 1
    assert torch.equal(grid, expected)
    assert torch.equal(pos, idx >= 0)


def test_match_small_box_between_anchors_gets_its_nearest_anchor_only():
    anchors = anchor_centres(64, 64, THESIS)
    # Box 32: at (8, 8) from the nearest anchors IoU is 24^2/(2*32^2 - 24^2) = 0.39 < 0.6 for all four.
    # Offset (5, 7) makes (16, 16) the unique nearest anchor.
    centres = torch.tensor([[21.0, 23.0]])
    pos, idx = match(anchors, centres, box_px=32.0)
    assert pos.sum() == 1 and idx[1 * 4 + 1] == 0


def test_match_exact_tie_goes_to_one_anchor():
    anchors = anchor_centres(64, 64, THESIS)
    pos, idx = match(anchors, torch.tensor([[8.0, 8.0]]), box_px=32.0)
    assert pos.sum() == 1 and idx[0] == 0  # four equidistant anchors; the first in row-major order


def test_match_anchor_between_two_particles_takes_higher_iou():
    anchors = anchor_centres(64, 64, THESIS)
    # Both particles overlap anchor (16, 16) with IoU > 0.6; p1 is closer to it.
    centres = torch.tensor([[26.0, 16.0], [20.0, 16.0]])
    pos, idx = match(anchors, centres, box_px=64.0)
    assert idx[1 * 4 + 1] == 1
    # p0's best anchor is (32, 16) (6 px away): it is forced to p0 even though p1 also overlaps it.
    assert idx[1 * 4 + 2] == 0


def test_match_two_particles_with_the_same_best_anchor_both_get_one():
    anchors = anchor_centres(64, 64, THESIS)
    # Box 24: both particles have (16, 16) as best anchor and no anchor above the threshold elsewhere.
    # IoU with (16, 16): p0 21*23/(2*24^2 - 21*23) = 0.722, p1 23*24/(2*24^2 - 23*24) = 0.920.
    centres = torch.tensor([[19.0, 17.0], [15.0, 16.0]])
    pos, idx = match(anchors, centres, box_px=24.0)
    assert idx[1 * 4 + 1] == 1
    # p0 falls back to its best unclaimed anchor (32, 16): IoU 11*23/(1152 - 253) = 0.28.
    assert (idx == 0).nonzero().flatten().tolist() == [1 * 4 + 2]
    assert pos.sum() == 2


def test_match_ignores_particles_far_outside_the_grid():
    anchors = anchor_centres(64, 64, THESIS)
    pos, idx = match(anchors, torch.tensor([[500.0, 500.0], [-40.0, 10.0]]), box_px=64.0)
    assert not pos.any()


def test_match_empty_inputs():
    anchors = anchor_centres(32, 32, THESIS)
    pos, idx = match(anchors, torch.zeros((0, 2)), 64.0)
    assert not pos.any() and (idx == -1).all()


def test_encode_decode_round_trip_and_units():
    anchors = anchor_centres(48, 48, THESIS)
    targets = anchors + torch.tensor([4.0, -8.0])
    off = encode(anchors, targets, 16)
    assert torch.allclose(off, torch.tensor([0.25, -0.5]).expand_as(off))
    assert torch.allclose(decode(off, anchors, 16), targets)
    batch = torch.stack([off, 2 * off])  # (2, A, 2): decode broadcasts over leading dims
    assert torch.allclose(decode(batch, anchors, 16)[1], anchors + 2 * torch.tensor([4.0, -8.0]))


def test_build_targets_labels_and_offsets():
    anchors = anchor_centres(64, 64, THESIS)
    labels, offsets, positive = build_targets(
        anchors, [torch.tensor([[20.0, 12.0]]), torch.zeros((0, 2))], THESIS)
    assert labels.shape == (2, 16) and offsets.shape == (2, 16, 2) and positive.dtype == torch.bool
    assert torch.equal(labels, positive.float())
    assert positive[1].sum() == 0
    # Anchor (16, 16): offset (4, -4) px = (0.25, -0.25) strides.
    assert positive[0, 5]
    assert torch.allclose(offsets[0, 5], torch.tensor([0.25, -0.25]))
    assert (offsets[0][~positive[0]] == 0).all()


def test_max_offset_bounds_every_match():
    g = torch.Generator().manual_seed(0)
    anchors = anchor_centres(200, 200, THESIS)
    centres = torch.rand((300, 2), generator=g) * 190
    pos, idx = match(anchors, centres, THESIS.particle_diameter_px)
    d = (anchors[pos] - centres[idx[pos]]).abs()
    assert float(d.max()) < max_offset_px(THESIS)


def brute_force_nms(centres, scores, d):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(math.dist(centres[i].tolist(), centres[j].tolist()) >= d for j in kept):
            kept.append(i)
    return kept


def test_nms_hand_computed():
    centres = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [6.0, 8.0], [20.0, 20.0]])
    scores = torch.tensor([0.9, 0.95, 0.8, 0.7, 0.1])
    # 1 (0.95) kept; 0 at distance 5 suppressed; 2 at distance sqrt(65)=8.06 >= 6 kept;
    # 3 at distance 5 from 1 suppressed; 4 kept.
    assert nms_by_distance(centres, scores, 6.0).tolist() == [1, 2, 4]
    # Distance exactly 5 is not "closer than 5": nothing suppressed except nothing.
    assert nms_by_distance(centres, scores, 5.0).tolist() == [1, 0, 2, 3, 4]


def test_nms_chain_keeps_what_greedy_keeps():
    # a - b - c on a line 4 px apart with d = 5: a suppresses b, so c survives.
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_by_distance(centres, scores, 5.0).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand((300, 2), generator=g) * 100
    scores = torch.rand(300, generator=g).round(decimals=1)  # many ties
    d = 4.0 + seed * 3
    assert nms_by_distance(centres, scores, d).tolist() == brute_force_nms(centres, scores, d)


def test_nms_edge_cases():
    assert nms_by_distance(torch.zeros((0, 2)), torch.zeros(0), 5.0).numel() == 0
    c = torch.zeros((3, 2))
    assert nms_by_distance(c, torch.tensor([0.1, 0.3, 0.2]), 0.0).tolist() == [1, 2, 0]
    assert nms_by_distance(c, torch.tensor([0.1, 0.3, 0.2]), 1.0).tolist() == [1]


def test_nms_many_candidates():
    g = torch.Generator().manual_seed(1)
    anchors = anchor_centres(3584, 3584, THESIS)  # 224^2 = 50176 candidates
    centres = anchors + (torch.rand(anchors.shape, generator=g) - 0.5) * 16
    scores = torch.rand(len(anchors), generator=g)
    kept = nms_by_distance(centres, scores, 51.2)
    assert 0 < kept.numel() < len(anchors)
    kc = centres[kept]
    # No two kept centres are closer than the distance (checked on a window to keep the test cheap).
    window = kept[(kc[:, 0] < 600) & (kc[:, 1] < 600)]
    assert torch.cdist(centres[window], centres[window]).add(torch.eye(len(window)) * 1e9).min() >= 51.2
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])


def test_detect_decodes_filters_and_suppresses():
    config = THESIS
    anchors = anchor_centres(64, 64, config)
    outputs = torch.zeros((16, 3))
    outputs[:, 2] = -10.0
    outputs[5] = torch.tensor([0.25, -0.5, 3.0])   # anchor (16, 16) -> (20, 8), p = 0.953
    outputs[6] = torch.tensor([-0.5, 0.0, 1.0])    # anchor (32, 16) -> (24, 16), 8.9 px away: suppressed
    outputs[15] = torch.tensor([0.0, 0.0, 0.0])    # anchor (48, 48), p = 0.5
    centres, scores = detect(outputs, anchors, config, min_distance_px=20.0, score_floor=0.1)
    assert torch.allclose(centres, torch.tensor([[20.0, 8.0], [48.0, 48.0]]))
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([3.0, 0.0])))
    with pytest.raises(ValueError, match="one image"):
        detect(outputs[None], anchors, config, 20.0)
    none_c, none_s = detect(outputs, anchors, config, min_distance_px=20.0, score_floor=0.99)
    assert none_c.shape == (0, 2) and none_s.shape == (0,)


def test_detect_clamps_wild_offsets():
    anchors = anchor_centres(16, 16, THESIS)
    centres, _ = detect(torch.tensor([[100.0, -100.0, 5.0]]), anchors, THESIS, 10.0)
    limit = max_offset_px(THESIS)
    assert torch.allclose(centres, torch.tensor([[limit, -limit]]))


def reference_match(anchors, centres, box, thr, spacing):
    """Plain-Python statement of the matching rules, for comparison with the vectorised `match`."""
    A, P = len(anchors), len(centres)
    a, c = anchors.double().tolist(), centres.double().tolist()

    def iou(i, j):
        o = max(0.0, box - abs(a[i][0] - c[j][0])) * max(0.0, box - abs(a[i][1] - c[j][1]))
        return o / (2 * box * box - o)

    def key(i, j):  # larger is better: IoU, then nearer, then lower anchor index
        return (iou(i, j), -((a[i][0] - c[j][0]) ** 2 + (a[i][1] - c[j][1]) ** 2), -i)

    matched = [-1] * A
    for i in range(A):
        cands = [(iou(i, j), -j) for j in range(P) if iou(i, j) > thr]
        if cands:
            matched[i] = -max(cands)[1]
    reach = {j: [i for i in range(A) if max(abs(a[i][0] - c[j][0]), abs(a[i][1] - c[j][1])) < spacing]
             for j in range(P)}
    best = {j: max(reach[j], key=lambda i, j=j: key(i, j)) for j in range(P) if reach[j]}
    forced = {}
    for j in sorted(best, key=lambda j: (-iou(best[j], j), j)):
        if best[j] not in forced:
            forced[best[j]] = j
    for j in sorted(best, key=lambda j: (-iou(best[j], j), j)):
        if forced.get(best[j]) != j:
            free = [i for i in reach[j] if i not in forced]
            if free:
                forced[max(free, key=lambda i, j=j: key(i, j))] = j
    for i, j in forced.items():
        matched[i] = j
    return matched


@pytest.mark.parametrize("seed,box", [(0, 64.0), (1, 64.0), (2, 24.0), (3, 40.0), (4, 100.0)])
def test_match_agrees_with_plain_python_rules(seed, box):
    g = torch.Generator().manual_seed(seed)
    anchors = anchor_centres(100, 120, THESIS)
    # Clustered particles (so conflicts happen), some duplicated, a few outside the image.
    centres = torch.rand((25, 2), generator=g) * torch.tensor([140.0, 120.0]) - 10
    centres = torch.cat([centres, centres[:3], centres[3:6] + 2.0])
    _, idx = match(anchors, centres, box)
    assert idx.tolist() == reference_match(anchors, centres, box, 0.6, 16.0)
