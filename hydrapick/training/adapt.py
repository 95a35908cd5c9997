"""Label-free adaptation to the user's dataset: a new head learnt from the micrographs themselves.

The generic head already finds most particles of an unseen specimen; what it lacks is this dataset's
particle and background appearance. Adaptation is self-training (pseudo-labels, as in noisy-student
training) with the positive-unlabelled caution of Topaz: only the generic head's most confident picks are
taken as particles, only places where it sees nothing are taken as background, and everything in between
is left out of the loss rather than called background. A new head, a copy of the generic one, is trained
on the cached body features (`hydrapick.training.heads`), so a round costs seconds to minutes on a CPU;
each round re-seeds from the head of the round before.

How many particles a micrograph holds is estimated once, from the generic head at its calibrated
threshold; the adapted head's threshold is set so that it picks as many on the adaptation micrographs.
A self-check on micrographs held out from the training decides whether the adapted head is used: it must
find most of the generic head's surest picks there (they are nearly all particles), pick a similar
number of particles, and keep at least half of the generic head's candidates (so that it still ranks
what it was not told). Otherwise the generic head is kept and the report says why.

The teacher need not be the generic head: a head fine-tuned on a few labelled micrographs
(`hydrapick finetune`) teaches the same way (``base``; `hydrapick pick --model FT --head NAME --adapt`),
which is self-training on the run's unlabelled micrographs after fine-tuning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import ADAPT_MIN_MICROGRAPHS, FALLBACK_THRESHOLD, AdaptConfig, FinetuneConfig, ModelConfig
from ..model import GENERIC_HEAD, HydraPicker
from ..model.anchors import anchor_centres, detect_picks
from ..model.head import full_resolution_blocks
from ..picks import Picks
from ..preprocess import prepare
from .datasets import MicrographSample, read_image
from .events import ProgressCallback, TrainEvent
from .heads import FeatureMap, compute_features, train_head

log = logging.getLogger(__name__)

ADAPTED_HEAD = "adapted"


@dataclass
class AdaptResult:
    """The model (with head ``adapted`` when it was kept), the head and threshold to pick with, and what
    was learnt (``report``: micrographs, rounds, seeds, estimated particles, self-check, decision)."""

    model: HydraPicker
    metadata: dict[str, Any]
    head: str
    threshold: float
    kept: bool
    report: dict[str, Any] = field(default_factory=dict)


def spread(items: Sequence, count: int) -> list:
    """Up to ``count`` of ``items``, evenly spread over the sequence (first and last included)."""
    if len(items) <= count:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in idx]


def readable_micrographs(items: Sequence, count: int, pixel_size_A: float | None = None,
                         ) -> list[tuple[str, str, float]]:
    """Up to ``count`` of ``items`` (`hydrapick.io.inputs.MicrographInput`) to learn from, spread over the
    run, as ``(path, name, pixel_size_A)``: one that cannot be read (a truncated copy) is left out with a
    warning, and the next readable ones stand in for it; it is reported when it is picked.

    Raises
    ------
    ValueError
        A chosen micrograph has no pixel size (none given, none in the list or header).
    """
    from ..io import FormatError, read_micrograph
    from ..io.mrc import no_pixel_size

    first = spread(list(items), count)
    order = {id(it): i for i, it in enumerate(items)}
    chosen = []
    for item in first + [it for it in items if all(it is not f for f in first)]:
        if len(chosen) == count:
            break
        try:
            header_size = read_micrograph(item.path).pixel_size_A  # memory-mapped: a header read
        except (FormatError, OSError, ValueError) as exc:
            log.warning("adaptation leaves out %s: %s", item.name, " ".join(str(exc).split()))
            continue
        size = pixel_size_A or item.pixel_size_A or header_size
        if not size:
            raise ValueError(f"{no_pixel_size(item.path)}; give --apix")
        chosen.append((order[id(item)], (item.path, item.name, float(size))))
    return [entry for _, entry in sorted(chosen, key=lambda pair: pair[0])]


def load_unlabelled(micrographs: Sequence[tuple[str, str, float]], diameter_A: float,
                    model_config: ModelConfig) -> list[MicrographSample]:
    """``(path, name, pixel_size_A)`` micrographs at the model's scale, with no particles."""
    samples = []
    for path, name, pixel_size_A in micrographs:
        prepared = prepare(read_image(path), pixel_size_A, diameter_A, model_config)
        samples.append(MicrographSample(name=name, source=path, image=prepared.image,
                                        centres=torch.zeros((0, 2)), pixel_size_A=float(pixel_size_A),
                                        diameter_A=float(diameter_A)))
    return samples


@torch.no_grad()
def candidates(model: HydraPicker, head: str, maps: Sequence[FeatureMap], floor: float,
               device: torch.device) -> list[Picks]:
    """Scored candidates of ``head`` on each map (model pixels), those within half a diameter of the
    edge left out as `hydrapick pick` leaves them out by default."""
    mc = model.config
    model.eval()
    out = []
    for m in maps:
        outputs = model.head_forward(m.features[None].to(device).float(), head, m.start_block, m.depth)[0]
        anchors = anchor_centres(m.shape[0], m.shape[1], mc, device=device)
        picks = detect_picks(outputs, anchors, mc, m.name, score_floor=floor)
        out.append(picks.inside(m.shape[0], m.shape[1], mc.particle_diameter_px / 2))
    return out


def _points(picks: Picks, keep: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.stack([picks.x[keep], picks.y[keep]], axis=1).reshape(-1, 2),
                           dtype=torch.float32)


def seed(picks: Picks, n_particles: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(particles, uncertain) of one micrograph: the ``fraction`` x ``n_particles`` best candidates, and
    every other candidate (all of ``picks`` are above the uncertainty floor)."""
    k = min(len(picks), math.ceil(fraction * n_particles))
    best = np.zeros(len(picks), dtype=bool)
    best[np.argsort(-picks.score, kind="stable")[:k]] = True
    return _points(picks, best), _points(picks, ~best)


def recovered(reference: Picks, found: Picks, radius_px: float) -> float:
    """Share of ``reference`` picks with a ``found`` pick within ``radius_px`` (NaN when there are none)."""
    if len(reference) == 0:
        return float("nan")
    if len(found) == 0:
        return 0.0
    ref = np.stack([reference.x, reference.y], axis=1)
    got = np.stack([found.x, found.y], axis=1)
    d = np.sqrt(((ref[:, None, :] - got[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return float((d < radius_px).mean())


def count_threshold(picks: Sequence[Picks], count: int) -> float:
    """The score at which ``picks`` together hold ``count`` picks (the lowest score when they hold fewer)."""
    scores = np.sort(np.concatenate([p.score for p in picks] or [np.zeros(0)]))[::-1]
    if len(scores) == 0:
        return FALLBACK_THRESHOLD
    return float(scores[min(len(scores), max(1, count)) - 1])


@torch.no_grad()
def interpolate_heads(model: HydraPicker, name: str, base: str, weight: float) -> None:
    """Head ``name`` <- ``weight`` x itself + (1 - ``weight``) x head ``base``, parameter by parameter.

    Weight-space ensembling of a fine-tuned model with the one it started from (WiSE-FT: Wortsman et al.,
    CVPR 2022) keeps most of the gain on the new data and the robustness of the start.
    """
    for p, q in zip(model.heads[name].parameters(), model.heads[base].parameters(), strict=True):
        p.mul_(weight).add_(q, alpha=1 - weight)


def adapt(model: HydraPicker, metadata: dict[str, Any], micrographs: Sequence[tuple[str, str, float]],
          diameter_A: float, *, config: AdaptConfig | None = None, device: torch.device | None = None,
          progress: ProgressCallback | None = None, base: str = GENERIC_HEAD) -> AdaptResult:
    """Learn head ``adapted`` from unlabelled ``micrographs`` (``(path, name, pixel_size_A)``), taught by
    head ``base`` (the generic head, or a fine-tuned one) and started from a copy of it.

    ``model`` is changed in place (the head is added, or removed again when the self-check rejects it);
    the returned metadata carries the new head's threshold, diameter and provenance.
    """
    config = config or AdaptConfig()
    device = device or torch.device("cpu")
    mc = model.config
    if ADAPTED_HEAD in model.heads:
        raise ValueError(f"the model already has a head '{ADAPTED_HEAD}': pick with it (--head "
                         f"{ADAPTED_HEAD}) instead of adapting again")
    if base not in model.heads:
        raise ValueError(f"no head '{base}' to adapt from; heads: {', '.join(model.heads)}")
    teacher = "the generic head" if base == GENERIC_HEAD else f"head '{base}'"
    base_threshold = float((metadata.get("thresholds") or {}).get(base) or FALLBACK_THRESHOLD)
    chosen = spread(list(micrographs), config.micrographs)
    if len(chosen) < ADAPT_MIN_MICROGRAPHS:
        # Nothing would be left to hold out: a check on the training micrographs themselves passes
        # whatever was learnt, so an unchecked head is never used.
        reason = (f"{len(chosen)} micrograph{'s' if len(chosen) != 1 else ''} too few for the self-check "
                  f"(it needs at least {ADAPT_MIN_MICROGRAPHS}: one held out, the rest to learn from)")
        log.warning("adaptation not run (%s); picking with %s", reason, teacher)
        return AdaptResult(model, metadata, base, base_threshold, False,
                           {"micrographs": [name for _, name, _ in chosen], "held_out": [], "rounds": 0,
                            "base_head": base,
                            "seeds": [], "kept": False, "reason": reason})
    samples = load_unlabelled(chosen, diameter_A, mc)
    # A network whose head halves the resolution at once has no full-resolution block to freeze.
    # A teacher with its own copy of the last body blocks passes them on: the student trains them too, on
    # features cached before them (and then no head block is frozen).
    tail = len(model.heads[base].body_tail)
    frozen = 0 if tail else min(config.frozen_blocks, full_resolution_blocks(mc))
    maps = compute_features(model, samples, device=device, frozen_blocks=frozen, trunk_head=base,
                            depth=model.head_depth(base) if tail else None, progress=progress)
    n_check = max(1, round(config.holdout * len(maps)))
    # Held-out micrographs are spread over the run, as the training ones are.
    check_idx = set(np.linspace(0, len(maps) - 1, n_check + 2)[1:-1].round().astype(int))
    fit = [m for i, m in enumerate(maps) if i not in check_idx]
    check = [m for i, m in enumerate(maps) if i in check_idx]

    generic = candidates(model, base, maps, config.uncertain_score, device)
    n_est = [int((p.score >= base_threshold).sum()) for p in generic]
    report: dict[str, Any] = {
        "micrographs": [m.name for m in maps], "held_out": [m.name for m in check],
        "rounds": config.rounds, "base_head": base, "generic_threshold": base_threshold,
        "estimated_particles_per_micrograph": float(np.mean(n_est)) if n_est else 0.0, "seeds": []}
    current = generic
    by_name = {m.name: i for i, m in enumerate(maps)}
    count_prior = config.objective == "count-prior"
    for r in range(config.rounds):
        for m in fit:
            i = by_name[m.name]
            m.centres, m.uncertain = seed(current[i], n_est[i], config.positive_fraction)
            if count_prior:  # every place but the seeds is unlabelled
                m.uncertain = torch.zeros((0, 2))
        report["seeds"].append({"particles": int(sum(len(m.centres) for m in fit)),
                                "uncertain": int(sum(len(m.uncertain) for m in fit))})
        if progress is not None:
            progress(TrainEvent(kind="phase", phase=f"adapt round {r + 1}/{config.rounds}",
                                message=f"{report['seeds'][-1]['particles']} seed particles"))
        if ADAPTED_HEAD in model.heads:  # each round's student starts again from the teacher
            model.remove_head(ADAPTED_HEAD)
        head_config = FinetuneConfig(
            seed=config.seed + r, steps=config.steps, batch_size=config.batch_size, crop_px=config.crop_px,
            lr=config.lr, count_weight=config.count_weight, train_body_blocks=tail,
            # Seeds are positive_fraction of the estimated particles: the rest are among the unlabelled.
            unlabelled_ratio=(1 - config.positive_fraction) / config.positive_fraction if count_prior
            else None)
        train_head(model, ADAPTED_HEAD, fit, head_config, device=device, progress=progress,
                   phase=f"adapt {r + 1}/{config.rounds}", init_from=base)
        if config.interpolation < 1:
            interpolate_heads(model, ADAPTED_HEAD, base, config.interpolation)
        current = candidates(model, ADAPTED_HEAD, maps, config.uncertain_score, device)

    fit_idx = [by_name[m.name] for m in fit]
    threshold = count_threshold([current[i] for i in fit_idx], sum(n_est[i] for i in fit_idx))
    kept, reason, check_report = self_check(generic, current, n_est, [by_name[m.name] for m in check],
                                            threshold, config, mc)
    report.update(threshold=threshold, self_check=check_report, kept=kept, reason=reason)
    if not kept:
        model.remove_head(ADAPTED_HEAD)
        log.warning("adaptation not used (%s); picking with %s", reason, teacher)
        return AdaptResult(model, metadata, base, base_threshold, False, report)
    meta = dict(metadata)
    meta["thresholds"] = {**(metadata.get("thresholds") or {}), ADAPTED_HEAD: threshold}
    meta["diameters_A"] = {**(metadata.get("diameters_A") or {}), ADAPTED_HEAD: float(diameter_A)}
    meta["adaptation"] = {**report, "diameter_A": float(diameter_A),
                          "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}
    return AdaptResult(model, meta, ADAPTED_HEAD, threshold, True, report)


def self_check(generic: Sequence[Picks], adapted: Sequence[Picks], n_est: Sequence[int],
               check: Sequence[int], threshold: float, config: AdaptConfig, mc: ModelConfig,
               ) -> tuple[bool, str, dict[str, Any]]:
    """Whether the adapted head may be used, judged on the held-out micrographs ``check``."""
    radius = mc.particle_diameter_px / 2
    surest = [generic[i].sorted_by_score()[:math.ceil(config.positive_fraction * n_est[i])] for i in check]
    found = [adapted[i].above(threshold) for i in check]
    recovery = recovered(Picks.concat(surest), Picks.concat(found), radius) if surest else float("nan")
    expected = sum(n_est[i] for i in check)
    ratio = sum(len(f) for f in found) / expected if expected else float("nan")
    # Candidates above the uncertainty floor, adapted against generic: a head that keeps the seeds and
    # pushes everything else under the floor still recovers the seeds, but ranks nothing it was not told.
    generic_candidates = sum(len(generic[i]) for i in check)
    kept_share = (sum(len(adapted[i]) for i in check) / generic_candidates if generic_candidates
                  else float("nan"))
    report = {"seed_recovery": recovery, "count_ratio": ratio, "candidate_ratio": kept_share,
              "micrographs": len(check)}
    if expected == 0:
        return False, "the generic head finds no particles to learn from", report
    if not recovery >= config.min_recovery:
        return False, (f"the adapted head finds {recovery:.0%} of the generic head's surest picks on "
                       f"held-out micrographs (needs {config.min_recovery:.0%})"), report
    if not 1 / config.max_count_ratio <= ratio <= config.max_count_ratio:
        return False, f"the adapted head picks {ratio:.2f}x the expected number of particles", report
    if not kept_share >= config.min_candidate_ratio:
        return False, (f"the adapted head keeps {kept_share:.0%} of the generic head's candidates on "
                       f"held-out micrographs (needs {config.min_candidate_ratio:.0%})"), report
    held = f"{len(check)} held-out micrograph{'s' if len(check) != 1 else ''}"
    return True, (f"seed recovery {recovery:.0%}, count ratio {ratio:.2f}, candidates kept {kept_share:.0%} "
                  f"on {held}"), report
