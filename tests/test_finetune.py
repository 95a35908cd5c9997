"""Few-shot fine-tuning on cached body features: alignment, the AP gain on an unseen specimen, files in,
checkpoint out, calibration paths and the finetune command."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_training import simulated_manifest, simulation_config

from hydrapick.checkpoint import load_checkpoint
from hydrapick.cli import cli
from hydrapick.config import FinetuneConfig, ModelConfig, TrainConfig
from hydrapick.evaluation import evaluate
from hydrapick.io import read_coordinate_folder
from hydrapick.model import GENERIC_HEAD
from hydrapick.picks import Picks
from hydrapick.simulation import procedural_structure, simulate_dataset, simulate_micrograph
from hydrapick.training import ManifestError, train
from hydrapick.training.datasets import dataset_from_arrays, load_datasets
from hydrapick.training.finetune import FinetuneError, finetune, finetune_head
from hydrapick.training.heads import FeatureMap, compute_features, crop_cells, feature_batch, score_maps

MODEL = ModelConfig(body_channels=16, body_blocks=1, group_norm_groups=4, head_channels=(16, 32),
                    stem_stride=2, anchor_stride=8, particle_diameter_px=32)
FAST = FinetuneConfig(steps=60, crop_px=128, batch_size=4, lr=3e-3)
CPU = torch.device("cpu")




@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small model pretrained on three simulated specimens; ring-shaped particles stay unseen."""
    folder = tmp_path_factory.mktemp("base")
    manifest = simulated_manifest(folder, {"globular": ("globular", 200.0, 1, 5),
                                           "elongated": ("elongated", 300.0, 2, 5),
                                           "multidomain": ("multidomain", 300.0, 6, 5)})
    config = TrainConfig(crop_px=96, batch_size=3, steps_per_epoch=10, pretrain_epochs=6, multihead_epochs=0,
                         restart_epochs=6, pretrain_lr=3e-3, max_valid_tiles=4)
    train(load_datasets(manifest, MODEL), folder / "run", config=config, model_config=MODEL, device="cpu")
    return folder / "run" / "model.pt"


UNSEEN = procedural_structure("ring", 3, mass_kDa=400.0)


def _unseen(seeds):
    """Micrographs of the unseen specimen at the model's scale."""
    sims = [simulate_micrograph(simulation_config(), 300 + i, structure=UNSEEN) for i in seeds]
    return dataset_from_arrays("new", [s.image for s in sims], [s.picks for s in sims],
                               [s.pixel_size_A for s in sims], UNSEEN.diameter_A, MODEL).train


def test_feature_crops_start_on_anchor_cells():
    cell = MODEL.anchor_stride // MODEL.stem_stride  # 4 feature cells per anchor
    h, w = 37, 50
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    centres = torch.tensor([[40.0, 30.0], [2.0, 70.0], [95.0, 3.0]])
    maps = [FeatureMap("m", torch.stack([xx, yy]), centres, (2 * h, 2 * w))]
    cells = crop_cells(maps, 64, MODEL)
    assert cells == 32 and cells % cell == 0
    rng = np.random.default_rng(0)
    origins = set()
    for _ in range(30):
        crops, crop_centres, _ = feature_batch(maps, [0], cells, MODEL, rng)
        assert crops.shape == (1, 2, 32, 32)
        fx, fy = int(crops[0, 0, 0, 0]), int(crops[0, 1, 0, 0])
        assert fx % cell == 0 and fy % cell == 0
        origins.add((fx, fy))
        # Centres move by the crop's origin in input pixels (feature cell j sits on input pixel 2j).
        shifted = centres - torch.tensor([2.0 * fx, 2.0 * fy])
        inside = ((shifted >= -0.5) & (shifted < 63.5)).all(dim=1)
        assert torch.equal(crop_centres[0], shifted[inside])
    assert len(origins) > 3
    assert crop_cells(maps, 400, MODEL) == 36  # no larger than the map, still whole cells
    with pytest.raises(FinetuneError, match="too small"):
        crop_cells([FeatureMap("s", torch.zeros(2, 3, 3), centres, (6, 6))], 64, MODEL)


def test_finetune_improves_ap_on_an_unseen_specimen(base):
    model, meta = load_checkpoint(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, test_set = _unseen(range(3)), _unseen(range(3, 6))
    threshold, report = finetune_head(model, "ring", train_set, config=FAST, device="cpu",
                                      generic_threshold=meta["thresholds"][GENERIC_HEAD])
    # Body, generic head: untouched. The new head: trained away from its generic initialisation.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    moved = [not torch.equal(after[f"heads.ring.{k}"], before[f"heads.generic.{k}"])
             for k in dict(model.heads[GENERIC_HEAD].named_parameters())]
    assert all(moved)
    assert model.head_names == ["ring"] and not any(p.requires_grad for p in model.parameters())
    # AP on 3 other micrographs of the unseen specimen, generic head vs the fine-tuned one.
    # Cached before the body blocks the new head has its own copy of; the generic head runs the shared ones.
    maps = compute_features(model, test_set, device=CPU, dtype=torch.float32, depth=model.head_depth("ring"))
    names = [m.name for m in maps]
    box = MODEL.particle_diameter_px
    ap = {head: evaluate(*score_maps(model, head, maps, device=CPU), box, micrographs=names).ap
          for head in (GENERIC_HEAD, "ring")}
    assert ap["ring"] > ap[GENERIC_HEAD] + 0.1, ap
    assert report["source"] == "2-fold cross-validation" and 0 < threshold < 1
    # The threshold is the cross-validated one, and it keeps real particles on the held-out folds.
    assert threshold == report["threshold"] and report["n_truth"] > 0
    assert report["precision"] > 0 and report["recall"] > 0
    assert report["ap"] > report["generic_ap"]


def _simulate(folder, n, seed):
    simulate_dataset(folder, n, simulation_config(), structure=UNSEEN, seed=seed, prefix=folder.name)
    return folder


def test_finetune_command_writes_a_checkpoint_for_picking(base, tmp_path):
    tr, va = _simulate(tmp_path / "tr", 3, 30), _simulate(tmp_path / "va", 2, 31)
    mics = sorted(str(p) for p in (tr / "micrographs").glob("*.mrc"))
    out = tmp_path / "ft.pt"
    diameter = f"{UNSEEN.diameter_A:.1f}"
    result = CliRunner().invoke(cli, [
        "finetune", mics[0], mics[1], "--micrographs", mics[2], "--coordinates", str(tr / "coordinates"),
        "--name", "ring", "--diameter", diameter, "--model", str(base), "-o", str(out),
        "--valid-micrographs", str(va / "micrographs" / "*.mrc"), "--valid-coordinates",
        str(va / "coordinates"), "--steps", "40", "--crop", "128", "--lr", "0.003", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "head 'ring' written to" in result.output and "held-out" in result.output
    model, meta = load_checkpoint(out)
    _, base_meta = load_checkpoint(base)
    assert model.head_names == ["ring"]
    assert meta["diameters_A"] == {GENERIC_HEAD: None, "ring": float(diameter)}
    assert meta["thresholds"][GENERIC_HEAD] == base_meta["thresholds"][GENERIC_HEAD]
    assert 0 < meta["thresholds"]["ring"] < 1
    info = meta["training"]["finetune"]["ring"]
    assert sorted(info["micrographs"]) == ["tr_00000", "tr_00001", "tr_00002"]
    assert info["held_out"] == ["va_00000", "va_00001"]
    assert info["calibration"]["source"] == "held-out micrographs"
    assert meta["thresholds"]["ring"] == info["calibration"]["threshold"]
    assert info["calibration"]["n_truth"] > 0 and info["calibration"]["recall"] > 0
    assert meta["command"].startswith("hydrapick finetune")
    assert meta["training"]["datasets"] == base_meta["training"]["datasets"]  # the base's provenance stays

    # The checkpoint picks with its new head (diameter and threshold come from the checkpoint).
    from hydrapick.io import read_micrograph
    from hydrapick.picking import pick_micrographs

    paths = sorted((va / "micrographs").glob("*.mrc"))
    truth = read_coordinate_folder(va / "coordinates")
    box = UNSEEN.diameter_A / read_micrograph(paths[0]).pixel_size_A
    ap = {}
    for head in (GENERIC_HEAD, "ring"):
        diameter_A = UNSEEN.diameter_A if head == GENERIC_HEAD else None  # the new head records its own
        results = list(pick_micrographs(paths, model=str(out), head=head, diameter_A=diameter_A,
                                        device="cpu"))
        assert all(r.error is None for r in results)
        ap[head] = evaluate(truth, Picks.concat([r.picks for r in results]), box).ap
    assert ap["ring"] > ap[GENERIC_HEAD], ap


def test_calibration_falls_back_with_one_micrograph(base):
    model, meta = load_checkpoint(base)
    threshold, report = finetune_head(model, "one", _unseen([7]), config=FinetuneConfig(steps=5, crop_px=96),
                                      device="cpu", generic_threshold=0.42)
    assert threshold == 0.42 and report["source"] == "generic head's threshold"


def test_the_plan_counts_every_head_step_so_the_overall_eta_ends_at_the_last_one(base):
    # Cross-validated calibration trains fold heads before the final one; the display's overall bar
    # (and its time left) is only right if the plan names every step the heads will take.
    model, _ = load_checkpoint(base)
    events = []
    finetune_head(model, "eta", _unseen([7, 8, 9]), config=FinetuneConfig(steps=20, crop_px=96),
                  device="cpu", progress=events.append)
    plans = [e.steps for e in events if e.kind == "plan"]
    last = {}
    for e in events:
        if e.kind == "step":
            last[e.phase] = e.step
    assert len(plans) == 1 and len(last) == 3  # two fold heads, then the final one
    assert plans[0] == sum(last.values()) and last["finetune"] == 20


def test_finetune_input_errors(base, tmp_path):
    tr = _simulate(tmp_path / "tr", 2, 50)
    (tr / "coordinates" / "tr_00001.star").unlink()
    args = ([str(tr / "micrographs")], [str(tr / "coordinates")], 150.0)
    with pytest.raises(ManifestError, match="without coordinates: tr_00001"):
        finetune(base, "x", *args, config=FAST, device="cpu")
    model, meta = load_checkpoint(base)
    model.add_head("taken")
    with pytest.raises(FinetuneError, match="already has a head named 'taken'"):
        finetune((model, meta), "taken", *args)
    with pytest.raises(FinetuneError, match="not allowed"):
        finetune(base, "bad name", *args)
    with pytest.raises(FinetuneError, match="both micrographs and coordinates"):
        finetune(base, "x", *args, valid_micrographs=["a.mrc"])
    result = CliRunner().invoke(cli, ["finetune", "--coordinates", "c", "--name", "n", "--diameter", "10",
                                      "-o", str(tmp_path / "o.pt"), "--model", str(base)])
    assert result.exit_code == 2 and "give the training micrographs" in result.output  # a usage error


def test_labels_given_twice_train_as_one_and_are_counted(tmp_path, caplog):
    """Issue 36: coincident labels (a coordinate file appended to twice) are merged, and the count said."""
    from test_picking import DIAMETER_A, TINY, write_blob_micrographs

    from hydrapick.io import write_coordinates
    from hydrapick.training.finetune import load_labelled

    truth = write_blob_micrographs(tmp_path / "mics", 2, particles=5, seed=4)
    for path, pts in truth.items():
        doubled = np.concatenate([pts, pts + [0.0, 1.5]])
        write_coordinates(Picks(x=doubled[:, 0], y=doubled[:, 1]),
                          tmp_path / "coords" / (Path(path).stem + ".star"), "star", combined=False)
    with caplog.at_level("WARNING"):
        samples = load_labelled([str(tmp_path / "mics")], [str(tmp_path / "coords")], DIAMETER_A, TINY)
    assert sorted(len(s.centres) for s in samples) == [5, 5]
    assert "merged 10 coincident" in caplog.text


def test_finetune_warns_when_labels_are_far_fewer_than_the_generic_heads_picks(tmp_path, caplog):
    """Issue 36: 1 label per micrograph of 6 particles trains a head that finds almost nothing; say so."""
    from test_picking import DIAMETER_A, trained_checkpoint, write_blob_micrographs

    from hydrapick.io import write_coordinates

    truth = write_blob_micrographs(tmp_path / "mics", 2, particles=6, seed=5)
    for path, pts in truth.items():
        write_coordinates(Picks(x=pts[:1, 0], y=pts[:1, 1]),
                          tmp_path / "coords" / (Path(path).stem + ".star"), "star", combined=False)
    config = FinetuneConfig(steps=3, crop_px=96, batch_size=2, cv_folds=0)
    with caplog.at_level("WARNING"):
        result = finetune(trained_checkpoint(), "sparse", [str(tmp_path / "mics")],
                          [str(tmp_path / "coords")], DIAMETER_A, config=config, device="cpu")
    assert result.report["generic_confident_picks"] >= 10 and result.report["particles_train"] == 2
    assert "2 labels" in caplog.text and "label every particle" in caplog.text
