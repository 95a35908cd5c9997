"""`nms_by_distance` beyond one block against a brute-force greedy reference, and `_greedy_dense`'s
sequential fallback (chains longer than its parallel rounds resolve)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydrapick.model.anchors import _greedy_dense, nms_by_distance


def greedy_reference(centres: np.ndarray, scores: np.ndarray, min_distance: float) -> list[int]:
    """The definition: by descending score (ties to the lower index), keep unless a kept one is closer."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if not kept or (((centres[kept] - centres[i]) ** 2).sum(axis=1) >= min_distance ** 2).all():
            kept.append(i)
    return kept


def _chain(n: int, spacing: float) -> np.ndarray:
    """Points on a line ``spacing`` apart: with falling scores each suppresses only the next one, so the
    greedy answer alternates and the parallel rounds decide about two points per round."""
    return np.stack([np.arange(n) * spacing, np.zeros(n)], axis=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_many_blocks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 6000  # 12 blocks of 512: suppression across blocks decides most candidates
    centres = rng.uniform(0, 400, size=(n, 2))
    scores = rng.random(n).astype(np.float32)
    scores[::7] = scores[3]  # ties, broken by index
    # A long chain in one block, scored above everything else, forces the sequential fallback.
    chain = _chain(200, 0.9 * 6.0) + [0.0, 500.0]
    centres = np.concatenate([centres, chain])
    scores = np.concatenate([scores, np.linspace(2.0, 1.5, len(chain)).astype(np.float32)])
    kept = nms_by_distance(torch.from_numpy(centres), torch.from_numpy(scores), 6.0).tolist()
    expected = greedy_reference(centres, scores, 6.0)
    assert kept == expected
    assert len(kept) < 0.6 * len(scores)  # dense enough that suppression matters
    assert kept[:100] == list(range(n, n + 200, 2))  # the chain alternates


@pytest.mark.parametrize("rounds", [0, 1, 3, 16])
def test_greedy_dense_sequential_fallback_matches_the_reference(rounds):
    chain = _chain(120, 0.9)
    d = torch.from_numpy(((chain[:, None] - chain[None]) ** 2).sum(-1))
    adj = (d < 1.0).triu(diagonal=1)
    kept = _greedy_dense(adj, max_rounds=rounds).tolist()  # 120 points cannot resolve in 16 rounds
    assert kept == greedy_reference(chain, -np.arange(120.0), 1.0) == list(range(0, 120, 2))


def test_random_clusters_with_small_blocks_match_brute_force():
    rng = np.random.default_rng(5)
    centres = np.concatenate([rng.normal(c, 3.0, size=(300, 2)) for c in rng.uniform(0, 200, size=(20, 2))])
    scores = rng.random(len(centres))
    for block in (64, 512, 10_000):
        kept = nms_by_distance(torch.from_numpy(centres), torch.from_numpy(scores), 4.0, block=block)
        assert kept.tolist() == greedy_reference(centres, scores, 4.0), block


@pytest.mark.parametrize("limit", [1, 6, 12, 500])
def test_a_limit_keeps_exactly_the_first_of_the_full_result(limit):
    # Scale calibration reads only the best few candidates; stopping early must not change which.
    rng = np.random.default_rng(limit)
    centres = np.concatenate([rng.normal(c, 3.0, size=(200, 2)) for c in rng.uniform(0, 300, size=(30, 2))])
    scores = rng.random(len(centres))
    full = greedy_reference(centres, scores, 5.0)
    kept = nms_by_distance(torch.from_numpy(centres), torch.from_numpy(scores), 5.0, limit=limit).tolist()
    assert kept == full[:limit]
    assert len(kept) == min(limit, len(full))
    unsuppressed = nms_by_distance(torch.from_numpy(centres), torch.from_numpy(scores), 0.0, limit=limit)
    assert unsuppressed.shape == (limit,)
