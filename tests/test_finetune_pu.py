"""Fine-tuning on sparse labels (issue 35): the non-negative PU risk, the prior it is given, the calibration
that does not count unlabelled particles as false positives, and a PU run against the same run that takes
every unlabelled place for background."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_picking import DIAMETER_A, TINY, trained_checkpoint, write_blob_micrographs

from hydrapick.checkpoint import load_checkpoint
from hydrapick.config import FinetuneConfig
from hydrapick.evaluation import evaluate
from hydrapick.io import write_coordinates
from hydrapick.model.losses import focal_loss, non_negative_pu_loss
from hydrapick.picks import Picks
from hydrapick.training.calibration import sparse_calibration_report
from hydrapick.training.finetune import finetune_head, load_labelled
from hydrapick.training.heads import FeatureMap, compute_features, score_maps, unlabelled_share

CPU = torch.device("cpu")


def test_pu_risk_with_no_unlabelled_particles_is_the_focal_loss():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.5]])
    positive = torch.tensor([[True, False, False, False, True]])
    objective, value = non_negative_pu_loss(logits, positive, ~positive, 0.0)
    labels = positive.float()
    assert torch.allclose(objective, focal_loss(logits, labels) / 2) and torch.allclose(value, objective)


def test_pu_risk_by_hand_and_its_non_negative_correction():
    def l1(g):  # focal loss of a particle (alpha 0.25, gamma 2)
        p = torch.sigmoid(g)
        return 0.25 * (1 - p) ** 2 * -torch.log(p)

    def l0(g):  # of background
        p = torch.sigmoid(g)
        return 0.75 * p ** 2 * -torch.log(1 - p)

    g = torch.tensor([[1.0, 1.5, -2.0, -1.0]])
    positive = torch.tensor([[True, False, False, False]])
    share = 0.25  # one particle anchor among the three unlabelled ones
    objective, value = non_negative_pu_loss(g, positive, ~positive, share)
    particles = 1 + share * 3
    background = l0(g[0, 1:]).sum() - share * 3 * l0(g[0, 0])
    expected = (particles * l1(g[0, 0]) + background) / particles
    assert background > 0 and torch.allclose(value, expected) and torch.allclose(objective, expected)
    # A labelled particle scored far above unlabelled anchors that must hold a particle: the estimated
    # background loss turns negative; its value is clipped at 0 and the step ascends it instead.
    g = torch.tensor([[4.0, -6.0, -6.0, -6.0]], requires_grad=True)
    objective, value = non_negative_pu_loss(g, positive, ~positive, share)
    assert torch.allclose(value, l1(g[0, 0]).detach())  # the particle term alone
    objective.backward()
    assert (g.grad[0, 1:] < 0).all()  # unlabelled scores pushed up ...
    assert g.grad[0, 0] > 0  # ... and the labelled particle's pushed down
    assert not torch.allclose(objective, value)


def test_unlabelled_share_counts_the_missing_particles():
    centres = torch.tensor([[40.0, 40.0], [100.0, 40.0]])
    maps = [FeatureMap("m", torch.zeros(1, 60, 80), centres, (120, 160))]
    assert unlabelled_share(maps, TINY, 2.0) == 0.0
    two_missing = unlabelled_share(maps, TINY, 4.0)
    assert 0 < two_missing < 0.5
    assert unlabelled_share(maps, TINY, 6.0) == pytest.approx(2 * two_missing)


def test_sparse_calibration_takes_the_precision_from_the_expected_count():
    # 10 particles per micrograph, 3 labelled; the picks find all 10, then 5 junk picks score lower.
    xy = np.stack([np.arange(10) * 90.0 + 50, np.full(10, 100.0)], axis=1)
    junk = np.stack([np.arange(5) * 90.0 + 50, np.full(5, 600.0)], axis=1)
    picks = Picks("a", np.r_[xy[:, 0], junk[:, 0]], np.r_[xy[:, 1], junk[:, 1]],
                  np.r_[np.linspace(0.9, 0.6, 10), np.linspace(0.5, 0.3, 5)])
    labelled = [1, 5, 9]  # a random subset: top, middle and last of the particles
    truth = Picks("a", xy[labelled, 0], xy[labelled, 1])
    report = sparse_calibration_report(truth, picks, ["a"], 40.0, "f1", 0.8, 10.0)
    # Every particle kept, no junk: the threshold of the tenth particle, estimated precision 1.
    assert report["threshold"] == pytest.approx(0.6) and report["recall"] == 1.0
    assert report["precision"] == pytest.approx(1.0) and report["ap"] is None
    # Against the labels alone, 7 of the 10 particles would be false positives.
    from hydrapick.training.calibration import calibration_report

    plain = calibration_report(truth, picks, ["a"], 40.0, "precision", 0.8)
    assert plain["threshold"] > 0.6


def _blobs(folder: Path, n: int, seed: int, fraction: float):
    """Labelled blob micrographs at the tiny model's scale, ``fraction`` of each one's blobs labelled."""
    truth = write_blob_micrographs(folder / "mics", n, particles=8, seed=seed)
    rng = np.random.default_rng(seed)
    for path, pts in truth.items():
        kept = pts[np.sort(rng.choice(len(pts), max(1, round(fraction * len(pts))), replace=False))]
        write_coordinates(Picks(x=kept[:, 0], y=kept[:, 1]), folder / "coords" / (Path(path).stem + ".star"),
                          "star", combined=False)
    return load_labelled([str(folder / "mics")], [str(folder / "coords")], DIAMETER_A, TINY)


def test_pu_on_sparse_labels_beats_taking_unlabelled_places_for_background(tmp_path):
    """A quarter of each micrograph's blobs labelled. Taught as background, the other blobs drag every
    blob's score down; the PU risk keeps them particles. Scored on held-out micrographs, fully labelled,
    at one fixed threshold (the calibration differs between the runs and is not what is compared)."""
    checkpoint = trained_checkpoint()
    train = _blobs(tmp_path / "train", 3, 11, 0.25)
    test = _blobs(tmp_path / "test", 4, 12, 1.0)
    assert [len(s.centres) for s in train] == [2, 2, 2]
    config = FinetuneConfig(steps=150, crop_px=96, batch_size=4, lr=1e-2, cv_folds=0)
    # Cached before the body blocks the new head trains its own copy of.
    maps = compute_features(load_checkpoint(checkpoint)[0], test, device=CPU, dtype=torch.float32,
                            depth=TINY.body_blocks - config.train_body_blocks)
    names, box = [m.name for m in maps], TINY.particle_diameter_px
    scores = {}
    for run, cfg in (("background", config), ("pu", replace(config, expected_particles=8.0))):
        model, _ = load_checkpoint(checkpoint)
        _, report = finetune_head(model, "new", train, config=cfg, device=CPU, generic_threshold=0.2)
        assert report["sparse"]["sparse"] == (run == "pu")
        scores[run] = evaluate(*score_maps(model, "new", maps, device=CPU), box, micrographs=names,
                               threshold=0.5)
    assert scores["pu"].ap > 0.9
    assert scores["pu"].recall > scores["background"].recall + 0.25, {k: v.recall for k, v in scores.items()}


def test_expected_particles_estimated_from_the_generic_heads_recall_of_the_labels(tmp_path):
    """2 of 8 blobs labelled per micrograph: the generic head's confident picks over the share of the
    labels they find estimate the 8, not the 2 labelled."""
    train = _blobs(tmp_path / "train", 3, 11, 0.25)
    model, _ = load_checkpoint(trained_checkpoint())
    config = FinetuneConfig(steps=1, crop_px=96, cv_folds=0, sparse=True)
    _, report = finetune_head(model, "new", train, config=config, device=CPU, generic_threshold=0.2)
    sparse = report["sparse"]
    assert sparse["sparse"] and sparse["source"].startswith("generic head's confident picks")
    assert 6.5 <= sparse["expected_particles"] <= 9.5, report
    assert 0 < sparse["unlabelled_share"] < 0.5
