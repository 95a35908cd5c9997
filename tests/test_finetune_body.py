"""Fine-tuning late body blocks with the new head (issue 35, item 2): the head's own copy of the body's
last blocks (`Head.body_tail`), the forward paths that must run it, checkpoints that carry it, the L2-SP
pull, and what must not change: the shared body and every other head's picks."""

import copy
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_training import simulation_config

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.cli import cli
from hydrapick.config import FinetuneConfig, ModelConfig
from hydrapick.model import GENERIC_HEAD, HydraPicker, body_tails_in
from hydrapick.picking import pick_micrographs
from hydrapick.picks import Picks
from hydrapick.simulation import procedural_structure, simulate_dataset, simulate_micrograph
from hydrapick.training.datasets import dataset_from_arrays
from hydrapick.training.finetune import FinetuneError, finetune
from hydrapick.training.heads import compute_features, l2_sp, score_maps, train_head

MODEL = ModelConfig(body_channels=16, body_blocks=2, group_norm_groups=4, head_channels=(16, 32),
                    stem_stride=2, anchor_stride=8, particle_diameter_px=32)
TAIL = FinetuneConfig(steps=12, crop_px=128, batch_size=2, lr=3e-3, train_body_blocks=1, body_lr_scale=1.0,
                      body_l2sp=0.0)
UNSEEN = procedural_structure("ring", 3, mass_kDa=400.0)
CPU = torch.device("cpu")


def _base(seed=0):
    """An untrained model whose blocks are not the identity and whose generic head picks (prior 0.5),
    with the metadata picking needs."""
    torch.manual_seed(seed)
    model = HydraPicker(MODEL)
    with torch.no_grad():
        for block in model.body.blocks:
            block.norm2.weight.fill_(1.0)
        model.heads[GENERIC_HEAD].output.bias[2] = 0.0
    model.eval()
    return model, {"thresholds": {GENERIC_HEAD: 0.5}, "diameters_A": {GENERIC_HEAD: None}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    simulate_dataset(folder, 3, simulation_config(), structure=UNSEEN, seed=70, prefix="m")
    return folder


def _unseen(seeds):
    """Micrographs of the specimen at the model's scale, in memory."""
    sims = [simulate_micrograph(simulation_config(), 300 + i, structure=UNSEEN) for i in seeds]
    return dataset_from_arrays("new", [s.image for s in sims], [s.picks for s in sims],
                               [s.pixel_size_A for s in sims], UNSEEN.diameter_A, MODEL).train


def _pick(model, meta, folder, head):
    """Picks of ``head`` on the simulated micrographs, in float32 (no autocast), every candidate."""
    paths = sorted((folder / "micrographs").glob("*.mrc"))
    diameter_A = UNSEEN.diameter_A if head == GENERIC_HEAD else None
    results = list(pick_micrographs(paths, model=(model, meta), head=head, diameter_A=diameter_A,
                                    device="cpu", mixed_precision=False))
    assert all(r.error is None for r in results)
    return Picks.concat([r.picks for r in results])


def _same_picks(a, b):
    assert len(a) > 0 and len(a) == len(b)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and np.array_equal(a.score, b.score)


def test_a_head_with_a_body_tail_reads_the_shared_body_before_it():
    model, _ = _base()
    generic = model.heads[GENERIC_HEAD]
    head = model.add_head("t", body_tail_blocks=1)
    assert len(head.body_tail) == 1 and model.head_depth("t") == 1 and model.head_depth(GENERIC_HEAD) == 2
    # The tail starts as a copy of the body's last block, not the same module.
    assert torch.equal(head.body_tail[0].pair1[0].weight, model.body.blocks[1].pair1[0].weight)
    assert head.body_tail[0] is not model.body.blocks[1]
    with torch.no_grad():
        for p in head.body_tail.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        shallow = model.body(x, 1)
        expected = model.heads["t"].output(head.blocks(head.body_tail(shallow)))
        expected = expected.permute(0, 2, 3, 1).reshape(2, -1, 3)
        assert torch.allclose(model(x, head="t"), expected, atol=1e-6)
        # Not the head's blocks on the shared body's last block: the tail is what runs.
        wrong = head.output(head.blocks(model.features(x))).permute(0, 2, 3, 1).reshape(2, -1, 3)
        assert not torch.allclose(model(x, head="t"), wrong, atol=1e-3)
        # The generic head reads all of the shared body, from full features or from shallower ones.
        full = generic.output(generic.blocks(model.body(x))).permute(0, 2, 3, 1).reshape(2, -1, 3)
        assert torch.equal(model(x), full)
        assert torch.equal(model.head_forward(shallow, GENERIC_HEAD, depth=1), full)
        assert torch.equal(model.head_forward(shallow, "t", depth=1), model(x, head="t"))
        # Features past the blocks the tail replaces would give wrong outputs: a clear error instead.
        with pytest.raises(ValueError, match="own copy of the body's last 1 block.*depth=1"):
            model.head_forward(model.features(x), "t")
    with pytest.raises(ValueError, match="body_tail_blocks must be 0-2"):
        model.add_head("u", body_tail_blocks=3)
    assert body_tails_in(model.state_dict()) == {"t": 1}


def test_cached_features_score_a_tailed_head_only_from_before_its_tail():
    model, _ = _base()
    model.add_head("t", body_tail_blocks=1)
    sims = _unseen([1])
    full = compute_features(model, sims, device=CPU, dtype=torch.float32)
    before = compute_features(model, sims, device=CPU, dtype=torch.float32, depth=1)
    assert before[0].depth == 1 and full[0].depth is None
    with pytest.raises(ValueError, match="own copy of the body"):
        score_maps(model, "t", full, device=CPU)
    # Either cache scores the generic head the same; the shallow one scores the tailed head as picking does.
    _same_picks(score_maps(model, GENERIC_HEAD, full, device=CPU)[1],
                score_maps(model, GENERIC_HEAD, before, device=CPU)[1])
    with pytest.raises(FinetuneError, match="features cached before them"):
        train_head(model, "new", full, TAIL, device=CPU)


def test_training_the_tail_leaves_the_body_and_the_generic_heads_picks_unchanged(data, tmp_path,
                                                                                 monkeypatch):
    finetune_module = sys.modules["hydrapick.training.finetune"]  # the package exports the function
    model, meta = _base()
    generic_before = _pick(model, meta, data, GENERIC_HEAD)
    state_before = copy.deepcopy(model.state_dict())
    tails_seen = []
    real_train_head = finetune_module.train_head

    def spy(model, name, maps, config, **kwargs):  # every head finetune trains: the fold heads too
        losses = real_train_head(model, name, maps, config, **kwargs)
        tails_seen.append((name, len(model.heads[name].body_tail), maps[0].depth))
        return losses

    monkeypatch.setattr(finetune_module, "train_head", spy)
    result = finetune((model, meta), "ring", [str(data / "micrographs")], [str(data / "coordinates")],
                      UNSEEN.diameter_A, config=TAIL, device="cpu", output=tmp_path / "ft.pt")
    assert tails_seen == [("ring__fold0", 1, 1), ("ring__fold1", 1, 1), ("ring", 1, 1)]
    assert result.report["source"] == "2-fold cross-validation"
    # (a) The shared body and the generic head did not move; the generic head picks exactly as before.
    after = result.model.state_dict()
    assert all(torch.equal(state_before[k], after[k]) for k in state_before)
    _same_picks(generic_before, _pick(result.model, result.metadata, data, GENERIC_HEAD))
    # (b) The new head's tail did move away from the body block it was copied from.
    tail = dict(result.model.heads["ring"].body_tail[0].named_parameters())
    start = dict(result.model.body.blocks[1].named_parameters())
    assert all(not torch.equal(tail[k], start[k]) for k in tail)
    # ... and the checkpoint carries it: the loaded model picks exactly as the one in memory.
    loaded, loaded_meta = load_checkpoint(result.path)
    assert len(loaded.heads["ring"].body_tail) == 1 and len(loaded.heads[GENERIC_HEAD].body_tail) == 0
    assert loaded_meta["training"]["finetune"]["ring"]["config"]["train_body_blocks"] == 1
    _same_picks(_pick(result.model, result.metadata, data, "ring"), _pick(loaded, loaded_meta, data, "ring"))
    _same_picks(generic_before, _pick(loaded, loaded_meta, data, GENERIC_HEAD))
    # A model without tails saves and loads without any tail keys (older checkpoints load as before).
    path = save_checkpoint(tmp_path / "plain.pt", _base()[0], meta)
    assert all("body_tail" not in k for k in torch.load(path, weights_only=True)["state_dict"])
    assert body_tails_in(load_checkpoint(path)[0].state_dict()) == {}


def test_l2_sp_holds_the_tail_near_its_start():
    assert float(l2_sp([torch.tensor([1.0, 2.0])], [torch.zeros(2)], 2.0)) == pytest.approx(5.0)
    model, _ = _base()
    maps = compute_features(model, _unseen([2, 3]), device=CPU, dtype=torch.float32, depth=1)
    start = [p.detach().clone() for p in model.body.blocks[1].parameters()]

    def moved(alpha):
        m = copy.deepcopy(model)
        train_head(m, "t", maps, FinetuneConfig(**{**TAIL.__dict__, "steps": 30, "body_l2sp": alpha}),
                   device=CPU)
        return float(sum(((p - p0) ** 2).sum() for p, p0 in
                         zip(m.heads["t"].body_tail.parameters(), start, strict=True)).sqrt())

    free, held = moved(0.0), moved(1e3)
    assert free > 0 and held < 0.5 * free, (free, held)


def test_finetune_command_takes_train_body_blocks(data, tmp_path):
    model, meta = _base()
    base = save_checkpoint(tmp_path / "base.pt", model, meta)
    args = ["finetune", str(data / "micrographs"), "--coordinates", str(data / "coordinates"), "--name", "r",
            "--diameter", f"{UNSEEN.diameter_A:.1f}", "--model", str(base), "--steps", "3", "--crop", "128",
            "--device", "cpu", "-q"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.pt"), "--train-body-blocks", "2",
                                      "--body-lr-scale", "0.5"])
    assert result.exit_code == 0, result.output
    loaded, meta = load_checkpoint(tmp_path / "a.pt")
    assert len(loaded.heads["r"].body_tail) == 2 and loaded.head_depth("r") == 0
    config = meta["training"]["finetune"]["r"]["config"]
    assert config["train_body_blocks"] == 2 and config["body_lr_scale"] == 0.5
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b.pt"), "--train-body-blocks", "3"])
    assert result.exit_code == 1 and "train_body_blocks must be 0-2" in result.output
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "c.pt"), "--train-body-blocks", "-1"])
    assert result.exit_code == 1 and "train_body_blocks must be >= 0" in result.output
