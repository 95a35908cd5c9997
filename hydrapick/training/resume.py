"""A training run's checkpoints: the latest state for resuming, the best weights of each phase.

``checkpoint.pt`` (a normal checkpoint with a ``resume`` entry) names the optimiser/scheduler/loss-scaler
state file written beside it; a resumed run must match the interrupted one in everything but the
settings of `RESUMABLE_CHANGES`, and then gives the result the uninterrupted run would have given.
`RunCheckpoints` holds the `Trainer`'s checkpoint methods.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import ModelConfig, TrainConfig, from_dict, to_dict
from ..io.atomic import save_torch
from .calibration import finite_or_none
from .distributed import DistContext
from .errors import TrainingError
from .events import read_log, rewrite_log

log = logging.getLogger(__name__)

PHASES = ("pretrain", "multihead")
CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
LOG = "log.jsonl"
# Fields of TrainConfig that may change between an interrupted run and its resumption.
# Settings a resumed run may change: they do not alter the training already done. A finished run resumed
# with another calibration rule is only calibrated again.
RESUMABLE_CHANGES = {"pretrain_epochs", "multihead_epochs", "checkpoint_every", "amp", "calibration",
                      "calibration_precision", "loader_workers"}



class RunCheckpoints:
    """Checkpoint methods of `hydrapick.training.trainer.Trainer` (which holds the state they use)."""

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between an interrupted run and its resumption."""
        cfg = {k: v for k, v in to_dict(self.config).items() if k not in RESUMABLE_CHANGES}
        data = {d.name: [[s.name for s in d.train], [s.name for s in d.valid]] for d in self.datasets}
        return {"config": cfg, "model_config": to_dict(self.model.config), "datasets": data,
                "world_size": self.dist.world_size}

    def _best_path(self, phase: str) -> Path:
        return self.out_dir / f"best-{phase}.pt"

    def write_checkpoint(self, phase: str) -> None:
        """Latest model + optimiser state (rank 0 only). The state file is written first, so
        ``checkpoint.pt`` always names a state file that exists."""
        if not self.dist.is_main:
            return
        tag = f"{phase}-{self.epoch:05d}"
        state_name = f"checkpoint-state-{tag}.pt"
        state = {"format": "hydrapick-training-state", "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "scaler": self.scaler.state_dict()}
        save_torch(state, self.out_dir / state_name)
        meta = self._metadata("training-checkpoint")
        meta["resume"] = {"phase": phase, "epoch": self.epoch, "best_loss": finite_or_none(self.best_loss),
                          "best_epoch": self.best_epoch, "state_file": state_name,
                          "fingerprint": self.fingerprint()}
        save_checkpoint(self.out_dir / CHECKPOINT, self.model, meta)
        for old in self.out_dir.glob("checkpoint-state-*.pt"):
            if old.name != state_name:
                old.unlink(missing_ok=True)

    def load_resume(self, meta: dict[str, Any]) -> None:
        """Take position, best-so-far and optimiser state from a checkpoint's metadata."""
        resume = meta.get("resume")
        if not isinstance(resume, dict):
            raise TrainingError(f"{self.out_dir / CHECKPOINT} holds no resume information")
        saved = dict(resume.get("fingerprint", {}))
        # A checkpoint written before a setting became resumable still lists it; it may change too.
        saved["config"] = {k: v for k, v in saved.get("config", {}).items() if k not in RESUMABLE_CHANGES}
        now = self.fingerprint()
        # A setting added to TrainConfig after the checkpoint was written is absent from it; at its
        # default it changes nothing the run did, so it is no difference.
        defaults = to_dict(TrainConfig())
        now["config"] = {k: v for k, v in now["config"].items()
                         if k in saved["config"] or v != defaults.get(k)}
        mismatch = _differences(saved, now)
        if mismatch:
            raise TrainingError("cannot resume: the run differs from the checkpoint in "
                                + "; ".join(mismatch[:6]) + " (use a new output folder to start afresh)")
        self.phase_index = PHASES.index(resume["phase"])
        self.epoch = int(resume["epoch"])
        self.best_loss = math.inf if resume["best_loss"] is None else float(resume["best_loss"])
        self.best_epoch = int(resume["best_epoch"])
        self.phase_results = dict(meta.get("training", {}).get("phases", {}))
        state_file = self.out_dir / resume["state_file"]
        try:
            state = torch.load(state_file, map_location=self.device, weights_only=True)
        except FileNotFoundError:
            raise TrainingError(f"cannot resume: the optimiser state {state_file} named by the checkpoint "
                                "does not exist; start afresh in a new output folder") from None
        except Exception as exc:  # noqa: BLE001 - torch raises several types (EOFError for an empty file)
            raise TrainingError(f"cannot resume: the optimiser state {state_file} is damaged or empty "
                                f"({type(exc).__name__}); start afresh in a new output folder") from None
        self._resume_state = state
        if self.best_epoch >= 0 and self._best_path(resume["phase"]).exists():
            best, _ = load_checkpoint(self._best_path(resume["phase"]))
            self.best_state = {k: v.clone() for k, v in best.state_dict().items()}

    def _remember_best(self, phase: str, loss: float) -> None:
        self.best_loss, self.best_epoch = loss, self.epoch
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if self.dist.is_main:
            meta = self._metadata("best")
            meta["best"] = {"phase": phase, "epoch": self.epoch, "valid_loss": loss}
            save_checkpoint(self._best_path(phase), self.model, meta)

    def _restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.dist.active:
            # Rank 0 chose the best epoch; make every rank hold exactly its weights.
            for tensor in self.model.state_dict().values():
                torch.distributed.broadcast(tensor, 0)

    # -- the phases ------------------------------------------------------------------------------------

def model_config_for(resume: bool, checkpoint: Path, init, model_config: ModelConfig | None) -> ModelConfig:
    """The model configuration the data must be prepared for (its particle size in pixels)."""
    from ..checkpoint import read_checkpoint

    source = checkpoint if resume else (Path(init) if init is not None else None)
    if source is None:
        return model_config or ModelConfig()
    meta = read_checkpoint(source)["metadata"]
    return from_dict(ModelConfig, meta["model_config"], where=str(source))


# --- small helpers -----------------------------------------------------------------------------------

def _differences(saved: Any, now: Any, where: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += _differences(saved.get(key), now.get(key), f"{where}.{key}" if where else key)
        return out
    norm = json.loads(json.dumps(saved)), json.loads(json.dumps(now))
    return [] if norm[0] == norm[1] else [f"{where} ({_short(saved)} -> {_short(now)})"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."

def truncate_log(path: Path, trainer: Any, dist: DistContext) -> None:
    """Drop log records of epochs after the checkpoint (they are re-run and logged again)."""
    if not dist.is_main or not path.exists():
        return
    rewrite_log(path, [r for r in read_log(path)
                       if (PHASES.index(r["phase"]), r["epoch"]) <= (trainer.phase_index, trainer.epoch)])


def prepare_run_folder(out: Path, resume: bool, dist: DistContext, *, final: str, log_name: str) -> Path:
    """Check the output folder before any work and create it; returns its checkpoint's path.

    A fresh run needs a folder without a run in it (``checkpoint.pt`` or the ``final`` model) that can be
    written; a resumed one needs the checkpoint. A log left by a fresh run killed before its first
    checkpoint describes nothing that can be resumed, so a fresh run starts a new log rather than
    appending to it.

    Raises
    ------
    TrainingError
    """
    from ..io.atomic import check_writable
    from ..io.errors import OutputError

    checkpoint = out / CHECKPOINT
    if resume and not checkpoint.is_file():
        raise TrainingError(f"cannot resume: {checkpoint} does not exist")
    if not resume and (checkpoint.exists() or (out / final).exists()):
        raise TrainingError(f"{out} already holds a training run; resume it with --resume or choose "
                            "another output folder")
    try:
        check_writable(out, "output folder", folder=True)
    except OutputError as exc:
        raise TrainingError(str(exc)) from None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and (out / log_name).exists():
            log.info("removing %s left by a run stopped before its first checkpoint", out / log_name)
            (out / log_name).unlink()
    return checkpoint
