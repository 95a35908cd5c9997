"""Picking at several scales (`hydrapick.picking.scales`, ``pick --scales``): the merge by hand-made
candidates, then end to end with the tiny model of test_picking.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_picking import DIAMETER_A, match_fraction, trained_checkpoint, write_blob_micrographs

from hydrapick.io import write_micrograph
from hydrapick.picking import pick, pick_micrographs
from hydrapick.picking.results import PickResult
from hydrapick.picking.scales import merge_scales, parse_scales, scale_major
from hydrapick.picks import Picks


def result(xys, scores, name="m.mrc") -> PickResult:
    xy = np.asarray(xys, dtype=float).reshape(-1, 2)
    picks = Picks(micrograph=name, x=xy[:, 0], y=xy[:, 1], score=scores, diameter_px=40.0)
    return PickResult(path=name, name=name, picks=picks.sorted_by_score(), threshold=0.3, shape=(200, 300),
                      pixel_size_A=2.0)


# --- parse_scales and scale_major ------------------------------------------------------------------------

def test_parse_scales_reads_lists_numbers_and_drops_repeats():
    assert parse_scales(None) == (1.0,)
    assert parse_scales("0.89, 1,1.12") == (0.89, 1.0, 1.12)
    assert parse_scales("1,1,0.9,") == (1.0, 0.9)
    assert parse_scales(1.1) == (1.1,)
    assert parse_scales([0.8, 1.25]) == (0.8, 1.25)


@pytest.mark.parametrize("bad, message", [("", "at least one"), ("0.9;1.1", "comma-separated"),
                                          ("0", "between 0.5 and 2"), ("1,3", "got 3"),
                                          ("nan", "between"), ([-1.0], "got -1")])
def test_parse_scales_says_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_scales(bad)


def test_scale_major_regroups_each_chunk_scale_by_scale():
    per_item = [[(i, k) for k in range(2)] for i in range(5)]
    pairs = list(scale_major(iter(per_item), 2))
    assert pairs == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0), (2, 1), (3, 1), (4, 0), (4, 1)]
    assert list(scale_major([["a"], ["b"], ["c"]], 2)) == ["a", "b", "c"]  # one scale: input order
    assert list(scale_major([], 4)) == []


# --- merge_scales -----------------------------------------------------------------------------------------

def test_merge_scores_a_place_by_the_mean_of_each_pass_best_score():
    # Place A (near (50, 50)) found by all three passes, twice by the second; place B (200, 100) by one.
    passes = [result([[50, 50]], [0.6]),
              result([[53, 49], [47, 52], [200, 100]], [0.9, 0.5, 0.6]),
              result([[51, 51]], [0.3])]
    merged = merge_scales(passes, radius_px=20.0, diameter_px=45.0)
    assert merged.ok and merged.name == "m.mrc" and merged.shape == (200, 300) and merged.threshold == 0.3
    np.testing.assert_allclose(merged.picks.score, [(0.6 + 0.9 + 0.3) / 3, 0.6 / 3])
    # Each place sits where its best candidate is, with the typed diameter.
    np.testing.assert_allclose(np.c_[merged.picks.x, merged.picks.y], [[53, 49], [200, 100]])
    np.testing.assert_allclose(merged.picks.diameter_px, 45.0)


def test_merged_places_keep_the_minimum_distance_and_the_score_floor():
    rng = np.random.default_rng(3)
    passes = [result(rng.uniform(0, 300, (60, 2)), rng.uniform(0.05, 1, 60)) for _ in range(3)]
    merged = merge_scales(passes, radius_px=25.0, diameter_px=40.0, score_floor=0.1)
    xy = np.c_[merged.picks.x, merged.picks.y]
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    assert d.min() >= 25.0
    assert (merged.picks.score >= 0.1).all() and (np.diff(merged.picks.score) <= 0).all()
    # Every candidate is within the radius of a merged place, or its place fell below the floor.
    everything = merge_scales(passes, radius_px=25.0, diameter_px=40.0)
    assert len(everything.picks) > len(merged.picks)
    all_xy = np.concatenate([np.c_[p.picks.x, p.picks.y] for p in passes])
    kept = np.c_[everything.picks.x, everything.picks.y]
    assert (np.sqrt(((all_xy[:, None] - kept[None]) ** 2).sum(-1)).min(axis=1) < 25.0 + 1e-9).all()


def test_one_failed_pass_fails_the_micrograph_and_no_candidates_give_none():
    failed = PickResult(path="m.mrc", name="m.mrc", error="File 'm.mrc': out of memory")
    assert merge_scales([result([[1, 1]], [0.5]), failed], 10.0, 40.0).error == failed.error
    empty = merge_scales([result(np.zeros((0, 2)), []), result(np.zeros((0, 2)), [])], 10.0, 40.0)
    assert empty.ok and len(empty.picks) == 0


# --- end to end ------------------------------------------------------------------------------------------

def test_picking_at_three_scales_finds_the_particles_in_input_order(tmp_path):
    truth = write_blob_micrographs(tmp_path / "a", 3, particles=5, seed=11)
    truth |= write_blob_micrographs(tmp_path / "b", 2, shape=(200, 280), particles=4, seed=12)
    paths = list(truth)[::-1]
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A)
    results = list(pick_micrographs(paths, scales="0.89,1,1.12", batch_size=2, **kwargs))
    assert [r.path for r in results] == paths
    diameter_px = DIAMETER_A / 2.0
    for r in results:
        recall, precision = match_fraction(r.selected, truth[r.path], 0.15 * diameter_px)
        assert recall == 1.0 and precision == 1.0, (r.path, recall, precision)
        xy = np.c_[r.picks.x, r.picks.y]
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
        assert d.min() >= 0.6 * diameter_px  # the default minimum distance holds after the merge
        np.testing.assert_allclose(r.picks.diameter_px, diameter_px)
    # One scale is plain picking.
    one = list(pick_micrographs(paths, scales="1", **kwargs))
    plain = list(pick_micrographs(paths, **kwargs))
    for a, b in zip(one, plain, strict=True):
        np.testing.assert_array_equal(np.c_[a.picks.x, a.picks.y, a.picks.score],
                                      np.c_[b.picks.x, b.picks.y, b.picks.score])


def test_each_micrograph_is_read_once_whatever_the_scales(tmp_path, monkeypatch):
    import hydrapick.io

    truth = write_blob_micrographs(tmp_path, 3, particles=3, seed=14)
    reads = []
    original = hydrapick.io.read_micrograph

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(hydrapick.io, "read_micrograph", counted)
    results = list(pick_micrographs(list(truth), model=trained_checkpoint(), diameter_A=DIAMETER_A,
                                    pixel_size_A=2.0, scales="0.9,1,1.1", batch_size=2))
    assert all(r.ok for r in results) and sorted(reads) == sorted(truth)


def test_a_bad_micrograph_fails_once_among_scales(tmp_path):
    truth = write_blob_micrographs(tmp_path, 2, particles=4, seed=13)
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x00" * 100)
    paths = [next(iter(truth)), str(bad), list(truth)[1]]
    results = list(pick_micrographs(paths, model=trained_checkpoint(), diameter_A=DIAMETER_A,
                                    scales=[0.9, 1.1], batch_size=4))
    assert [r.path for r in results] == paths
    assert [r.ok for r in results] == [True, False, True] and "bad.mrc" in results[1].error


def test_pick_checks_every_scale_particle_size_before_picking(tmp_path):
    mic = tmp_path / "m.mrc"
    write_micrograph(mic, np.zeros((64, 64), np.float32), 2.0)
    # The tiny model takes particles of 3 px and more (1/8 of its 24 px): 6.4 A at 2 A/px is 3.2 px,
    # fine alone, but 0.9 x that is not, and that is said before any micrograph is picked.
    kwargs = dict(model=trained_checkpoint(), pixel_size_A=2.0)
    assert pick([mic], None, diameter_A=6.4, **kwargs).n_failed == 0
    with pytest.raises(ValueError, match="px across"):
        pick([mic], None, diameter_A=6.4, scales="0.9,1", **kwargs)
    with pytest.raises(ValueError, match="between 0.5 and 2"):
        pick([mic], None, diameter_A=DIAMETER_A, scales="3", **kwargs)
