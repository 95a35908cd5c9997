"""Few-shot fine-tuning on cached body features: alignment, the AP gain on an unseen specimen, files in,
checkpoint out, calibration paths and the finetune command."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_training import _scene

from hydrapick.checkpoint import load_checkpoint
from hydrapick.cli import cli
from hydrapick.config import FinetuneConfig, ModelConfig, TrainConfig
from hydrapick.data import ManifestError, dataset_from_arrays
from hydrapick.evaluation import evaluate
from hydrapick.finetune import (
    FeatureMap,
    FinetuneError,
    compute_features,
    crop_cells,
    feature_batch,
    finetune,
    finetune_head,
    score_maps,
)
from hydrapick.io import write_coordinates, write_micrograph
from hydrapick.model import GENERIC_HEAD
from hydrapick.training import train

MODEL = ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(16, 16),
                    stem_stride=2, anchor_stride=8, particle_diameter_px=32)
FAST = FinetuneConfig(steps=60, crop_px=128, batch_size=4, lr=3e-3)
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small model pretrained on blob-like particles only (its generic head has never seen rings)."""
    rng = np.random.default_rng(10)
    scenes = [_scene(rng, "blob") for _ in range(5)]
    data = dataset_from_arrays("blobs", [s[0] for s in scenes], [s[1] for s in scenes], 1.0, 32.0, MODEL,
                               valid=1)
    config = TrainConfig(crop_px=96, batch_size=3, steps_per_epoch=10, pretrain_epochs=4, multihead_epochs=0,
                         restart_epochs=4, pretrain_lr=3e-3, max_valid_tiles=4)
    out = tmp_path_factory.mktemp("base")
    train([data], out, config=config, model_config=MODEL, device="cpu")
    return out / "model.pt"


def _rings(seed, n):
    rng = np.random.default_rng(seed)
    scenes = [_scene(rng, "ring") for _ in range(n)]
    images, picks = [s[0] for s in scenes], [s[1] for s in scenes]
    return dataset_from_arrays("rings", images, picks, 1.0, 32.0, MODEL).train


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
        crops, crop_centres = feature_batch(maps, [0], cells, MODEL, rng)
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
    train_set, test_set = _rings(20, 3), _rings(21, 3)
    threshold, report = finetune_head(model, "rings", train_set, config=FAST, device="cpu",
                                      generic_threshold=meta["thresholds"][GENERIC_HEAD])
    # Body, generic head: untouched. The new head: trained away from its generic initialisation.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    moved = [not torch.equal(after[f"heads.rings.{k}"], before[f"heads.generic.{k}"])
             for k in dict(model.heads[GENERIC_HEAD].named_parameters())]
    assert all(moved)
    assert model.head_names == ["rings"] and not any(p.requires_grad for p in model.parameters())
    maps = compute_features(model, test_set, device=CPU, dtype=torch.float32)
    names = [m.name for m in maps]
    ap = {head: evaluate(*score_maps(model, head, maps, device=CPU), 32.0, micrographs=names).ap
          for head in (GENERIC_HEAD, "rings")}
    assert ap["rings"] > ap[GENERIC_HEAD] + 0.2, ap
    assert ap["rings"] > 0.7, ap
    assert report["source"] == "3-fold cross-validation" and 0 < threshold < 1
    assert report["ap"] > report["generic_ap"]


def _write(folder, samples_seed, n, kind="ring"):
    rng = np.random.default_rng(samples_seed)
    (folder / "mics").mkdir(parents=True)
    (folder / "coords").mkdir()
    for i in range(n):
        image, picks = _scene(rng, kind)
        name = f"{folder.name}{i}"
        write_micrograph(folder / "mics" / f"{name}.mrc", image, 2.0)  # 64 Å = 32 px at 2 Å/px
        write_coordinates(picks.with_micrograph(name), folder / "coords" / f"{name}.star")
    return folder


def test_finetune_command_writes_a_checkpoint_for_picking(base, tmp_path):
    tr, va = _write(tmp_path / "tr", 30, 3), _write(tmp_path / "va", 31, 2)
    out = tmp_path / "ft.pt"
    result = CliRunner().invoke(cli, [
        "finetune", str(tr / "mics" / "tr0.mrc"), str(tr / "mics" / "tr1.mrc"), "--micrographs",
        str(tr / "mics" / "tr2.mrc"), "--coordinates", str(tr / "coords"), "--name", "rings",
        "--diameter", "64",
        "--model", str(base), "-o", str(out), "--valid-micrographs", str(va / "mics" / "*.mrc"),
        "--valid-coordinates", str(va / "coords"), "--steps", "40", "--crop", "128", "--lr", "0.003",
        "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "head 'rings' written to" in result.output and "held-out" in result.output
    model, meta = load_checkpoint(out)
    _, base_meta = load_checkpoint(base)
    assert model.head_names == ["rings"]
    assert meta["diameters_A"] == {GENERIC_HEAD: None, "rings": 64.0}
    assert meta["thresholds"][GENERIC_HEAD] == base_meta["thresholds"][GENERIC_HEAD]
    assert 0 < meta["thresholds"]["rings"] < 1
    info = meta["training"]["finetune"]["rings"]
    assert sorted(info["micrographs"]) == ["tr0", "tr1", "tr2"] and info["held_out"] == ["va0", "va1"]
    assert info["calibration"]["source"] == "held-out micrographs"
    assert meta["command"].startswith("hydrapick finetune")
    assert meta["training"]["datasets"] == base_meta["training"]["datasets"]  # the base's provenance stays

    from hydrapick.picking import pick_micrographs

    (picked,) = list(pick_micrographs([va / "mics" / "va0.mrc"], model=str(out), head="rings", device="cpu"))
    assert picked.error is None
    from hydrapick.io import read_coordinates

    report = evaluate(read_coordinates(va / "coords" / "va0.star"), picked.picks, 32.0)
    assert report.ap > 0.5


def test_calibration_falls_back_with_one_micrograph(base):
    model, meta = load_checkpoint(base)
    threshold, report = finetune_head(model, "one", _rings(40, 1), config=FinetuneConfig(steps=5, crop_px=96),
                                      device="cpu", generic_threshold=0.42)
    assert threshold == 0.42 and report["source"] == "generic head's threshold"


def test_finetune_input_errors(base, tmp_path):
    tr = _write(tmp_path / "tr", 50, 2)
    (tr / "coords" / "tr1.star").unlink()
    with pytest.raises(ManifestError, match="tr1"):
        finetune(base, "x", [str(tr / "mics")], [str(tr / "coords")], 64.0, config=FAST, device="cpu")
    model, meta = load_checkpoint(base)
    model.add_head("taken")
    with pytest.raises(FinetuneError, match="already has a head named 'taken'"):
        finetune((model, meta), "taken", [str(tr / "mics")], [str(tr / "coords")], 64.0)
    with pytest.raises(FinetuneError, match="not allowed"):
        finetune(base, "bad name", [str(tr / "mics")], [str(tr / "coords")], 64.0)
    with pytest.raises(FinetuneError, match="both micrographs and coordinates"):
        finetune(base, "x", [str(tr / "mics")], [str(tr / "coords")], 64.0, valid_micrographs=["a.mrc"])
    result = CliRunner().invoke(cli, ["finetune", "--coordinates", "c", "--name", "n", "--diameter", "10",
                                      "-o", str(tmp_path / "o.pt"), "--model", str(base)])
    assert result.exit_code != 0 and "give the training micrographs" in result.output

