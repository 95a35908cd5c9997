"""Two-phase training: falling loss, outputs and calibration, exact resume, and the train command."""

import dataclasses
import json
import shutil

import pytest
import tomli_w
import torch
from click.testing import CliRunner

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.cli import cli
from hydrapick.config import ModelConfig, SimulationConfig, TrainConfig
from hydrapick.model import GENERIC_HEAD
from hydrapick.simulation import procedural_structure, simulate_dataset
from hydrapick.training import PHASES, TrainingError, train
from hydrapick.training.datasets import load_datasets
from hydrapick.training.distributed import distributed_context
from hydrapick.training.events import read_log

MODEL = ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4, head_channels=(16, 16),
                    stem_stride=2, anchor_stride=8, particle_diameter_px=32)
CONFIG = TrainConfig(crop_px=96, batch_size=3, steps_per_epoch=8, pretrain_epochs=4, multihead_epochs=2,
                     restart_epochs=4, pretrain_lr=3e-3, checkpoint_every=1, max_valid_tiles=4)




# Clean, high-dose micrographs with particles of ~32 px: learnable by a tiny model in a few dozen steps.
SIM = {"shape_px": [256, 256], "particle_diameter_px_range": [30.0, 34.0], "pixel_size_A_range": [1.0, 8.0],
       "n_views": 32, "coverage_range": [0.3, 0.4], "dose_e_per_A2_range": [60.0, 80.0],
       "defocus_um_range": [2.0, 3.0], "junk_fraction_range": [0.0, 0.05], "aggregate_probability": 0.0,
       "carbon_probability": 0.0, "continuous_carbon_probability": 0.0, "contamination_probability": 0.0,
       "ice_crystal_probability": 0.0, "blemish_probability": 0.0, "hot_pixel_probability": 0.0}


def simulation_config():
    return SimulationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in SIM.items()})


def simulated_manifest(folder, datasets, valid_fraction=0.2):
    """A manifest of simulated datasets: ``datasets`` maps name -> (procedural kind, mass kDa, seed, n)."""
    tables = {name: {"simulated": {"procedural": kind, "mass_kDa": mass, "seed": seed, "n_micrographs": n,
                                   "config": SIM}}
              for name, (kind, mass, seed, n) in datasets.items()}
    path = folder / "manifest.toml"
    manifest = {"valid_fraction": valid_fraction, "test_fraction": 0.0, "datasets": tables}
    path.write_text(tomli_w.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    path = simulated_manifest(tmp_path_factory.mktemp("sim"), {"globular": ("globular", 200.0, 1, 5),
                                                               "elongated": ("elongated", 300.0, 2, 5)})
    return load_datasets(path, MODEL)


@pytest.fixture(scope="module")
def full_run(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    events = []
    result = train(datasets, out, config=CONFIG, model_config=MODEL, device="cpu", progress=events.append)
    return out, result, events


def test_loss_falls_and_every_output_is_written(full_run, datasets):
    out, result, events = full_run
    history = result.history
    assert [(r["phase"], r["epoch"]) for r in history] == [("pretrain", e) for e in (1, 2, 3, 4)] + [
        ("multihead", 1), ("multihead", 2)]
    pre = [r["train"]["loss"] for r in history if r["phase"] == "pretrain"]
    assert pre[-1] < 0.8 * pre[0]
    valid = [r["valid"]["loss"] for r in history]
    assert min(valid) < valid[0]
    assert history[-1]["train"]["bias"] > 0 and history[0]["train"]["bias"] == 0
    # Validation AP per head is logged, for the dataset heads only in phase 2.
    assert set(history[0]["valid"]["heads"]) >= {GENERIC_HEAD}
    assert {"globular", "elongated", GENERIC_HEAD} <= set(history[-1]["valid"]["heads"])
    assert read_log(out / "log.jsonl") == json.loads(json.dumps(history))
    assert {p.name for p in out.iterdir()} >= {"model.pt", "checkpoint.pt", "best-pretrain.pt",
                                               "best-multihead.pt", "log.jsonl"}
    assert len(list(out.glob("checkpoint-state-*.pt"))) == 1

    model, meta = load_checkpoint(out / "model.pt")
    assert model.head_names == ["globular", "elongated"]
    assert set(meta["thresholds"]) == {GENERIC_HEAD, "globular", "elongated"}
    assert all(0 < t < 1 for t in meta["thresholds"].values())
    assert meta["diameters_A"] == {GENERIC_HEAD: None, **{d.name: d.diameter_A for d in datasets}}
    assert all(d.kind == "simulated" and 100 < d.diameter_A < 400 for d in datasets)
    calibration = meta["training"]["calibration"]
    assert calibration["globular"]["source"] == "validation" and calibration["globular"]["n_truth"] > 0
    # Each threshold is the one its calibration report chose, and the final model is the best phase-2
    # epoch's: the AP logged for that epoch is the AP the calibration measured again on the same data.
    assert meta["thresholds"] == {h: calibration[h]["threshold"] for h in meta["thresholds"]}
    best_record = min((r for r in history if r["phase"] == "multihead"), key=lambda r: r["valid"]["loss"])
    for head in ("globular", "elongated"):
        assert best_record["valid"]["heads"][head]["ap"] == pytest.approx(calibration[head]["ap"], abs=1e-6)
    summary = meta["training"]["datasets"]
    assert [d["name"] for d in summary] == ["globular", "elongated"]
    assert [(d["n_train"], d["n_valid"]) for d in summary] == [(4, 1), (4, 1)]
    assert meta["training"]["phases"]["pretrain"]["best_epoch"] >= 1
    # The final model is the best phase-2 epoch, not simply the last one.
    best = min(r["valid"]["loss"] for r in history if r["phase"] == "multihead")
    assert meta["training"]["phases"]["multihead"]["best_valid_loss"] == pytest.approx(best)
    kinds = {e.kind for e in events}
    assert {"phase", "step", "epoch", "calibrate", "done"} <= kinds


class _Stop(Exception):
    pass


def _stop_at(phase, epoch):
    def callback(event):
        if event.kind == "epoch" and (event.phase, event.epoch) == (phase, epoch):
            raise _Stop
    return callback


def test_resume_continues_with_identical_state(full_run, datasets, tmp_path):
    out_full, result, _ = full_run
    out = tmp_path / "run"
    # Interrupted in phase 1 (Adam + warm restarts) and again in phase 2 (SGD momentum), after the
    # epoch ran but before its checkpoint: the resumed run must redo that epoch exactly.
    with pytest.raises(_Stop):
        train(datasets, out, config=CONFIG, model_config=MODEL, device="cpu",
              progress=_stop_at("pretrain", 2))
    assert [r["epoch"] for r in read_log(out / "log.jsonl")] == [1, 2]
    with pytest.raises(_Stop):
        train(datasets, out, config=CONFIG, model_config=MODEL, device="cpu", resume=True,
              progress=_stop_at("multihead", 2))
    resumed = train(datasets, out, config=CONFIG, model_config=MODEL, device="cpu", resume=True)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in records]

    assert strip(read_log(out / "log.jsonl")) == strip(read_log(out_full / "log.jsonl"))
    a, b = result.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metadata["thresholds"] == result.metadata["thresholds"]


def test_loader_workers_give_the_same_run(full_run, datasets, tmp_path):
    # Batches made ahead by two worker processes are the batches the main process would make, in order:
    # same log, same weights, bit for bit. A short run (the first two phase-1 epochs) says it all.
    config = dataclasses.replace(CONFIG, pretrain_epochs=2, multihead_epochs=0)
    inline = train(datasets, tmp_path / "inline", config=config, model_config=MODEL, device="cpu")
    workers = train(datasets, tmp_path / "workers", config=dataclasses.replace(config, loader_workers=2),
                    model_config=MODEL, device="cpu")
    a, b = inline.model.state_dict(), workers.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["train"]["loss"] for r in read_log(tmp_path / run / "log.jsonl")]
              for run in ("inline", "workers")]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_a_checkpoint_older_than_a_new_setting_resumes_at_its_default(full_run, datasets, tmp_path):
    # A checkpoint written before TrainConfig gained a setting does not list it. At the setting's default
    # the run is the one it was, so it resumes; at any other value it is a different run, so it does not.
    out = tmp_path / "run"
    config = dataclasses.replace(CONFIG, pretrain_epochs=2, multihead_epochs=0)
    with pytest.raises(_Stop):
        train(datasets, out, config=config, model_config=MODEL, device="cpu",
              progress=_stop_at("pretrain", 2))
    model, meta = load_checkpoint(out / "checkpoint.pt")
    del meta["resume"]["fingerprint"]["config"]["blur_max_px"]
    save_checkpoint(out / "checkpoint.pt", model, meta)
    with pytest.raises(TrainingError, match="blur_max_px"):
        train(datasets, out, config=dataclasses.replace(config, blur_max_px=5.0), model_config=MODEL,
              device="cpu", resume=True)
    resumed = train(datasets, out, config=config, model_config=MODEL, device="cpu", resume=True)
    assert [r["epoch"] for r in read_log(out / "log.jsonl")] == [1, 2]
    assert resumed.path.exists()


def test_finished_run_resumed_with_another_calibration_rule_is_only_calibrated_again(full_run, datasets,
                                                                                       tmp_path):
    out_full, result, _ = full_run
    out = tmp_path / "run"
    shutil.copytree(out_full, out)
    thesis_rule = TrainConfig(**{**CONFIG.__dict__, "calibration": "precision"})
    again = train(datasets, out, config=thesis_rule, model_config=MODEL, device="cpu", resume=True)
    a, b = result.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(read_log(out / "log.jsonl")) == len(read_log(out_full / "log.jsonl"))
    report = again.metadata["training"]["calibration"]["generic"]
    assert report["rule"] == "precision" and again.metadata["thresholds"]["generic"] == report["threshold"]
    assert result.metadata["training"]["calibration"]["generic"]["rule"] == "f1"


def test_refuses_to_overwrite_or_resume_a_different_run(full_run, datasets):
    out, _, _ = full_run
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(datasets, out, config=CONFIG, model_config=MODEL, device="cpu")
    changed = TrainConfig(**{**CONFIG.__dict__, "crop_px": 64})
    with pytest.raises(TrainingError, match="crop_px"):
        train(datasets, out, config=changed, model_config=MODEL, device="cpu", resume=True)
    with pytest.raises(TrainingError, match="does not exist"):
        train(datasets, out / "nothing", config=CONFIG, device="cpu", resume=True)


def test_single_head_run_and_init_from_checkpoint(datasets, full_run, tmp_path):
    out, _, _ = full_run
    config = TrainConfig(crop_px=96, batch_size=2, steps_per_epoch=2, pretrain_epochs=0, multihead_epochs=1,
                         max_valid_tiles=2)
    # Phase 2 alone, started from the trained model's body and generic head.
    result = train(datasets[:1], tmp_path / "init", config=config, init=out / "model.pt", device="cpu")
    model, _ = load_checkpoint(out / "model.pt")
    assert result.model.head_names == ["globular"]
    assert result.model.config == MODEL
    # The new head started as a copy of the loaded generic head: after 2 SGD steps they are still close.
    new = dict(result.model.heads["globular"].named_parameters())
    old = dict(model.heads[GENERIC_HEAD].named_parameters())
    assert all(torch.allclose(new[k], old[k], atol=0.05) for k in old)
    single = TrainConfig(crop_px=96, batch_size=2, steps_per_epoch=2, pretrain_epochs=1, multihead_epochs=0,
                         max_valid_tiles=2)
    result = train(datasets, tmp_path / "single", config=single, model_config=MODEL, device="cpu")
    assert result.model.head_names == [] and set(result.metadata["thresholds"]) == {GENERIC_HEAD}


def test_places_to_ignore_leave_the_classification_loss(datasets, tmp_path):
    # Places to ignore outside every crop change nothing (training is deterministic); places everywhere
    # leave only the positive anchors' classification loss. The focal loss of the negative anchors is
    # small at the start (the bias starts at the particle prior), so the drop is small but must be there.
    config = TrainConfig(crop_px=96, batch_size=2, steps_per_epoch=3, pretrain_epochs=1, multihead_epochs=0,
                         max_valid_tiles=2, seed=3)

    def with_ignore(places):
        ds = datasets[0]
        train_samples = [dataclasses.replace(s, ignore=places(s)) for s in ds.train]
        return [dataclasses.replace(ds, train=train_samples)]

    def first_cls(data, name):
        result = train(data, tmp_path / name, config=config, model_config=MODEL, device="cpu")
        return result.history[0]["train"]["cls"]

    plain = first_cls(datasets[:1], "plain")
    far = first_cls(with_ignore(lambda s: torch.tensor([[-1000.0, -1000.0]])), "far")
    grid = torch.stack(torch.meshgrid(torch.arange(0.0, 600, 4), torch.arange(0.0, 600, 4), indexing="xy"),
                       -1).reshape(-1, 2)
    everywhere = first_cls(with_ignore(lambda s: grid), "everywhere")
    assert far == plain
    assert everywhere < plain


def test_distributed_context_from_torchrun_environment():
    assert distributed_context({}) == distributed_context({"WORLD_SIZE": "1"})
    ctx = distributed_context({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.active) == (3, 4, 1, False, True)
    with pytest.raises(TrainingError, match="outside"):
        distributed_context({"RANK": "4", "WORLD_SIZE": "4"})
    assert PHASES == ("pretrain", "multihead")


def test_mix_style_changes_training_and_stays_deterministic(datasets, tmp_path):
    config = TrainConfig(crop_px=96, batch_size=2, steps_per_epoch=3, pretrain_epochs=1, multihead_epochs=0,
                         max_valid_tiles=2, seed=4)

    def loss(name, **changes):
        result = train(datasets[:1], tmp_path / name, config=dataclasses.replace(config, **changes),
                       model_config=MODEL, device="cpu")
        assert result.model.body.mix_style == changes.get("mix_style", 0.0)
        return result.history[0]["train"]["loss"]

    plain, mixed, again = loss("plain"), loss("mixed", mix_style=1.0), loss("again", mix_style=1.0)
    assert mixed != plain and mixed == again


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crop_px"):
        TrainConfig(crop_px=0)
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(pretrain_epochs=0, multihead_epochs=0)
    with pytest.raises(ValueError, match="mix_style"):
        TrainConfig(mix_style=1.5)


# --- the command -------------------------------------------------------------------------------------

def test_train_command(tmp_path):
    structure = procedural_structure("globular", 5, mass_kDa=200.0)
    simulate_dataset(tmp_path / "a", 3, simulation_config(), structure=structure, seed=5)
    (tmp_path / "manifest.toml").write_text(
        '[datasets.a]\nmicrographs = "a/micrographs/*.mrc"\ncoordinates = "a/coordinates"\n'
        f'diameter_A = {structure.diameter_A}\n')
    (tmp_path / "train.toml").write_text(
        "[train]\ncrop_px = 96\nbatch_size = 2\nsteps_per_epoch = 2\npretrain_epochs = 1\n"
        "multihead_epochs = 1\nmax_valid_tiles = 2\n"
        "[model]\npreset = 'light'\nbody_channels = 8\nbody_blocks = 1\ngroup_norm_groups = 4\n"
        "head_channels = [16, 16, 16]\nanchor_stride = 8\nparticle_diameter_px = 32\n")
    runner = CliRunner()
    check = runner.invoke(cli, ["train", str(tmp_path / "manifest.toml"), "--check"])
    assert check.exit_code == 0, check.output
    row = next(line for line in check.output.splitlines() if "files" in line)
    assert row.split()[1:4] == ["a", "│", "files"], row  # the dataset's name and kind, in one row
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(tmp_path / "manifest.toml"), "-o", str(out), "--config",
                                 str(tmp_path / "train.toml"), "--seed", "3", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    model, meta = load_checkpoint(out / "model.pt")
    assert model.head_names == ["a"] and model.config.stem_stride == 2 and model.config.body_channels == 8
    assert meta["seed"] == 3 and meta["command"].startswith("hydrapick")
    again = runner.invoke(cli, ["train", str(tmp_path / "manifest.toml"), "-o", str(out), "-q"])
    assert again.exit_code == 1 and "already holds a training run" in again.output


def test_train_command_reports_manifest_problems(tmp_path):
    (tmp_path / "m.toml").write_text('[datasets.x]\nmicrographs = "none/*.mrc"\ncoordinates = "c"\n')
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "m.toml"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "3 problems" in result.output and "matches no MRC, TIFF, PNG or JPEG micrographs" in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["train", str(tmp_path / "m.toml"), "-o", str(tmp_path / "o"),
                                   "--steps-per-epoch", "0"])
    assert bad.exit_code == 1 and "steps_per_epoch must be >= 1" in bad.output
