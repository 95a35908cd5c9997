"""Training HydraPicker on many labelled datasets (thesis 3.2 and 4.3).

Phase 1 (``pretrain``) trains the body with the generic head alone on every dataset (Adam, cosine
annealing with warm restarts). Phase 2 (``multihead``) adds one head per dataset, each a copy of the
pretrained generic head, and trains body and dataset heads on their own data while the bias loss
(eq. 3.4) pulls the generic head towards them (SGD with momentum). Each phase keeps the weights with the
lowest validation loss. Finally every head's score threshold is calibrated on validation data (the
lowest threshold with precision >= 0.8) and stored in the checkpoint with the heads' particle diameters.

Files written in the output folder (only by rank 0 of a multi-GPU run):

``checkpoint.pt`` + ``checkpoint-state-*.pt``
    The latest model (a normal checkpoint) and its optimiser/scheduler/loss-scaler state, every
    ``checkpoint_every`` epochs; ``resume=True`` continues from them with identical results.
``best-pretrain.pt``, ``best-multihead.pt``
    The best weights of each phase so far.
``model.pt``
    The final, calibrated model.
``log.jsonl``
    One JSON object per epoch: training losses, validation loss and AP per head, learning rate, time.

Randomness (crops, flips, dropout) is a pure function of the seed, the phase, the epoch, the step and the
sample's position in the step's global batch, so the checkpoint's position is all the random state a
resumed run needs (`hydrapick.training.resume`), and ``torchrun`` with ``W`` processes trains the model one
process with ``W`` times the batch trains (`hydrapick.training.distributed`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import ModelConfig, TrainConfig, to_dict
from ..device import autocast_for
from ..model import GENERIC_HEAD, HydraPicker
from ..model.anchors import anchor_centres
from ..model.dropout import per_sample_dropout
from ..model.losses import batch_loss, bias_loss, ignore_mask
from .augment import augmentation_for
from .calibration import calibrate_heads, finite_or_none
from .config_file import read_config_file
from .datasets import TrainingDataset, load_datasets
from .distributed import DistContext, distributed_context, loss_divisor, replica_difference, setup_device
from .errors import TrainingError
from .events import ProgressCallback, TrainEvent, append_record, read_log
from .loader import BatchLoader
from .manifest import Manifest
from .resume import PHASES, RunCheckpoints, model_config_for, prepare_run_folder, truncate_log
from .sampler import DatasetBatchSampler, step_seed
from .validation import HeadValidation, validate_heads, validation_objective, validation_sets

log = logging.getLogger(__name__)

FINAL = "model.pt"
LOG = "log.jsonl"


@dataclass
class TrainResult:
    """What `train` produced: the calibrated model, its metadata and where it was written."""

    model: HydraPicker
    metadata: dict[str, Any]
    path: Path
    history: list[dict[str, Any]]


# --- the trainer -------------------------------------------------------------------------------------

class Trainer(RunCheckpoints):
    """Runs both training phases over in-memory datasets; see `train` for the public entry point."""

    def __init__(self, datasets: Sequence[TrainingDataset], model: HydraPicker, config: TrainConfig,
                 out_dir: Path, *, device: torch.device,
                 dist: DistContext = DistContext(),  # noqa: B008 - frozen, so one shared default is safe
                 progress: ProgressCallback | None = None, command: str | None = None,
                 extra_summary: dict[str, Any] | None = None) -> None:
        self.datasets = list(datasets)
        self.names = [d.name for d in self.datasets]
        self.model = model.to(device)
        self.model.body.mix_style = config.mix_style
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = device
        self.dist = dist
        self.progress = progress if dist.is_main else None
        self.command = command
        self.extra_summary = dict(extra_summary or {})
        self.autocast, self.scaler = autocast_for(device, config.amp)
        self.aug = augmentation_for(config)
        self.loader = BatchLoader(self.datasets, self.aug, config.loader_workers)
        self.sampler = DatasetBatchSampler(
            [len(d.train) for d in self.datasets], config.batch_size, config.steps_per_epoch,
            weights=[d.weight for d in self.datasets], seed=config.seed, rank=dist.rank,
            world_size=dist.world_size)
        self.vsets = validation_sets(self.datasets, config.valid_tile_px or config.crop_px,
                                     config.max_valid_tiles, config.seed)
        if not any(self.vsets):
            log.warning("no dataset has validation micrographs: model selection uses the training loss "
                        "and thresholds cannot be calibrated")
        self.history: list[dict[str, Any]] = []
        self.phase_results: dict[str, dict[str, Any]] = {}
        # Position and best-so-far of the current phase.
        self.phase_index = 0
        self.epoch = 0
        self.best_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self._resume_state: dict[str, Any] | None = None

    # -- bookkeeping -----------------------------------------------------------------------------------
    def _emit(self, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress(TrainEvent(**kwargs))

    def _epochs(self, phase: str) -> int:
        return self.config.pretrain_epochs if phase == "pretrain" else self.config.multihead_epochs

    def _metadata(self, kind: str) -> dict[str, Any]:
        return {"seed": self.config.seed, "command": self.command, "kind": kind,
                "training": self.summary()}

    def summary(self) -> dict[str, Any]:
        return {"config": to_dict(self.config), "datasets": [d.summary() for d in self.datasets],
                "phases": dict(self.phase_results), "world_size": self.dist.world_size,
                "device": str(self.device), **self.extra_summary}

    # -- optimisation set-up ---------------------------------------------------------------------------
    def _start_phase(self, phase: str) -> None:
        cfg = self.config
        # Drop the previous phase's DDP wrapper before changing the model: its gradient hooks must go too.
        self.ddp_model: torch.nn.Module = self.model
        if phase == "multihead":
            for name in self.names:
                if name not in self.model.heads:
                    self.model.add_head(name, init_from=GENERIC_HEAD)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if phase == "pretrain":
            self.optimizer = torch.optim.Adam(params, lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay)
            # Stepped once per optimiser step: the period is restart_epochs epochs.
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                self.optimizer, T_0=cfg.restart_epochs * cfg.steps_per_epoch, eta_min=cfg.min_lr)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.multihead_lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
            self.scheduler = None  # thesis: plain SGD with momentum in phase 2
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # All ranks train the same head at every step (see DatasetBatchSampler) and the bias loss
            # reaches every head, so parameters go unused only when that loss is switched off.
            unused = phase == "multihead" and cfg.bias_weight == 0
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused)

    def _heads_for(self, phase: str, d: int) -> tuple[str, list[str]]:
        """(head trained on dataset ``d``, heads validated on it)."""
        if phase == "pretrain":
            return GENERIC_HEAD, [GENERIC_HEAD]
        return self.names[d], [self.names[d], GENERIC_HEAD]

    # -- one epoch -------------------------------------------------------------------------------------
    def run_epoch(self, phase: str, epoch: int) -> dict[str, float]:
        cfg, model = self.config, self.model
        model.train()
        steps = self.sampler.epoch(epoch, phase=PHASES.index(phase))
        anchors = anchor_centres(cfg.crop_px, cfg.crop_px, model.config, device=self.device)
        with_bias = phase == "multihead" and cfg.bias_weight > 0 and model.head_names
        sums = {"loss": torch.zeros((), device=self.device), "cls": torch.zeros((), device=self.device),
                "loc": torch.zeros((), device=self.device), "bias": torch.zeros((), device=self.device)}
        report_every = max(1, len(steps) // 50)
        divisor = functools.partial(loss_divisor, dist=self.dist)  # by the global batch's positives
        for step, (images, centres, unsure) in zip(steps, self.loader.batches(steps), strict=True):
            head, _ = self._heads_for(phase, step.dataset)
            images = images.to(self.device, non_blocking=True)
            centres = [c.to(self.device) for c in centres]
            # Anchors within a particle radius of a place to ignore are neither particle nor background.
            ignore = ignore_mask(anchors, unsure, 0.5 * model.config.particle_diameter_px)
            torch.manual_seed(step_seed(step.seed))  # any other randomness: alike on every rank and re-run
            with self.autocast(), per_sample_dropout(model, step.dropout_seeds()):
                outputs = self.ddp_model(images, head=head)
            parts = batch_loss(outputs, centres, anchors, model.config, cls_weight=cfg.cls_weight,
                               alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, ignore=ignore, divisor=divisor)
            loss = parts["loss"]
            if with_bias:
                bias = bias_loss(model).float()
                loss = loss + cfg.bias_weight * bias
                sums["bias"] += bias.detach()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                trainable = [p for p in model.parameters() if p.requires_grad]
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            sums["loss"] += loss.detach()
            sums["cls"] += parts["cls"].detach()
            sums["loc"] += parts["loc"].detach()
            done = step.index + 1
            if self.progress is not None and (done % report_every == 0 or done == len(steps)):
                self._emit(kind="step", phase=phase, epoch=epoch + 1, epochs=self._epochs(phase),
                           step=step.index + 1, steps=len(steps),
                           values={"loss": float(sums["loss"]) / (step.index + 1)})
        means = {k: float(v) / len(steps) for k, v in sums.items()}
        if self.dist.active:
            t = torch.tensor([means[k] for k in ("loss", "cls", "loc", "bias")], device=self.device)
            torch.distributed.all_reduce(t)
            means = dict(zip(("loss", "cls", "loc", "bias"), (t / self.dist.world_size).tolist(),
                             strict=True))
        if not math.isfinite(means["loss"]):
            raise TrainingError(f"training diverged in {phase} epoch {epoch + 1} (loss {means['loss']}); "
                                "lower the learning rate or resume from the last checkpoint")
        return means

    def validate(self, phase: str, *, detections: bool = True) -> dict[str, Any]:
        """Validation loss (the model-selection objective) and per-head loss and AP."""
        return validation_objective(self.model, self.vsets, [self._heads_for(phase, d) for d in
                                                             range(len(self.datasets))],
                                    self.device, self.config, self.autocast, multihead=phase == "multihead",
                                    detections=detections)

    # -- checkpoints -----------------------------------------------------------------------------------
    # -- the phases ------------------------------------------------------------------------------------
    def run(self) -> None:
        for index, phase in enumerate(PHASES):
            epochs = self._epochs(phase)
            if index < self.phase_index or epochs == 0:
                continue
            resuming_here = index == self.phase_index and self._resume_state is not None
            if not resuming_here:
                self.epoch, self.best_loss, self.best_epoch, self.best_state = 0, math.inf, -1, None
            self.phase_index = index
            self._start_phase(phase)
            if resuming_here:
                self.optimizer.load_state_dict(self._resume_state["optimizer"])
                if self.scheduler is not None and self._resume_state.get("scheduler") is not None:
                    self.scheduler.load_state_dict(self._resume_state["scheduler"])
                self.scaler.load_state_dict(self._resume_state["scaler"])
                self._resume_state = None
            self._emit(kind="phase", phase=phase, epoch=self.epoch, epochs=epochs,
                       steps=self.config.steps_per_epoch)
            log.info("%s: epochs %d..%d of %d", phase, self.epoch + 1, epochs, epochs)
            while self.epoch < epochs:
                self._one_epoch(phase, epochs)
            self.phase_results[phase] = {"epochs": epochs, "best_epoch": self.best_epoch,
                                         "best_valid_loss": finite_or_none(self.best_loss)}
            if self.dist.active:  # before the best weights are broadcast, which would hide a difference
                self._check_replicas(phase)
            self._restore_best()

    def _one_epoch(self, phase: str, epochs: int) -> None:
        cfg = self.config
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train = self.run_epoch(phase, self.epoch)
        self.epoch += 1
        last = self.epoch == epochs
        valid: dict[str, Any] = {"loss": None, "heads": {}}
        if self.dist.is_main and (self.epoch % cfg.valid_every == 0 or last):
            valid = self.validate(phase)
        objective = valid["loss"] if valid["loss"] is not None else train["loss"]
        improved = False
        if self.dist.is_main and (valid["loss"] is not None or not any(self.vsets)):
            if objective < self.best_loss:
                self._remember_best(phase, objective)
                improved = True
        record = {"phase": phase, "epoch": self.epoch, "epochs": epochs, "lr": lr, "train": train,
                  "valid": valid, "best": improved, "best_epoch": self.best_epoch,
                  "time_s": round(time.perf_counter() - start, 3)}
        self.history.append(record)
        if self.dist.is_main:
            append_record(self.out_dir / LOG, record)
        self._emit(kind="epoch", phase=phase, epoch=self.epoch, epochs=epochs, values=record)
        if self.epoch % cfg.checkpoint_every == 0 or last:
            self.write_checkpoint(phase)
        self.dist.barrier()

    def _check_replicas(self, phase: str) -> None:
        diff = replica_difference(self.model, self.dist)
        self.phase_results[phase]["replica_max_abs_diff"] = diff
        if diff != 0:
            log.warning("%s: the weights of the %d ranks differ by up to %g (expected identical)", phase,
                        self.dist.world_size, diff)

    def close(self) -> None:
        """Stop the loader's worker processes and drop the DDP wrapper (it holds the process group)."""
        self.loader.close()
        self.ddp_model = self.model

    # -- calibration -----------------------------------------------------------------------------------
    def calibrate(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Per-head threshold on validation data by ``config.calibration`` (best F1, or the thesis rule)."""
        cfg, box = self.config, self.model.config.particle_diameter_px
        phase = "multihead" if self.model.head_names else "pretrain"
        collected: dict[str, HeadValidation] = {}
        for d, vset in enumerate(self.vsets):
            if vset is None:
                continue
            _, validated = self._heads_for(phase, d)
            result = validate_heads(self.model, vset, validated, self.device, cfg, self.autocast,
                                    batch_size=max(1, 2 * cfg.batch_size))
            for head, hv in result.items():
                collected.setdefault(head, HeadValidation()).add_detections(hv)
        return calibrate_heads(collected, [GENERIC_HEAD, *self.model.head_names], box, cfg.calibration,
                               cfg.calibration_precision)


# --- public entry point ------------------------------------------------------------------------------

def train(data: Manifest | str | os.PathLike | Sequence[TrainingDataset], out_dir: str | os.PathLike, *,
          config: TrainConfig | None = None, model_config: ModelConfig | None = None,
          config_file: str | os.PathLike | None = None, architecture: str | None = None,
          overrides: Mapping[str, Any] | None = None, init: str | os.PathLike | None = None,
          resume: bool = False, device: str | torch.device = "auto", threads: int | None = None,
          progress: ProgressCallback | None = None, command: str | None = None) -> TrainResult:
    """Train a multi-head HydraPicker and write the calibrated model to ``out_dir/model.pt``.

    Parameters
    ----------
    data : Manifest, path of a TOML manifest, or list of TrainingDataset
        The datasets (see `hydrapick.training.datasets`).
    out_dir : path
        Output folder (created). It must not hold a previous run unless ``resume`` is set.
    config : TrainConfig
        Schedule, loss weights, augmentation; defaults from `hydrapick.config.TrainConfig`.
    model_config : ModelConfig
        Network of a fresh model (default: the thesis network). Ignored with ``init`` or ``resume``.
    config_file, architecture, overrides : optional
        Instead of ``config``/``model_config``: a TOML file of [train] and [model] tables
        (`read_config_file`), a network preset ('thesis' or 'light') and TrainConfig keys over the file's.
    init : path, optional
        Checkpoint whose body and generic head start the training (its dataset heads are dropped).
    resume : bool
        Continue the run in ``out_dir`` from its ``checkpoint.pt`` (same result as an uninterrupted run).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under ``torchrun`` each process takes its local GPU.
    threads : int, optional
        CPU threads for torch (set for the rest of the process).
    progress : callable, optional
        Receives `TrainEvent` s (rank 0 only).
    command : str, optional
        Command line recorded in the checkpoints.

    Raises
    ------
    hydrapick.training.ManifestError
        Bad manifest, missing files, micrographs without coordinates (every problem listed).
    TrainingError
        Output folder already used, resume state that does not fit, diverged training.
    ValueError
        A config file that cannot be read or holds unknown tables, keys or values.
    """
    if config_file is not None or architecture is not None or overrides:
        if config is not None or model_config is not None:
            raise ValueError("give either config/model_config or config_file/architecture/overrides")
        config, model_config = read_config_file(config_file, architecture, overrides)
    if threads:
        torch.set_num_threads(threads)
    config = config or TrainConfig()
    out = Path(out_dir)
    dist = distributed_context()
    dev = setup_device(device, dist)  # a group it joins is left when the process exits
    checkpoint = prepare_run_folder(out, resume, dist, final=FINAL, log_name=LOG)
    torch.manual_seed(config.seed)  # the fresh network's initial weights (identical on every rank)
    if dev.type == "cuda":  # crops have one fixed size, so cuDNN's per-shape algorithm search pays off
        torch.backends.cudnn.benchmark = True

    if isinstance(data, (Manifest, str, os.PathLike)):
        mc_for_data = model_config_for(resume, checkpoint, init, model_config)

        def loading(message: str, done: int, total: int) -> None:
            if progress is not None and dist.is_main:
                progress(TrainEvent(kind="load", step=done, steps=total, message=message))

        datasets = load_datasets(data, mc_for_data, cache_dtype=getattr(torch, config.cache_dtype),
                                 progress=loading, device=dev if dev.type == "cuda" else None)
        manifest_path = str(data.path if isinstance(data, Manifest) else data)
    else:
        datasets = list(data)
        manifest_path = None
    if not datasets:
        raise TrainingError("no datasets to train on")

    meta: dict[str, Any] | None = None
    if resume:
        model, meta = load_checkpoint(checkpoint)
    elif init is not None:
        base, _ = load_checkpoint(init)
        model = HydraPicker(base.config)
        model.body.load_state_dict(base.body.state_dict())
        model.heads[GENERIC_HEAD].load_state_dict(base.heads[GENERIC_HEAD].state_dict())
    else:
        model = HydraPicker(model_config or ModelConfig())
    trainer = Trainer(datasets, model, config, out, device=dev, dist=dist, progress=progress, command=command,
                      extra_summary={"manifest": manifest_path, "init": str(init) if init else None})
    if meta is not None:
        trainer.load_resume(meta)
        truncate_log(out / LOG, trainer, dist)
        trainer.history = read_log(out / LOG)
    try:
        trainer.run()
    finally:
        trainer.close()

    if progress is not None and dist.is_main:
        progress(TrainEvent(kind="calibrate", message="calibrating thresholds on validation data"))
    thresholds, report = trainer.calibrate() if dist.is_main else ({}, {})
    final_meta = trainer._metadata("model")
    final_meta["training"]["calibration"] = report
    final_meta["thresholds"] = thresholds
    final_meta["diameters_A"] = {GENERIC_HEAD: None, **{d.name: d.diameter_A for d in datasets
                                                         if d.name in trainer.model.head_names}}
    path = out / FINAL
    if dist.is_main:
        save_checkpoint(path, trainer.model, final_meta)
        log.info("wrote %s", path)
    dist.barrier()
    if progress is not None and dist.is_main:
        progress(TrainEvent(kind="done", values={"thresholds": thresholds, "path": str(path)}))
    return TrainResult(model=trainer.model, metadata=final_meta, path=path, history=trainer.history)
