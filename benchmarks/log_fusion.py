"""Would a blob detector's opinion improve hydrapick's ranking? Score fusion with a LoG response.

Each candidate of a hydrapick picks file (written with a low ``--threshold``, e.g. 0.05) gets the
response of a scale-normalised Laplacian-of-Gaussian at its place: the micrograph is prepared as `pick`
prepares it (the particle at the model's diameter), averaged in 4 x 4 blocks, and filtered at 0.8-1.2x
the particle's scale, dark blobs positive, the largest response over the scales kept. Within each
micrograph the responses become ranks in (0, 1), and the fused score is ``score + w * rank``. The script
prints AP / best F1 for each weight, for the LoG ranks alone, and how well the LoG separates the
network's sure picks (score >= 0.5) from its unsure candidates (< 0.15): the area under that ROC curve.

    python benchmarks/log_fusion.py runs/adopt11/zero_shot/candidate/t6b7n/zero.star \\
        runs/adopt11/zero_shot/candidate/t6b7n/zero_mics runs/adopt11/zero_shot/candidate/t6b7n/zero_truth \\
        --diameter 146.95

It is an analysis, not a picker option: the result and the decision are in docs/model.md ("Score fusion
with a blob detector").
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hydrapick.checkpoint import load_model
from hydrapick.config import ModelConfig
from hydrapick.evaluation import evaluate_picks_files
from hydrapick.io import read_coordinates, write_coordinates
from hydrapick.io.mrc import read_micrograph
from hydrapick.picks import Picks
from hydrapick.preprocess import prepare

BLOCK = 4  # the LoG runs on 4 x 4 block means: the particle is then about 12 px, plenty for a blob filter
SCALES = (0.8, 0.9, 1.0, 1.1, 1.2)
WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a 2D image with reflected borders."""
    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    out = F.pad(image[None, None], (r, r, r, r), mode="reflect")
    out = F.conv2d(F.conv2d(out, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return out[0, 0]


def log_response(image: torch.Tensor, diameter_px: float) -> torch.Tensor:
    """Scale-normalised LoG of ``image`` (dark blobs positive) on a grid of ``BLOCK`` pixels.

    A blob of diameter d answers most strongly at sigma = d / (2 sqrt 2); the largest response over
    ``SCALES`` times that is kept. Element (i, j) belongs to pixel (BLOCK i, BLOCK j) of ``image``.
    """
    small = F.avg_pool2d(image[None, None].float(), BLOCK, ceil_mode=True)[0, 0]
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    best = None
    for s in SCALES:
        sigma = s * diameter_px / BLOCK / (2 * math.sqrt(2))
        blurred = gaussian_blur(small, sigma)
        lap = F.conv2d(F.pad(blurred[None, None], (1, 1, 1, 1), mode="replicate"), laplacian)[0, 0]
        response = sigma ** 2 * lap
        best = response if best is None else torch.maximum(best, response)
    return best


def responses_at(response: torch.Tensor, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The largest response within one grid step of each model-scale position (x, y)."""
    pooled = F.max_pool2d(response[None, None], 3, 1, 1)[0, 0].numpy()
    gx = np.clip(np.round(x / BLOCK).astype(int), 0, pooled.shape[1] - 1)
    gy = np.clip(np.round(y / BLOCK).astype(int), 0, pooled.shape[0] - 1)
    return pooled[gy, gx]


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks in (0, 1): (place + 0.5) / n, the largest value last."""
    return (np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / max(1, len(values))


def fuse(picks: Picks, responses: np.ndarray, weight: float) -> Picks:
    """``score + weight * rank of the response within its micrograph``."""
    fused = picks.score.astype(float).copy()
    for name in np.unique(picks.micrograph):
        sel = np.flatnonzero(picks.micrograph == name)
        fused[sel] += weight * ranks(responses[sel])
    return Picks(picks.micrograph, picks.x, picks.y, fused, picks.diameter_px)


def separation(scores: np.ndarray, responses: np.ndarray, sure: float = 0.5, unsure: float = 0.15) -> float:
    """Probability that a sure pick's response beats an unsure candidate's (ties one half)."""
    a, b = responses[scores >= sure], responses[scores < unsure]
    if not len(a) or not len(b):
        return float("nan")
    wins = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    return float(wins / (len(a) * len(b)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("picks", type=Path, help="hydrapick candidates (any coordinate format)")
    p.add_argument("micrographs", type=Path, help="folder of the micrographs (.mrc)")
    p.add_argument("truth", type=Path, help="folder or file of true coordinates")
    p.add_argument("--diameter", type=float, required=True, help="particle diameter in Å")
    p.add_argument("--apix", type=float, help="pixel size in Å (default: each micrograph's header)")
    p.add_argument("--border", type=float, help="edge rule in Å, as hydrapick evaluate --border")
    p.add_argument("--model", help="checkpoint whose particle scale to use (default: the bundled model)")
    p.add_argument("--out", type=Path, default=Path("runs/log_fusion"), help="fused picks files go here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model_config = ModelConfig(**load_model(args.model)[1]["model_config"])
    picks = read_coordinates(args.picks)
    responses = np.zeros(len(picks))
    for name in np.unique(picks.micrograph):
        mic = read_micrograph(args.micrographs / (Path(name).stem + ".mrc"), pixel_size_A=args.apix)
        prepared = prepare(np.array(mic.data), mic.pixel_size_A, args.diameter, model_config)
        response = log_response(prepared.image, model_config.particle_diameter_px)
        sel = np.flatnonzero(picks.micrograph == name)
        at = prepared.to_model(picks[sel])
        responses[sel] = responses_at(response, at.x, at.y)
    args.out.mkdir(parents=True, exist_ok=True)
    files, labels = [], []
    for w in WEIGHTS:
        files.append(write_coordinates(fuse(picks, responses, w), args.out / f"fused_w{w:g}.star", "star"))
        labels.append(f"w {w:g}")
    files.append(write_coordinates(Picks(picks.micrograph, picks.x, picks.y, responses, picks.diameter_px),
                                   args.out / "log_only.star", "star"))
    labels.append("LoG alone")
    result = evaluate_picks_files(args.truth, files, labels=labels, diameter_A=args.diameter,
                                  pixel_size_A=args.apix, micrographs=args.micrographs, border_A=args.border)
    print(f"{args.picks}: {len(picks)} candidates; LoG separation of sure from unsure candidates "
          f"{separation(picks.score, responses):.3f}")
    print(" ".join(f"{label:>9s}" for label in labels))
    print(" ".join(f"{r.ap:9.3f}" for r in result.reports.values()), " AP")
    print(" ".join(f"{r.best_f1:9.3f}" for r in result.reports.values()), " best F1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
