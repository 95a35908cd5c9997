"""Evaluation metrics on hand-made cases whose AP, F1 and match counts are known exactly."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrapick.evaluation import (
    box_iou,
    evaluate,
    flip_y_per_micrograph,
    load_coordinates,
    match_picks,
    threshold_at_precision,
    write_report_json,
)
from hydrapick.picks import Picks

BOX = 10.0  # For a pure x shift of two 10 px boxes, IoU = (10 - dx) / (10 + dx): IoU > 0.6 <=> dx < 2.5.


def truth_grid(n, mic="mic_001.mrc"):
    """n true particles 100 px apart on one micrograph (far beyond any box overlap)."""
    return Picks(mic, x=100.0 * np.arange(1, n + 1), y=np.full(n, 50.0))


def picks(xs, ys, scores, mic="mic_001.mrc"):
    return Picks(mic, x=np.asarray(xs, float), y=np.asarray(ys, float), score=np.asarray(scores, float))


def test_box_iou_values():
    assert box_iou(np.array(0.0), np.array(0.0), BOX) == pytest.approx(1.0)
    assert box_iou(np.array(2.5), np.array(0.0), BOX) == pytest.approx(0.6)
    # dx = dy = 5: overlap 25, union 175
    assert box_iou(np.array(5.0), np.array(-5.0), BOX) == pytest.approx(25 / 175)
    assert box_iou(np.array(10.0), np.array(0.0), BOX) == 0.0


def test_perfect_picks():
    truth = truth_grid(4)
    r = evaluate(truth, picks(truth.x, truth.y, [0.9, 0.8, 0.7, 0.6]), BOX)
    assert r.ap == pytest.approx(1.0)
    assert r.best_f1 == pytest.approx(1.0)
    assert r.f1 == pytest.approx(1.0) and r.precision == 1.0 and r.recall == 1.0
    assert (r.n_truth, r.n_picks, r.n_matched) == (4, 4, 4)
    assert r.recall_at_precision_0_9 == 1.0
    assert r.best_f1_threshold == pytest.approx(0.6)
    assert r.mean_offset_px == 0.0
    assert math.isnan(r.auroc)  # no false picks: the ROC has no negatives


@pytest.mark.parametrize("dx, matched", [(2.4, True), (2.6, False), (2.5, False), (-2.4, True)])
def test_shift_around_iou_limit(dx, matched):
    truth = truth_grid(1)
    r = evaluate(truth, picks(truth.x + dx, truth.y, [0.5]), BOX)
    assert r.n_matched == int(matched)
    assert r.ap == pytest.approx(1.0 if matched else 0.0)
    assert r.f1 == pytest.approx(1.0 if matched else 0.0)


def test_diagonal_shift_uses_box_iou():
    # dx = dy = 1.2: overlap 8.8^2 = 77.44, IoU = 77.44 / 122.56 = 0.632 > 0.6; 1.4: 73.96/126.04 = 0.587.
    truth = truth_grid(1)
    assert evaluate(truth, picks(truth.x + 1.2, truth.y + 1.2, [1.0]), BOX).n_matched == 1
    assert evaluate(truth, picks(truth.x + 1.4, truth.y - 1.4, [1.0]), BOX).n_matched == 0


def test_iou_threshold_is_a_parameter():
    truth = truth_grid(1)
    shifted = picks(truth.x + 4.0, truth.y, [1.0])  # IoU 6/14 = 0.43
    assert evaluate(truth, shifted, BOX).n_matched == 0
    assert evaluate(truth, shifted, BOX, iou_threshold=0.4).n_matched == 1


def test_duplicate_second_pick_is_false_positive():
    truth = truth_grid(1)
    # The lower-scoring duplicate sits exactly on the particle; the higher-scoring one still wins.
    dup = picks([truth.x[0] + 1.0, truth.x[0]], [50.0, 50.0], [0.9, 0.8])
    assert list(match_picks(truth, dup, BOX)) == [0, -1]
    r = evaluate(truth, dup, BOX)
    assert (r.n_picks, r.n_matched) == (2, 1)
    assert r.precision == 0.5 and r.recall == 1.0
    assert r.f1 == pytest.approx(2 / 3)
    assert r.ap == pytest.approx(1.0)  # full recall is reached at precision 1 (threshold 0.9)
    assert r.best_f1 == pytest.approx(1.0) and r.best_f1_threshold == pytest.approx(0.9)
    assert r.mean_offset_px == pytest.approx(1.0)


def test_pick_takes_an_unmatched_particle_when_its_best_is_taken():
    truth = Picks("m", x=[0.0, 2.0], y=[0.0, 0.0])
    # P1 (0.8) overlaps T0 best; P2 (0.2) overlaps T0 best too but T0 is taken, and T1 with IoU 0.695.
    p = picks([0.8, 0.2], [0.0, 0.0], [0.9, 0.8], mic="m")
    assert list(match_picks(truth, p, BOX)) == [0, 1]


def test_ordering_by_score_and_exact_metrics():
    truth = truth_grid(3)
    # Ranked: TP 0.9, FP 0.8, TP 0.7, FP 0.6; the third particle is never found.
    p = picks([truth.x[0], 1000.0, truth.x[1], 2000.0], [50.0] * 4, [0.9, 0.8, 0.7, 0.6])
    r = evaluate(truth, p, BOX)
    c = r.curves
    np.testing.assert_allclose(c.thresholds, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(c.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # All-point interpolated AP: 1/3 * 1 + 1/3 * 2/3.
    assert r.ap == pytest.approx(5 / 9)
    # AUROC: positives 0.9, 0.7, -inf vs negatives 0.8, 0.6 -> 3 of 6 pairs ordered correctly.
    assert r.auroc == pytest.approx(0.5)
    np.testing.assert_allclose(c.fpr, [0, 0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(c.tpr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    # F1 per threshold 2TP/(k+3): 0.5, 0.4, 0.667, 0.571.
    assert r.best_f1 == pytest.approx(2 / 3) and r.best_f1_threshold == pytest.approx(0.7)
    assert r.recall_at_precision_0_9 == pytest.approx(1 / 3)
    at = evaluate(truth, p, BOX, threshold=0.75)
    assert (at.n_picks, at.n_matched) == (2, 1)
    assert at.precision == 0.5 and at.recall == pytest.approx(1 / 3) and at.f1 == pytest.approx(0.4)
    assert at.ap == pytest.approx(r.ap)  # curves never depend on the threshold

    # The same picks in reverse file order give the same result: only scores set the order.
    reverse = p[np.arange(len(p))[::-1]]
    assert evaluate(truth, reverse, BOX).ap == pytest.approx(5 / 9)


def test_higher_score_claims_the_particle():
    truth = truth_grid(1)
    near, far = truth.x[0] + 0.5, truth.x[0] + 2.0  # both match alone
    r1 = match_picks(truth, picks([near, far], [50, 50], [0.4, 0.6]), BOX)
    assert list(r1) == [-1, 0]


def test_tied_scores_form_one_operating_point():
    truth = truth_grid(2)
    p = picks([truth.x[0], 1000.0, truth.x[1]], [50.0] * 3, [0.5, 0.5, 0.2])
    r = evaluate(truth, p, BOX)
    np.testing.assert_allclose(r.curves.thresholds, [0.5, 0.2])
    np.testing.assert_allclose(r.curves.precision, [1 / 2, 2 / 3])
    assert r.ap == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    # Tie counts one half: positives 0.5, 0.2 vs negative 0.5 -> (0.5 + 0) / 2.
    assert r.auroc == pytest.approx(0.25)


def test_unscored_picks_are_one_operating_point():
    truth = truth_grid(3)
    p = Picks("mic_001.mrc", x=[truth.x[0], truth.x[1], 5000.0], y=[50.0, 50.0, 50.0])
    r = evaluate(truth, p, BOX)
    assert r.ap == pytest.approx(2 / 3 * 2 / 3)
    assert r.best_f1 == pytest.approx(4 / 6)
    assert r.to_dict()["best_f1_threshold"] is None  # +inf: no score to threshold on


def test_empty_cases():
    truth = truth_grid(2)
    none = evaluate(truth, Picks.empty(), BOX)
    assert none.ap == 0.0 and none.recall == 0.0 and none.f1 == 0.0 and none.best_f1 == 0.0
    assert math.isnan(none.precision) and none.n_matched == 0
    # A micrograph listed for evaluation with no truth and no picks: everything undefined, nothing fails.
    r = evaluate(truth, Picks.empty(), BOX, micrographs=["mic_001", "mic_002"])
    empty = r.per_micrograph["mic_002"]
    assert empty.n_truth == 0 and empty.n_picks == 0 and math.isnan(empty.ap) and math.isnan(empty.f1)
    with pytest.raises(ValueError, match="box_px"):
        evaluate(truth, Picks.empty(), 0.0)


def test_picks_on_micrographs_without_truth():
    truth = truth_grid(2, mic="a.mrc")
    p = Picks.concat([picks(truth.x, truth.y, [0.9, 0.8], mic="a_autopick.star"),
                      picks([10.0, 20.0, 30.0], [10.0] * 3, [0.95, 0.5, 0.4], mic="b_autopick.star")])
    # Default: only micrographs named by the truth; b's picks are reported, not scored.
    r = evaluate(truth, p, BOX)
    assert r.ap == pytest.approx(1.0) and r.n_picks == 2
    assert r.skipped_picks == {"b": 3} and r.skipped_truth == {}
    assert list(r.per_micrograph) == ["a"]
    # Declared part of the evaluation: b has no particles, so its picks are false positives.
    r = evaluate(truth, p, BOX, micrographs=["a.mrc", "b.mrc"])
    assert (r.n_picks, r.n_matched, r.n_micrographs) == (5, 2, 2)
    assert r.precision == pytest.approx(2 / 5)
    # Ranked 0.95 FP, 0.9 TP, 0.8 TP, ...: precision envelope 2/3 over the whole recall.
    assert r.ap == pytest.approx(2 / 3)
    b = r.per_micrograph["b"]
    assert b.n_truth == 0 and b.precision == 0.0 and b.f1 == 0.0 and math.isnan(b.ap)
    assert r.skipped_picks == {}


def test_micrographs_matched_by_key_and_kept_apart():
    truth = Picks.concat([truth_grid(2, mic="Movies/m1.mrc"), truth_grid(2, mic="Movies/m2.mrc")])
    # Same coordinates on m2, but the picks say m1 twice: only m1's particles can match.
    p = Picks.concat([picks(truth.x[:2], truth.y[:2], [0.9, 0.8], mic="m1_autopick.star"),
                      picks(truth.x[:2], truth.y[:2], [0.7, 0.6], mic="m1.star")])
    r = evaluate(truth, p, BOX)
    assert r.n_matched == 2 and r.n_truth == 4
    assert r.per_micrograph["m1"].n_matched == 2 and r.per_micrograph["m1"].n_picks == 4
    assert r.per_micrograph["m2"].recall == 0.0
    assert r.recall == 0.5


def test_box_per_micrograph():
    # A 4 px shift: IoU 6/14 = 0.43 with 10 px boxes, 16/24 = 0.67 with 20 px boxes.
    truth = Picks.concat([truth_grid(1, mic="small"), truth_grid(1, mic="large")])
    p = Picks.concat([picks(truth.x[:1] + 4, truth.y[:1], [0.9], mic="small"),
                      picks(truth.x[1:] + 4, truth.y[1:], [0.8], mic="large")])
    r = evaluate(truth, p, {"small.mrc": 10.0, "large": 20.0})
    assert r.per_micrograph["small"].n_matched == 0 and r.per_micrograph["large"].n_matched == 1
    assert r.per_micrograph["small"].box_px == 10.0 and math.isnan(r.box_px)
    assert list(match_picks(truth, p, {"small": 10.0, "large": 20.0})) == [-1, 1]
    assert evaluate(truth, p, {"small": 20.0, "large": 20.0}).box_px == 20.0
    with pytest.raises(ValueError, match="no box size for micrograph 'large'"):
        evaluate(truth, p, {"small": 10.0})
    with pytest.raises(ValueError, match="positive"):
        evaluate(truth, p, {"small": 10.0, "large": -1.0})


def test_threshold_at_precision_thesis_rule():
    truth = truth_grid(3)
    p = picks([truth.x[0], 1000.0, truth.x[1], 2000.0], [50.0] * 4, [0.9, 0.8, 0.7, 0.6])
    # Precision per threshold: 1, 1/2, 2/3, 1/2.
    assert threshold_at_precision(truth, p, BOX, 0.8) == pytest.approx(0.9)
    assert threshold_at_precision(truth, p, BOX, 0.6) == pytest.approx(0.7)
    assert threshold_at_precision(truth, p, BOX, 0.5) == pytest.approx(0.6)
    # Unreachable precision: the lowest threshold at the best precision reached.
    fp_first = picks([1000.0, truth.x[0], 2000.0, truth.x[1]], [50.0] * 4, [0.9, 0.8, 0.7, 0.6])
    assert threshold_at_precision(truth, fp_first, BOX, 0.9) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no true particles"):
        threshold_at_precision(Picks.empty(), p, BOX)
    with pytest.raises(ValueError, match="no picks"):
        threshold_at_precision(truth, Picks.empty(), BOX)


def test_calibrate_threshold_rules():
    from hydrapick.evaluation import calibrate_threshold

    truth = truth_grid(3)
    p = picks([truth.x[0], 1000.0, truth.x[1], 2000.0], [50.0] * 4, [0.9, 0.8, 0.7, 0.6])
    # F1 per threshold: 1/2, 2/5, 2/3, 4/7 -> best at 0.7; the thesis rule at precision 0.8 keeps 0.9.
    assert calibrate_threshold(truth, p, BOX) == pytest.approx(0.7)
    assert calibrate_threshold(truth, p, BOX, "precision", 0.8) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown calibration rule"):
        calibrate_threshold(truth, p, BOX, "recall")
    with pytest.raises(ValueError, match="no picks"):
        calibrate_threshold(truth, Picks.empty(), BOX)


def test_report_json_round_trip(tmp_path):
    truth = truth_grid(3)
    p = picks([truth.x[0], 1000.0], [50.0, 50.0], [0.9, 0.8])
    r = evaluate(truth, p, BOX, micrographs=["mic_001", "mic_002"])
    out = write_report_json(tmp_path / "scores.json", {"x": r}, curves=True, metadata={"box_px": BOX})
    data = json.loads(out.read_text())
    assert data["box_px"] == BOX
    x = data["pickers"]["x"]
    assert x["ap"] == pytest.approx(r.ap) and x["n_matched"] == 1
    assert x["per_micrograph"]["mic_002"]["ap"] is None  # NaN -> null
    assert len(x["curves"]["precision"]) == 2


# --- reference implementation for randomised checks ------------------------------------------------------

def naive_match(truth, p, box, iou_threshold=0.6):
    """Literal thesis matching: picks by descending score, best unmatched overlapping particle."""
    order = sorted(range(len(p)), key=lambda k: (-p.score[k], k))
    taken = set()
    out = [-1] * len(p)
    for k in order:
        best, best_iou = -1, iou_threshold
        for t in range(len(truth)):
            if t in taken or truth.micrograph[t] != p.micrograph[k]:
                continue
            ov = max(0, box - abs(p.x[k] - truth.x[t])) * max(0, box - abs(p.y[k] - truth.y[t]))
            iou = ov / (2 * box * box - ov)
            if iou > best_iou:
                best, best_iou = t, iou
        if best >= 0:
            taken.add(best)
            out[k] = best
    return out


def naive_ap(truth, p, box):
    matched = naive_match(truth, p, box)
    order = sorted(range(len(p)), key=lambda k: -p.score[k])
    points = []  # (recall, precision) at every distinct score
    tp = 0
    for rank, k in enumerate(order):
        tp += matched[k] >= 0
        if rank == len(order) - 1 or p.score[order[rank + 1]] != p.score[k]:
            points.append((tp / len(truth), tp / (rank + 1)))
    ap, prev = 0.0, 0.0
    for i, (rec, _) in enumerate(points):
        ap += (rec - prev) * max(q for _, q in points[i:])
        prev = rec
    return ap


coords = st.lists(st.tuples(st.integers(0, 1), st.floats(0, 40), st.floats(0, 40)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(truth_rows=coords, pick_rows=coords, scores=st.lists(st.integers(0, 4), min_size=12, max_size=12))
def test_matches_reference_implementation(truth_rows, pick_rows, scores):
    truth = Picks([f"m{m}" for m, _, _ in truth_rows], [x for _, x, _ in truth_rows],
                  [y for _, _, y in truth_rows])
    p = Picks([f"m{m}" for m, _, _ in pick_rows], [x for _, x, _ in pick_rows], [y for _, _, y in pick_rows],
              score=np.array(scores[: len(pick_rows)], float))
    got = match_picks(truth, p, BOX)
    # Both break ties the same way (file order for equal scores, lower particle index for equal IoU).
    assert got.tolist() == naive_match(truth, p, BOX)
    assert len(set(got[got >= 0].tolist())) == int((got >= 0).sum())  # each particle at most once
    everywhere = evaluate(truth, p, BOX, micrographs=["m0", "m1"])  # the reference scores every pick
    assert everywhere.ap == pytest.approx(naive_ap(truth, p, BOX))


def test_many_picks_stay_consistent():
    rng = np.random.default_rng(1)
    n_mic, per = 40, 120
    mic = np.repeat([f"m{i}" for i in range(n_mic)], per)
    truth = Picks(mic, rng.uniform(0, 4000, n_mic * per), rng.uniform(0, 4000, n_mic * per))
    found = rng.random(len(truth)) < 0.7
    p = Picks(np.r_[mic[found], mic[:500]], np.r_[truth.x[found] + rng.normal(0, 2, found.sum()),
                                                  rng.uniform(0, 4000, 500)],
              np.r_[truth.y[found], rng.uniform(0, 4000, 500)], score=rng.random(found.sum() + 500))
    r = evaluate(truth, p, 64.0)
    assert r.n_matched == sum(m.n_matched for m in r.per_micrograph.values())
    assert r.n_truth == len(truth) and r.n_picks == len(p)
    assert 0.69 * len(truth) < r.n_matched <= len(truth)
    assert 0 < r.ap <= r.curves.recall.max() + 1e-12


def test_flip_y_per_micrograph():
    p = Picks(["a", "b"], x=[1.0, 2.0], y=[0.0, 10.0])
    f = flip_y_per_micrograph(p, {"a.mrc": 100, "b": 50})
    np.testing.assert_allclose(f.y, [99.0, 39.0])
    with pytest.raises(ValueError, match="'b'"):
        flip_y_per_micrograph(p, {"a": 100})


STAR_HEADER = "\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"


def test_load_coordinates_folder_keeps_empty_micrographs(tmp_path):
    (tmp_path / "m1.star").write_text(STAR_HEADER + "10 20\n30 40\n")
    (tmp_path / "m2.star").write_text(STAR_HEADER)
    (tmp_path / "notes.md").write_text("not coordinates")
    loaded = load_coordinates(tmp_path)
    assert len(loaded.picks) == 2
    assert loaded.micrographs == ["m1", "m2"]
    flipped = load_coordinates(tmp_path, flip_y=True, image_height={"m1": 100})
    np.testing.assert_allclose(flipped.picks.y, [79.0, 59.0])


def test_drop_near_edge_keeps_what_picking_keeps():
    from hydrapick.evaluation import drop_near_edge

    picks = Picks(micrograph=np.array(["a.mrc", "a.mrc", "a.mrc", "b", "b"]),
                  x=np.array([9.5, 9.4, 89.4, 50.0, 50.0]), y=np.array([50.0, 50.0, 50.0, 9.0, 69.6]),
                  score=np.ones(5))
    # a: 100 columns, border 10 -> 9.5 <= x < 89.5; b: 80 rows, border 10 -> 9.5 <= y < 69.5.
    kept = drop_near_edge(picks, {"a": (100, 100), "b": (80, 120)}, 10.0)
    assert kept.x.tolist() == [9.5, 89.4]
    kept = drop_near_edge(picks, {"a": (100, 100), "b": (80, 120)}, {"a": 0.0, "b": 0.0})
    assert len(kept) == 5
    with pytest.raises(ValueError, match="size of micrograph 'b'"):
        drop_near_edge(picks, {"a": (100, 100)}, 10.0)
