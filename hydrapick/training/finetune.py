"""Few-shot fine-tuning: a new head for a new specimen from a few labelled micrographs (thesis 4.7).

The new head starts as a copy of the generic head; the body and every other head stay frozen. Because
the body is frozen, its features are computed once per micrograph (the whole micrograph at the model's
scale, as picking sees it) and the head is trained on random crops of the cached feature maps. Crops
start on whole anchor cells, so the head's stride-2 grid and the anchors line up exactly as they do when
the head later runs on a full micrograph. A step then costs only the head, which makes fine-tuning a
matter of minutes on a CPU. With ``train_body_blocks`` N the head also gets its own copy of the body's
last N blocks, trained with it (`hydrapick.training.heads.train_head`); the features are then cached
before those blocks, and the shared body still never changes.

The new head's score threshold is calibrated with the thesis rule (lowest threshold whose precision is
>= 0.8) on held-out labelled micrographs when they are given; otherwise by k-fold cross-validation over
the training micrographs (a head trained on the other folds scores each fold; the pooled scores give the
threshold), and the final head is then trained on all of them. Fold heads train for the final head's
steps times their share of the micrographs (the same number of passes over their data), so 2-fold
calibration costs one extra training. With a single labelled micrograph the generic head's threshold is
kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import (
    COINCIDENT_LABEL_PX,
    FALLBACK_THRESHOLD,
    SPARSE_LABEL_FRACTION,
    FinetuneConfig,
    ModelConfig,
    to_dict,
)
from ..device import resolve_device
from ..io.atomic import check_writable
from ..model import GENERIC_HEAD, HydraPicker, check_head_name
from ..picks import Picks
from .calibration import calibration_report, finite_or_none, sparse_calibration_report
from .datasets import MicrographSample, prepare_files
from .errors import FinetuneError
from .events import ProgressCallback, TrainEvent
from .heads import FeatureMap, compute_features, score_maps, train_head, unlabelled_share
from .manifest import DatasetSpec, ManifestError, check_micrograph_entry, resolve_dataset_files

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """The model with its new head, the checkpoint metadata, and the calibration report."""

    model: HydraPicker
    metadata: dict[str, Any]
    head: str
    threshold: float
    report: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# --- features ----------------------------------------------------------------------------------------

def _ap(truth: Picks, picks: Picks, names: list[str], box_px: float) -> float | None:
    from ..evaluation import evaluate

    return finite_or_none(evaluate(truth, picks, box_px, micrographs=names).ap)


def finetune_head(model: HydraPicker, name: str, train: Sequence[MicrographSample], *,
                  valid: Sequence[MicrographSample] = (), config: FinetuneConfig | None = None,
                  device: str | torch.device = "auto", generic_threshold: float | None = None,
                  progress: ProgressCallback | None = None) -> tuple[float, dict[str, Any]]:
    """Add and train head ``name`` on micrographs already at the model's scale; calibrate its threshold.

    Parameters
    ----------
    model : HydraPicker
        Base model (modified in place: it gains the head; nothing else changes).
    train, valid : sequences of MicrographSample
        Labelled micrographs at the model's scale (`hydrapick.training.datasets.MicrographSample`).
    generic_threshold : float, optional
        Used when calibration is impossible (a single labelled micrograph and no ``valid``).

    Returns
    -------
    threshold : float
    report : dict
        How the threshold was obtained, the new head's AP and the generic head's AP on the same data.
    """
    config = config or FinetuneConfig()
    dev = resolve_device(device)
    if not train:
        raise FinetuneError("no training micrographs")
    if not sum(len(s.centres) for s in train):
        raise FinetuneError("the training micrographs hold no particles")
    if not 0 <= config.train_body_blocks <= model.config.body_blocks:
        raise FinetuneError(f"train_body_blocks must be 0-{model.config.body_blocks} (the base model's body "
                            f"blocks), got {config.train_body_blocks}; 0 (--train-body-blocks 0) trains the "
                            "head alone")
    model.to(dev)
    box = model.config.particle_diameter_px
    dtype = getattr(torch, config.feature_dtype)
    # With body blocks to train, features are cached before them: a step runs those blocks and the head.
    depth = model.config.body_blocks - config.train_body_blocks
    maps = compute_features(model, train, device=dev, flips=config.flips, dtype=dtype, depth=depth,
                            progress=progress)
    report: dict[str, Any] = {"n_train": len(train), "n_valid": len(valid),
                              "particles_train": int(sum(len(s.centres) for s in train)),
                              "steps": config.steps}

    def plain(samples: Sequence[MicrographSample]) -> list[FeatureMap]:
        # The unflipped copy of each micrograph, for scoring whole micrographs.
        return [m for m in maps if m.name.endswith("#0")] if samples is train else compute_features(
            model, samples, device=dev, flips=False, dtype=dtype, depth=depth)

    generic_on_train = score_maps(model, GENERIC_HEAD, plain(train), device=dev)
    expected = _sparse_labels(report, config, *generic_on_train, generic_threshold, box)
    prior = None if expected is None else unlabelled_share(plain(train), model.config, expected)
    if prior is not None:
        report["sparse"]["unlabelled_share"] = prior

    def calibrated(truth: Picks, picks: Picks, names: list[str]) -> dict[str, Any]:
        if expected is None:
            return calibration_report(truth, picks, names, box, config.calibration,
                                      config.calibration_precision)
        return sparse_calibration_report(truth, picks, names, box, config.calibration,
                                         config.calibration_precision, expected)

    def generic_ap(truth: Picks, picks: Picks, names: list[str]) -> float | None:
        # Against sparse labels every pick of an unlabelled particle would count as false: no AP.
        return None if expected is not None else _ap(truth, picks, names, box)

    folds = min(config.cv_folds, len(train)) if not valid and len(train) >= 2 else 0
    fold_of = np.arange(len(train)) % max(folds, 1)
    np.random.default_rng([config.seed, 0xC0FF]).shuffle(fold_of)

    def fold_steps(f: int) -> int:
        # A fold head sees part of the data; scaling its steps to that share gives it as many passes
        # over its particles as the final head gets over all of them, at a fraction of the cost.
        return max(1, round(config.steps * np.count_nonzero(fold_of != f) / len(train)))

    if progress is not None:
        folds_total = sum(fold_steps(f) for f in range(folds)) if folds >= 2 else 0
        progress(TrainEvent(kind="plan", steps=folds_total + config.steps))
    threshold: float
    if valid:
        vmaps = plain(valid)
        losses = train_head(model, name, maps, config, device=dev, progress=progress, share=prior)
        truth, picks = score_maps(model, name, vmaps, device=dev)
        names = [m.name for m in vmaps]
        report.update(calibrated(truth, picks, names), source="held-out micrographs")
        report["generic_ap"] = generic_ap(*score_maps(model, GENERIC_HEAD, vmaps, device=dev), names)
        threshold = report["threshold"]
    elif folds >= 2:
        truths, pickss = [], []
        for f in range(folds):
            held = {train[i].name for i in np.flatnonzero(fold_of == f)}
            fold_maps = [m for m in maps if m.name.split("#")[0] not in held]
            scratch = f"{name}__fold{f}"
            fold_config = replace(config, steps=fold_steps(f))
            train_head(model, scratch, fold_maps, fold_config, device=dev, progress=progress,
                       phase=f"fold {f + 1}/{folds}", share=prior)
            held_maps = [m for m in plain(train) if m.name.split("#")[0] in held]
            t, p = score_maps(model, scratch, held_maps, device=dev)
            truths.append(t)
            pickss.append(p)
            model.remove_head(scratch)
        truth, picks = Picks.concat(truths), Picks.concat(pickss)
        names = [m.name for m in plain(train)]
        report.update(calibrated(truth, picks, names), source=f"{folds}-fold cross-validation")
        report["generic_ap"] = generic_ap(*generic_on_train, names)
        threshold = report["threshold"]
        losses = train_head(model, name, maps, config, device=dev, progress=progress, share=prior)
    else:
        losses = train_head(model, name, maps, config, device=dev, progress=progress, share=prior)
        threshold = generic_threshold if generic_threshold is not None else FALLBACK_THRESHOLD
        if config.cv_folds >= 2:
            log.warning("one labelled micrograph and no held-out ones: the threshold of head %s cannot "
                        "be calibrated; using %.3f", name, threshold)
        report["source"] = ("generic head's threshold" if generic_threshold is not None
                            else f"default {FALLBACK_THRESHOLD:g}")
        report["threshold"] = threshold
    report["final_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))
    return float(threshold), report


def _sparse_labels(report: dict[str, Any], config: FinetuneConfig, labelled: Picks, generic_picks: Picks,
                   generic_threshold: float | None, box_px: float) -> float | None:
    """The expected particles per micrograph when the labels are sparse (``config.sparse``, or
    ``config.expected_particles`` given), else None; the evidence goes into ``report``.

    Without ``expected_particles``: the generic head's confident picks (score >= its threshold) on the
    training micrographs, divided by the share of the labelled particles they find. The labelled
    particles are a random subset, so that share estimates the head's recall on all particles, and at
    its threshold (chosen for precision) nearly every confident pick is a particle: picks / recall
    estimates the particles present. Labels that number fewer than `SPARSE_LABEL_FRACTION` x those
    picks, when sparse labels are not switched on, draw a warning: particles left unlabelled are taught
    as background.

    Raises
    ------
    FinetuneError
        Sparse labels, no ``expected_particles`` and no confident generic picks to estimate it from.
    """
    cut = generic_threshold if generic_threshold is not None else FALLBACK_THRESHOLD
    confident = int(np.count_nonzero(generic_picks.score >= cut))
    report["generic_confident_picks"] = confident
    labels, n = report["particles_train"], report["n_train"]
    sparse = config.sparse or config.expected_particles is not None
    report["sparse"] = {"sparse": False}
    if not sparse:
        if labels < SPARSE_LABEL_FRACTION * confident:
            log.warning("%d labels on %d micrograph(s), but the generic head confidently picks %d particles "
                        "there: particles left unlabelled are learnt as background and the new head will "
                        "pick few. If only some particles are labelled, give --sparse (and "
                        "--expected-particles N if you know how many a micrograph holds); otherwise, "
                        "unless most of those picks are junk, label every particle on each labelled "
                        "micrograph (fewer micrographs, completely labelled, teach more)",
                        labels, n, confident)
        return None
    if config.expected_particles is not None:
        expected = config.expected_particles
    else:
        from ..evaluation import evaluate

        names = sorted(set(labelled.micrograph.tolist()))
        recall = evaluate(labelled, generic_picks, box_px, threshold=cut, micrographs=names).recall
        # A head that finds almost none of the labelled particles gives no usable count.
        report["generic_recall_of_labels"] = finite_or_none(recall)
        expected = confident / max(1, n) / max(recall, 0.1) if np.isfinite(recall) else 0.0
    if expected <= 0:
        raise FinetuneError("sparse labels: the generic head picks nothing confidently on the training "
                            "micrographs, so the particles per micrograph cannot be estimated; give "
                            "--expected-particles")
    if expected * n <= labels:
        log.warning("sparse labels: %d labels on %d micrograph(s) already reach the %g particles per "
                    "micrograph expected; training as fully labelled", labels, n, expected)
        return None
    log.info("sparse labels: %d labels on %d micrograph(s), %.1f particles per micrograph expected",
             labels, n, expected)
    report["sparse"] = {"sparse": True, "expected_particles": float(expected),
                        "source": "given" if config.expected_particles is not None
                        else "generic head's confident picks / their recall of the labels"}
    return float(expected)


def _merge_coincident_labels(samples: list[MicrographSample], model_config: ModelConfig,
                             what: str) -> list[MicrographSample]:
    """Samples with labels closer than `COINCIDENT_LABEL_PX` micrograph pixels merged (one particle
    written twice would otherwise train and calibrate twice); the count is logged."""
    from ..evaluation.coordinates import merge_coincident

    out, merged = [], 0
    for sample in samples:
        # COINCIDENT_LABEL_PX micrograph pixels in model pixels.
        within = (COINCIDENT_LABEL_PX * sample.pixel_size_A * model_config.particle_diameter_px
                  / sample.diameter_A)
        xy = sample.centres.double().numpy()
        kept, n = merge_coincident(Picks(sample.name, xy[:, 0], xy[:, 1]), within)
        if n:
            centres = torch.as_tensor(np.stack([kept.x, kept.y], axis=1), dtype=sample.centres.dtype)
            sample = replace(sample, centres=centres.reshape(-1, 2))
            merged += n
        out.append(sample)
    if merged:
        log.warning("%s coordinates: merged %d coincident labels (closer than %g px: one particle written "
                    "twice)", what, merged, COINCIDENT_LABEL_PX)
    return out


# --- files in, checkpoint out ------------------------------------------------------------------------

def load_labelled(micrographs: Sequence[str], coordinates: Sequence[str], diameter_A: float,
                  model_config: ModelConfig, *, pixel_size_A: float | None = None,
                  coordinate_format: str | None = None, flip_y: bool = False, what: str = "training",
                  progress: ProgressCallback | None = None) -> list[MicrographSample]:
    """Read labelled micrographs and bring them to the model's scale (every problem listed at once).

    ``micrographs`` and ``coordinates`` take the forms of a manifest's keys of the same names.

    Raises
    ------
    hydrapick.training.ManifestError
    """
    spec = DatasetSpec(name=what, micrographs=tuple(os.fspath(m) for m in micrographs),
                       coordinates=tuple(os.fspath(c) for c in coordinates),
                       coordinate_format=coordinate_format, flip_y=flip_y, diameter_A=float(diameter_A),
                       pixel_size_A=pixel_size_A)
    source = f"{what} micrographs"
    problems: list[str] = []
    for entry in spec.micrographs:
        check_micrograph_entry(entry, what, problems)
    if problems:
        raise ManifestError(source, problems)
    # Every labelled micrograph trains: no validation or test split is drawn from them.
    files = resolve_dataset_files(spec, problems, valid_fraction=0.0, test_fraction=0.0, where=what)
    if problems:
        raise ManifestError(source, problems)

    def loaded(key: str) -> None:
        if progress is not None:
            progress(TrainEvent(kind="load", step=list(files.labelled).index(key) + 1,
                                steps=len(files.labelled), message=key))

    samples = list(prepare_files(files, float(diameter_A), model_config, on_each=loaded).values())
    return _merge_coincident_labels(samples, model_config, what)


def load_base(model: str | os.PathLike | None) -> tuple[HydraPicker, dict[str, Any]]:
    """The base model: a checkpoint file, or the bundled generic model when ``model`` is None.

    Raises
    ------
    hydrapick.checkpoint.CheckpointError
        Unreadable checkpoint, or no bundled model in this installation.
    """
    if model is not None:
        return load_checkpoint(model)
    from ..checkpoint import load_model

    return load_model(None)


def finetune(base: str | os.PathLike | tuple[HydraPicker, dict[str, Any]] | None, name: str,
             micrographs: Sequence[str], coordinates: Sequence[str], diameter_A: float, *,
             pixel_size_A: float | None = None, coordinate_format: str | None = None, flip_y: bool = False,
             valid_micrographs: Sequence[str] = (), valid_coordinates: Sequence[str] = (),
             config: FinetuneConfig | None = None, device: str | torch.device = "auto",
             threads: int | None = None, output: str | os.PathLike | None = None,
             progress: ProgressCallback | None = None, command: str | None = None) -> FinetuneResult:
    """Fine-tune a new head ``name`` and (with ``output``) write a checkpoint usable for picking.

    Parameters
    ----------
    base : path, (model, metadata) or None
        Base checkpoint; None for the bundled generic model.
    name : str
        Name of the new head (letters, digits, ``_``, ``-``, ``+``).
    micrographs, coordinates : sequences of str
        Training micrographs (files, globs, folders, lists) and their coordinates (files, folders,
        globs, in any format hydrapick reads; matched to micrographs by name).
    diameter_A : float
        Particle diameter in Å (stored with the head, used by ``hydrapick pick --head name``).
    valid_micrographs, valid_coordinates : optional
        Held-out labelled micrographs for calibrating the threshold (else cross-validation).
    threads : int, optional
        CPU threads for torch (set for the rest of the process; default: torch's own setting).

    Raises
    ------
    hydrapick.training.ManifestError, FinetuneError, hydrapick.checkpoint.CheckpointError
    """
    config = config or FinetuneConfig()
    if output is not None:  # checked before the training, which an unwritable output would throw away
        check_writable(output, "output")
    if threads:
        torch.set_num_threads(threads)
    model, meta = base if isinstance(base, tuple) else load_base(base)
    if name == GENERIC_HEAD or name in model.heads:
        raise FinetuneError(f"the base model already has a head named '{name}'; choose another name")
    try:
        check_head_name(name)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    if bool(valid_micrographs) != bool(valid_coordinates):
        raise FinetuneError("held-out micrographs need both micrographs and coordinates")
    train = load_labelled(micrographs, coordinates, diameter_A, model.config, pixel_size_A=pixel_size_A,
                          coordinate_format=coordinate_format, flip_y=flip_y, progress=progress)
    valid = (load_labelled(valid_micrographs, valid_coordinates, diameter_A, model.config,
                           pixel_size_A=pixel_size_A, coordinate_format=coordinate_format, flip_y=flip_y,
                           what="held-out", progress=progress) if valid_micrographs else [])
    overlap = {s.name for s in train} & {s.name for s in valid}
    if overlap:
        raise FinetuneError(f"micrographs both in training and held out: {', '.join(sorted(overlap))}")
    thresholds = dict(meta.get("thresholds") or {})
    threshold, report = finetune_head(model, name, train, valid=valid, config=config, device=device,
                                      generic_threshold=thresholds.get(GENERIC_HEAD), progress=progress)
    metadata = {k: v for k, v in meta.items()
                if k not in ("format_version", "hydrapick_version", "model_config", "heads", "created")}
    metadata["thresholds"] = {**thresholds, name: threshold}
    metadata["diameters_A"] = {**dict(meta.get("diameters_A") or {}), name: float(diameter_A)}
    training = dict(meta.get("training") or {})
    finetunes = dict(training.get("finetune") or {})
    finetunes[name] = {"config": to_dict(config), "diameter_A": float(diameter_A),
                       "micrographs": [s.name for s in train], "held_out": [s.name for s in valid],
                       "calibration": report, "base_created": meta.get("created")}
    training["finetune"] = finetunes
    metadata["training"] = training
    metadata["command"] = command if command is not None else "hydrapick.finetune.finetune()"
    model.to("cpu")
    path = save_checkpoint(output, model, metadata) if output is not None else None
    return FinetuneResult(model=model, metadata=metadata, head=name, threshold=threshold, report=report,
                          path=path)
