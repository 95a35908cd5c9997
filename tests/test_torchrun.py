"""Training on two processes with ``torchrun`` (gloo on the CPU) is training on one with twice the batch.

``torchrun --nproc_per_node 2`` runs ``hydrapick train`` with batches of 2 per rank; one process runs it
with batches of 4. The ranks must end with identical weights (the trainer measures it before the best
weights are broadcast, `hydrapick.training.distributed.replica_difference`), and the last weights of both
runs must agree to float rounding: every crop, augmentation and dropout mask is drawn per position in the
global batch, and the loss is divided by the global batch's positives. The test prints one line of what it
found; ``.ci/run`` runs this module with ``-rA`` so the CI log shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training import simulation_config

from hydrapick.checkpoint import load_checkpoint
from hydrapick.model import HydraPicker
from hydrapick.simulation import procedural_structure, simulate_dataset
from hydrapick.training.config_file import read_config_file
from hydrapick.training.events import read_log

ROOT = Path(__file__).resolve().parent.parent
# A tiny network with dropout on and every random augmentation on (random scale, random preprocessing, any
# angle), two datasets (two heads in phase 2). float32 (amp off): a CPU with hardware bf16 would otherwise
# compute in bf16, whose rounding is not what the comparison is about.
TRAIN_TOML = """\
[train]
crop_px = 80
steps_per_epoch = 3
pretrain_epochs = 2
multihead_epochs = 1
restart_epochs = 2
pretrain_lr = 3e-3
multihead_lr = 3e-3
any_angle = true
scale_min = 0.8
scale_max = 1.25
preprocess_probability = 0.5
max_valid_tiles = 2
amp = false
[model]
preset = 'light'
body_channels = 8
body_blocks = 1
group_norm_groups = 4
head_channels = [16, 16, 16]
head_dropout = 0.2
anchor_stride = 8
particle_diameter_px = 32
"""
# Float32 sums of the same numbers in another order (convolutions over batches of 2 rather than 4, the
# gradients' all-reduce) differ by ~1e-7 relative; after 9 optimiser steps (Adam, then SGD with momentum)
# the weights differ by ~1e-6 (1.2e-6 measured). Each ingredient of the equivalence, broken alone, makes
# them differ by ~1e-2 (measured: the loss divided by each rank's own positives 1.1e-2, dropout masks from
# torch's global generator 2.1e-2, each rank's crops drawn as positions 0, 1: 2.0e-2), about what the
# training moves the weights at all. 1e-4 is two orders of magnitude from both.
ATOL = 1e-4
# `torchrun` is this module run by this interpreter (the command on PATH may belong to another Python).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun_available() -> bool:
    try:
        import torch.distributed.run  # noqa: F401 - the module behind the `torchrun` command
    except ImportError:
        return False
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


pytestmark = pytest.mark.skipif(not _torchrun_available(),
                                reason="torchrun (torch.distributed.run with gloo) is not available in this "
                                       "torch build")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The processes import this checkout's hydrapick, one thread each (two ranks share the CPU).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    tables = []
    for name, kind, seed in (("a", "globular", 5), ("b", "elongated", 6)):
        structure = procedural_structure(kind, seed, mass_kDa=200.0)
        simulate_dataset(folder / name, 4, simulation_config(), structure=structure, seed=seed, prefix=name)
        tables.append(f'[datasets.{name}]\nmicrographs = "{name}/micrographs/*.mrc"\n'
                      f'coordinates = "{name}/coordinates"\ndiameter_A = {structure.diameter_A}\n')
    (folder / "manifest.toml").write_text("valid_fraction = 0.25\ntest_fraction = 0.0\n" + "\n".join(tables))
    (folder / "train.toml").write_text(TRAIN_TOML)
    return folder


def test_two_ranks_train_the_model_one_process_trains_with_their_global_batch(corpus):
    common = ["train", "manifest.toml", "--config", "train.toml", "--device", "cpu", "--threads", "1", "-q"]
    two_s = _run([*TORCHRUN, "-m", "hydrapick", *common, "-o", "two", "--batch-size", "2"], corpus)
    one_s = _run([sys.executable, "-m", "hydrapick", *common, "-o", "one", "--batch-size", "4"], corpus)

    _, meta = load_checkpoint(corpus / "two" / "model.pt")
    assert meta["training"]["world_size"] == 2
    phases = meta["training"]["phases"]
    replicas = {phase: phases[phase]["replica_max_abs_diff"] for phase in ("pretrain", "multihead")}
    assert replicas == {"pretrain": 0.0, "multihead": 0.0}  # both ranks hold the same weights, bit for bit

    # The last weights (checkpoint.pt of the last epoch; model.pt holds the best epoch's).
    two, two_meta = load_checkpoint(corpus / "two" / "checkpoint.pt")
    one, one_meta = load_checkpoint(corpus / "one" / "checkpoint.pt")
    assert two_meta["resume"]["phase"] == one_meta["resume"]["phase"] == "multihead"
    assert two.head_names == one.head_names == ["a", "b"]
    a, b = two.state_dict(), one.state_dict()
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    n_weights = sum(t.numel() for t in a.values())
    moved = max(float((b[k].float() - start).abs().max()) for k, start in _initial(corpus).items())
    assert diff < ATOL, f"2 ranks vs 1 process: max |Δ| {diff}"
    assert moved > 20 * ATOL  # the runs trained: agreeing is not agreeing on the initial weights

    # The logged training losses (means over ranks) are those of the one process.
    logs = [read_log(corpus / run / "log.jsonl") for run in ("two", "one")]
    assert [(r["phase"], r["epoch"]) for r in logs[0]] == [(r["phase"], r["epoch"]) for r in logs[1]]
    loss_rel = max(abs(x["train"][k] - y["train"][k]) / max(abs(y["train"][k]), 1e-12)
                   for x, y in zip(*logs, strict=True) for k in ("loss", "cls", "loc"))
    assert loss_rel < 1e-4
    steps = len(logs[1]) * 3
    print(f"REAL RUNNER torchrun (torch {torch.__version__}, gloo, CPU): hydrapick train on 2 ranks x batch "
          f"2 vs 1 process x batch 4, {steps} steps over 2 phases; ranks' weights identical (max |Δ| "
          f"{max(replicas.values()):g}), max |Δ| vs 1 process = {diff:.1e} over {n_weights} weights "
          f"(training moved them by up to {moved:.1e}), train losses agree to {loss_rel:.0e}; "
          f"{two_s:.0f} s + {one_s:.0f} s")


def _initial(corpus: Path) -> dict[str, torch.Tensor]:
    """The fresh network both runs start from (seed 0, the same config), for the 'it trained' check."""
    _, model_config = read_config_file(corpus / "train.toml")
    torch.manual_seed(0)  # as `hydrapick.training.train` does before building the network
    return HydraPicker(model_config).state_dict()


CHECKS = """\
import sys

import torch

from hydrapick.training.distributed import distributed_context, loss_divisor, replica_difference, setup_device

dist = distributed_context()
setup_device("cpu", dist)
model = torch.nn.Linear(3, 2)
with torch.no_grad():
    model.weight.fill_(0.5)
    model.bias.fill_(-1.0)
same = replica_difference(model, dist)
if dist.rank == 1:
    with torch.no_grad():
        model.weight[0, 1] = 0.75
moved = replica_difference(model, dist)
# Positives 3 on rank 0 and 0 on rank 1: each divides by 3 / 2; none at all: by 1 / 2.
divisor = float(loss_divisor(torch.tensor(3 if dist.rank == 0 else 0), dist))
nothing = float(loss_divisor(torch.tensor(0), dist))
print(f"rank {dist.rank}: {same} {moved} {divisor} {nothing}")
torch.distributed.destroy_process_group()
sys.exit(0 if (same, moved, divisor, nothing) == (0.0, 0.25, 1.5, 0.5) else 1)
"""


def test_replica_difference_and_loss_divisor_across_two_ranks(tmp_path):
    # The replica check above is not vacuous: it sees one weight of one rank moved; and the loss divisor
    # is the global batch's positives shared out over the ranks.
    (tmp_path / "checks.py").write_text(CHECKS)
    _run([*TORCHRUN, "checks.py"], tmp_path)



LEAVES_GROUP = """\
import atexit
import os
import sys

import torch


def gloo_threads():
    names = (open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    return sorted(name for name in names if "gloo" in name)


def at_exit():  # registered first, so it runs after hydrapick's own exit handler
    left = (torch.distributed.is_initialized(), gloo_threads())
    print(f"rank {os.environ['RANK']} at exit: group joined, gloo threads {left}", flush=True)
    if left != (False, []):
        os._exit(1)


atexit.register(at_exit)
from hydrapick.training import TrainingError, train  # noqa: E402

short = {"pretrain_epochs": 1, "multihead_epochs": 0, "steps_per_epoch": 1}
train("manifest.toml", f"leave-{os.environ['RANK']}", config_file="train.toml", overrides=short, device="cpu")
trained = (torch.distributed.is_initialized(), len(gloo_threads()) > 0)
try:
    train([], "never", config_file="train.toml", overrides=short, device="cpu")  # in the same group
    sys.exit("no error")
except TrainingError:
    pass
print(f"rank {os.environ['RANK']}: after training (group, gloo threads): {trained}", flush=True)
sys.exit(0 if trained == (True, True) else 1)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_a_rank_leaves_the_process_group_and_joins_its_threads_when_it_exits(corpus):
    # A gloo worker thread still alive when the interpreter shuts down can be ended inside a destructor
    # while it frees a tensor, and the rank aborts after its work is done ("terminate called without an
    # active exception"). The group a rank joins for training lives while the process may train again
    # (here: a second train() that fails) and is destroyed, its threads joined, before the interpreter
    # shuts down; DDP, which holds the group, does not keep it alive.
    (corpus / "leave.py").write_text(LEAVES_GROUP)
    _run([*TORCHRUN, "leave.py"], corpus)
