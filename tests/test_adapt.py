"""Label-free adaptation (`hydrapick pick --adapt`): seeds, the ignore mask, the self-check, the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_picking import DIAMETER_A, TINY, match_fraction, trained_checkpoint, write_blob_micrographs

from hydrapick.checkpoint import load_checkpoint
from hydrapick.cli import cli
from hydrapick.config import AdaptConfig
from hydrapick.model.anchors import anchor_centres, build_targets
from hydrapick.model.losses import detection_loss, ignore_mask
from hydrapick.picking import pick
from hydrapick.picks import Picks
from hydrapick.training.adapt import (
    count_threshold,
    interpolate_heads,
    recovered,
    seed,
    self_check,
    spread,
)

FAST = AdaptConfig(micrographs=4, rounds=1, steps=30, batch_size=4, crop_px=96)


def test_seed_takes_the_best_fraction_and_leaves_the_rest_uncertain():
    picks = Picks("m", np.arange(6.0), np.zeros(6), np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.2]))
    particles, uncertain = seed(picks, n_particles=4, fraction=0.75)  # 3 particles
    assert sorted(particles[:, 0].tolist()) == [0.0, 2.0, 4.0]
    assert sorted(uncertain[:, 0].tolist()) == [1.0, 3.0, 5.0]


def test_spread_keeps_first_and_last():
    assert spread(list(range(10)), 3) == [0, 4, 9] or spread(list(range(10)), 3) == [0, 5, 9]
    assert spread([1, 2], 5) == [1, 2]


def test_count_threshold_and_recovery():
    picks = [Picks("a", np.zeros(3), np.zeros(3), np.array([0.9, 0.5, 0.1])),
             Picks("b", np.zeros(2), np.zeros(2), np.array([0.7, 0.3]))]
    assert count_threshold(picks, 3) == pytest.approx(0.5)
    assert count_threshold(picks, 99) == pytest.approx(0.1)
    ref = Picks("a", np.array([0.0, 10.0, 50.0]), np.zeros(3))
    found = Picks("a", np.array([1.0, 49.0]), np.zeros(2))
    assert recovered(ref, found, radius_px=2.0) == pytest.approx(2 / 3)


def test_interpolated_head_is_the_weighted_mean_of_the_two():
    from hydrapick.model import HydraPicker

    model = HydraPicker(TINY)
    model.add_head("adapted")
    with torch.no_grad():
        for p in model.heads["adapted"].parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.heads["adapted"].parameters()]
    interpolate_heads(model, "adapted", "generic", 0.25)
    for p, b, g in zip(model.heads["adapted"].parameters(), before, model.heads["generic"].parameters(),
                       strict=True):
        assert torch.allclose(p, 0.25 * b + 0.75 * g)
        assert torch.allclose(p, g + 0.25)  # the copy moved by 1 keeps a quarter of the move


def test_ignored_anchors_add_no_classification_loss():
    anchors = anchor_centres(64, 64, TINY)
    centres = [torch.tensor([[20.0, 20.0]])]
    labels, offsets, positive = build_targets(anchors, centres, TINY)
    outputs = torch.zeros((1, anchors.shape[0], 3))
    outputs[0, :, 2] = 3.0  # every anchor says "particle": background anchors are expensive
    full = detection_loss(outputs, labels, offsets, positive)["cls"]
    far = torch.tensor([[50.0, 50.0]])
    mask = ignore_mask(anchors, [far], radius_px=12.0)
    assert mask is not None and mask.sum() > 0 and not (mask & positive).any()
    masked = detection_loss(outputs, labels, offsets, positive, ignore=mask)["cls"]
    assert masked < full
    # Ignoring everything but the positives leaves only their loss.
    only_pos = detection_loss(outputs, labels, offsets, positive, ignore=~positive)["cls"]
    assert only_pos < masked
    assert ignore_mask(anchors, [torch.zeros((0, 2))], 5.0) is None


def _picks(xs, scores):
    xs = np.asarray(xs, dtype=float)
    return Picks("m", xs, np.full(len(xs), 30.0), np.asarray(scores, dtype=float))


def test_self_check_keeps_an_agreeing_head_and_rejects_a_drifting_one():
    generic = [_picks([10, 60, 110, 160], [0.9, 0.8, 0.7, 0.2])]
    agreeing = [_picks([11, 61, 109, 200], [0.9, 0.9, 0.8, 0.1])]
    kept, reason, report = self_check(generic, agreeing, [3], [0], 0.5, AdaptConfig(), TINY)
    assert kept, reason
    assert report["seed_recovery"] == 1.0 and report["count_ratio"] == 1.0
    # A head that moved to other places (say, the carbon edge) finds none of the generic head's picks.
    drifting = [_picks([300, 350, 400], [0.9, 0.9, 0.9])]
    kept, reason, report = self_check(generic, drifting, [3], [0], 0.5, AdaptConfig(), TINY)
    assert not kept and "surest picks" in reason and report["seed_recovery"] == 0.0
    # A head that picks far too many.
    greedy = [_picks(list(range(0, 600, 10)), np.full(60, 0.9))]
    kept, reason, _ = self_check(generic, greedy, [3], [0], 0.5, AdaptConfig(), TINY)
    assert not kept and "expected number" in reason
    # A head that keeps the seeds and drops every other candidate under the floor (the count-prior
    # objective's failure on simulated targets): it recovers the seeds, but ranks nothing else.
    many = [_picks([10, 60, 110, 160, 210, 260, 310, 360], [0.9, 0.8, 0.7, 0.2, 0.1, 0.1, 0.1, 0.1])]
    narrow = [_picks([10, 60, 110], [0.9, 0.9, 0.9])]
    kept, reason, report = self_check(many, narrow, [3], [0], 0.5, AdaptConfig(), TINY)
    assert not kept and "candidates" in reason and report["candidate_ratio"] == pytest.approx(3 / 8)
    kept, _, _ = self_check(many, narrow, [3], [0], 0.5, AdaptConfig(min_candidate_ratio=0.3), TINY)
    assert kept


def test_pick_adapt_learns_a_head_saves_it_and_picks_with_it(tmp_path):
    truth = write_blob_micrographs(tmp_path / "mics", 4, pixel_size_A=2.0, particles=6, seed=5)
    saved = tmp_path / "adapted.pt"
    report = pick(sorted(truth), tmp_path / "picks.star", model=trained_checkpoint(), diameter_A=DIAMETER_A,
                  adapt=FAST, adapt_output=saved)
    info = report.adaptation
    assert info is not None and len(info["micrographs"]) == 4 and len(info["held_out"]) == 1
    assert info["seeds"][0]["particles"] > 0 and info["estimated_particles_per_micrograph"] > 0
    assert info["kept"], info["reason"]
    assert report.threshold == pytest.approx(info["threshold"])
    for name, pts in truth.items():
        found = [p for n, p in report.picks.by_micrograph() if n.endswith(Path(name).name)][0]
        recall, precision = match_fraction(found, pts, 0.15 * DIAMETER_A / 2.0)
        assert recall >= 0.8 and precision >= 0.8, (name, recall, precision)
    model, meta = load_checkpoint(saved)
    assert "adapted" in model.heads and meta["thresholds"]["adapted"] == pytest.approx(info["threshold"])
    assert meta["adaptation"]["micrographs"] == info["micrographs"]
    # Learnt at the diameter the run picked at (the scale calibration's), and recorded with the head.
    assert meta["diameters_A"]["adapted"] == pytest.approx(report.calibration.diameter_A)
    # A later run picks with the saved head, without adapting again, and finds the same picks.
    # Picked again at the diameter the head records (the one the run measured), without measuring anew.
    again = pick(sorted(truth), None, model=str(saved), head="adapted", calibrate=False)
    assert again.adaptation is None
    assert len(again.picks) == len(report.picks)
    assert np.allclose(np.sort(again.picks.x), np.sort(report.picks.x))


@pytest.mark.parametrize("tail", [0, 1])
def test_a_fine_tuned_head_teaches_the_adaptation_when_picked_with(tmp_path, tail):
    # Self-training after fine-tuning: `pick --model FT --head ft --adapt` learns from head ft's picks.
    # The generic head here is silenced (it picks nothing), so only a run taught by ft can learn anything;
    # ft with its own copy of the body's last block (finetune --train-body-blocks) passes it on.
    import copy

    from hydrapick.checkpoint import save_checkpoint

    model, meta = load_checkpoint(trained_checkpoint())
    model.add_head("ft", body_tail_blocks=tail)
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        model.heads["generic"].output.bias[2] = -30.0
    meta["thresholds"] = {"generic": meta["thresholds"]["generic"], "ft": meta["thresholds"]["generic"]}
    meta["diameters_A"] = {"generic": DIAMETER_A, "ft": DIAMETER_A}
    checkpoint = save_checkpoint(tmp_path / "ft.pt", model, meta)
    truth = write_blob_micrographs(tmp_path / "mics", 4, pixel_size_A=2.0, particles=6, seed=5)
    saved = tmp_path / "adapted.pt"
    report = pick(sorted(truth), None, model=str(checkpoint), head="ft", adapt=FAST, adapt_output=saved,
                  calibrate=False)
    info = report.adaptation
    assert info["base_head"] == "ft" and info["kept"], info["reason"]
    assert info["seeds"][0]["particles"] > 0
    found = report.picks
    assert len(found) >= 0.8 * sum(len(p) for p in truth.values())
    adapted = load_checkpoint(saved)[0]
    assert len(adapted.heads["adapted"].body_tail) == tail
    # The teacher and every other head are as they were.
    for name in ("ft",):
        for p, q in zip(adapted.heads[name].parameters(), silenced.heads[name].parameters(), strict=True):
            assert torch.equal(p, q)
    taught_by_generic = pick(sorted(truth), None, model=str(checkpoint), adapt=FAST, calibrate=False)
    assert not taught_by_generic.adaptation["kept"]
    assert "no particles to learn from" in taught_by_generic.adaptation["reason"]


def test_pick_adapt_falls_back_to_the_generic_head_when_the_check_fails(tmp_path):
    # Micrographs of empty ice: the generic head finds nothing, so there is nothing to learn from.
    from hydrapick.io import write_micrograph

    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"ice_{i}.mrc")
        write_micrograph(paths[-1], rng.normal(size=(240, 320)).astype(np.float32), 2.0)
    # At the typed diameter (calibration off: on noise the tiny test model's criterion clears its floor at
    # some smaller size, where it then sees blobs; calibration on empty ice is test_calibrate's).
    plain = pick([str(p) for p in paths], None, model=trained_checkpoint(), diameter_A=DIAMETER_A,
                 calibrate=False)
    report = pick([str(p) for p in paths], None, model=trained_checkpoint(), diameter_A=DIAMETER_A,
                  adapt=FAST, adapt_output=tmp_path / "never.pt", calibrate=False)
    assert report.adaptation is not None and not report.adaptation["kept"]
    assert "no particles to learn from" in report.adaptation["reason"]
    assert report.threshold == pytest.approx(plain.threshold)
    assert len(report.picks) == len(plain.picks)
    assert not (tmp_path / "never.pt").exists()


def test_cli_adapt_summary_and_option_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 3, pixel_size_A=2.0, particles=6, seed=7)
    base = ["pick", "Movies/*.mrc", "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A)]
    result = CliRunner().invoke(cli, base + ["-o", "p.star", "--adapt-output", "a.pt"])
    assert result.exit_code == 2 and "need --adapt" in result.output
    result = CliRunner().invoke(cli, base + ["-o", "p.star", "--adapt", "--adapt-micrographs", "3"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "adaptation: learnt from 3 micrographs (1 held out" in result.output
    assert "head used" in result.output or "generic head kept" in result.output


def test_frozen_head_blocks_score_alike_and_only_the_later_blocks_train():
    from hydrapick.config import FinetuneConfig, ModelConfig
    from hydrapick.model import GENERIC_HEAD, HydraPicker
    from hydrapick.training.datasets import MicrographSample
    from hydrapick.training.heads import compute_features, score_maps, train_head

    # Stem stride 4 and anchor stride 16: the first head block keeps the body's resolution.
    mc = ModelConfig.light(stem_stride=4, body_channels=8, body_blocks=1, head_channels=(8, 16, 32),
                           group_norm_groups=4, head_dropout=0.0)
    torch.manual_seed(0)
    model = HydraPicker(mc)
    image = torch.randn(128, 128)
    sample = MicrographSample(name="m", source="m.mrc", image=image, centres=torch.tensor([[40.0, 40.0],
                              [90.0, 70.0]]), pixel_size_A=1.0, diameter_A=64.0)
    cpu = torch.device("cpu")
    whole = compute_features(model, [sample], device=cpu, dtype=torch.float32)
    cached = compute_features(model, [sample], device=cpu, dtype=torch.float32, frozen_blocks=1)
    assert cached[0].start_block == 1 and cached[0].features.shape == (8, 32, 32)
    # The generic head scores the same from either cache (the first block runs once instead of per pass).
    _, a = score_maps(model, GENERIC_HEAD, whole, device=cpu)
    _, b = score_maps(model, GENERIC_HEAD, cached, device=cpu)
    assert len(a) == len(b) and np.allclose(a.score, b.score, atol=1e-3)
    before = {k: v.clone() for k, v in model.heads[GENERIC_HEAD].state_dict().items()}
    train_head(model, "adapted", cached, FinetuneConfig(steps=3, batch_size=2, crop_px=64, lr=1e-2,
                                                        train_body_blocks=0), device=cpu)
    after = model.heads["adapted"].state_dict()
    assert torch.equal(after["blocks.0.weight"], before["blocks.0.weight"])  # frozen, as cached
    assert not torch.equal(after["blocks.4.weight"], before["blocks.4.weight"])
    assert not torch.equal(after["output.weight"], before["output.weight"])
    with pytest.raises(ValueError, match="frozen_blocks"):  # block 2 halves the resolution
        compute_features(model, [sample], device=cpu, frozen_blocks=2)


def test_count_penalty_is_least_at_the_prior_count():
    from hydrapick.model.losses import count_penalty

    def penalty(p, n=400, prior=0.05):
        return float(count_penalty(torch.full((n,), float(np.log(p / (1 - p)))), prior))

    # Predicting the prior's share of particles costs least; too many or too few cost more, the further
    # the more.
    assert penalty(0.05) < penalty(0.1) < penalty(0.3)
    assert penalty(0.05) < penalty(0.02) < penalty(0.005)
    assert penalty(0.05) == pytest.approx(0.0, abs=0.05)
    # It pulls scores down where the head predicts too many particles.
    logits = torch.full((400,), 0.0, requires_grad=True)
    count_penalty(logits, 0.05).backward()
    assert (logits.grad > 0).all()
    assert float(count_penalty(torch.zeros(0), 0.1)) == 0.0


def test_positive_unlabelled_loss_scores_seeds_and_leaves_other_anchors_to_the_count():
    from hydrapick.config import FinetuneConfig
    from hydrapick.training.heads import positive_unlabelled_loss

    anchors = anchor_centres(64, 64, TINY)
    centres = [torch.tensor([[20.0, 20.0]])]
    outputs = torch.zeros((1, anchors.shape[0], 3))
    outputs[0, :, 2] = -6.0
    config = FinetuneConfig(unlabelled_ratio=1.0)
    quiet = positive_unlabelled_loss(outputs, centres, anchors, TINY, config)
    # Everything off the seed scored as particle: no classification loss there, but the count penalty.
    loud = outputs.clone()
    _, _, positive = build_targets(anchors, centres, TINY)
    loud[0, ~positive[0], 2] = 6.0
    parts = positive_unlabelled_loss(loud, centres, anchors, TINY, config)
    assert float(parts["cls"]) == pytest.approx(float(quiet["cls"]))
    assert float(parts["count"]) > float(quiet["count"]) + 1.0
    assert float(parts["loss"]) > float(quiet["loss"])
    with pytest.raises(ValueError, match="unlabelled_ratio"):
        FinetuneConfig(unlabelled_ratio=-1.0)


def test_pick_adapt_with_the_count_prior_objective(tmp_path):
    truth = write_blob_micrographs(tmp_path / "mics", 4, pixel_size_A=2.0, particles=6, seed=5)
    config = AdaptConfig(micrographs=4, rounds=1, steps=30, batch_size=4, crop_px=96, objective="count-prior")
    report = pick(sorted(truth), None, model=trained_checkpoint(), diameter_A=DIAMETER_A, adapt=config)
    info = report.adaptation
    assert info["kept"], info["reason"]
    for name, pts in truth.items():
        found = [p for n, p in report.picks.by_micrograph() if n.endswith(Path(name).name)][0]
        recall, precision = match_fraction(found, pts, 0.15 * DIAMETER_A / 2.0)
        assert recall >= 0.8 and precision >= 0.8, (name, recall, precision)
    with pytest.raises(ValueError, match="objective"):
        AdaptConfig(objective="nnpu")
    result = CliRunner().invoke(cli, ["pick", str(tmp_path / "mics"), "--diameter", str(DIAMETER_A),
                                      "--adapt-objective", "count-prior", "-o", str(tmp_path / "p.star")])
    assert result.exit_code == 2 and "need --adapt" in result.output


def test_adapt_on_too_few_micrographs_keeps_the_generic_head_and_claims_no_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 2, pixel_size_A=2.0, particles=6, seed=7)
    plain = pick(["Movies/mic_000.mrc"], None, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    report = pick(["Movies/mic_000.mrc"], None, model=trained_checkpoint(), diameter_A=DIAMETER_A,
                  adapt=FAST, adapt_output="adapted.pt")
    info = report.adaptation
    # One micrograph leaves none to hold out: nothing can be checked, so nothing adapted is used.
    assert not info["kept"] and info["held_out"] == [] and "too few" in info["reason"]
    assert not Path("adapted.pt").exists()
    assert report.threshold == pytest.approx(plain.threshold) and len(report.picks) == len(plain.picks)
    for given in (["Movies/mic_000.mrc"], ["Movies/mic_000.mrc", "Movies/mic_001.mrc"]):
        result = CliRunner().invoke(cli, ["pick", *given, "--model", trained_checkpoint(), "--diameter",
                                          str(DIAMETER_A), "-o", "p.star", "--adapt"])
        assert result.exit_code == 0, result.output
        assert "generic head kept" in result.output and "too few" in result.output
        assert "held-out micrographs" not in result.output.replace("needs", "")
    # Asking to learn from fewer than 3 leaves nothing to check either: refused at once.
    with pytest.raises(ValueError, match="micrographs"):
        AdaptConfig(micrographs=2)
    result = CliRunner().invoke(cli, ["pick", "Movies", "-o", "p.star", "--adapt", "--adapt-micrographs", "2",
                                      "--diameter", str(DIAMETER_A)])
    assert result.exit_code == 2


def test_pick_adapt_leaves_out_an_unreadable_micrograph_and_picks_the_rest(tmp_path):
    truth = write_blob_micrographs(tmp_path / "mics", 5, pixel_size_A=2.0, particles=6, seed=5)
    bad = tmp_path / "mics" / "mic_004.mrc"  # the last one: adaptation's spread always takes it
    bad.write_bytes(bad.read_bytes()[:5000])
    report = pick(sorted(truth), None, model=trained_checkpoint(), diameter_A=DIAMETER_A, adapt=FAST)
    # Before, the truncated micrograph's header read ended the whole run; now another stands in for it,
    # and it is reported as the one micrograph not picked.
    learnt = [Path(m.split("#")[0]).name for m in report.adaptation["micrographs"]]
    assert len(learnt) == 4 and "mic_004.mrc" not in learnt
    assert [Path(p).name for p, _ in report.failures] == ["mic_004.mrc"]
    assert report.n_picked == 4
