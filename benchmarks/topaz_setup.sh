#!/usr/bin/env bash
# Build the separate virtual environment in which the benchmarks (benchmarks/harness.py) run Topaz.
#
# Topaz (PyPI "topaz-em", GPLv3) is only used as a comparison picker; it is never imported by hydrapick.
# Its wheel requires torchvision, for which no CPU build matching torch 2.13.0 is available here, so the
# wheel is installed with --no-deps, its runtime dependencies are installed by hand, and a minimal
# stand-in "torchvision" package is written into this environment's site-packages. Topaz's picking path
# (preprocess, extract) only imports torchvision through training-augmentation helpers
# (topaz/utils/data/{sampler,memory_mapped_data}.py use transforms.functional.rotate/hflip/vflip), so the
# stand-in provides exactly those names; rotate is torchvision's default rotation (nearest neighbour, zero
# fill, same size), written with torch, so `topaz train` (benchmarks/fewshot.py) runs too.
#
# Usage: benchmarks/topaz_setup.sh [VENV_DIR]     (default: .venv-topaz at the repository root)
# Environment: PYTHON (interpreter used to create the venv, default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-topaz}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
TOPAZ_VERSION="0.3.20"

echo "creating $VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)

"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" --no-deps "topaz-em==$TOPAZ_VERSION"
# Runtime requirements from topaz-em's metadata (Requires-Dist), minus torch and torchvision.
"${PIP[@]}" "numpy>=1.11" "scipy>=0.17.0" "pandas>=0.20.3" "scikit-learn>=0.19.0" "pillow>=6.2.0" \
    "future" "h5py>=3.7.0" "tqdm>=4.65.0" "psutil>=5.8.0"
# topaz denoise loads its pretrained 2D models with importlib.resources.files("topaz.denoising.models"),
# which fails because that is a module, not a package, and then falls back to pkg_resources, which
# setuptools removed in version 81; without this pin no pretrained denoising model loads.
"${PIP[@]}" "setuptools<81"

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
STANDIN="$SITE/torchvision"
mkdir -p "$STANDIN/transforms"
cat > "$STANDIN/__init__.py" <<'PY'
"""Minimal stand-in for torchvision inside the Topaz benchmark environment (not the real package).

Provides only the names Topaz imports at module level; see benchmarks/README.md in hydrapick.
"""
__version__ = "0.0.0+hydrapick.standin"
from . import transforms  # noqa: F401,E402
PY
cat > "$STANDIN/transforms/__init__.py" <<'PY'
from . import functional  # noqa: F401
PY
cat > "$STANDIN/transforms/functional.py" <<'PY'
"""The three functions Topaz imports for training-time augmentation; picking never calls them."""
import math

import torch


def hflip(img):
    return torch.flip(img, dims=[-1])


def vflip(img):
    return torch.flip(img, dims=[-2])


def rotate(img, angle, interpolation=None, expand=False, center=None, fill=None):
    """torchvision's default rotation: counter-clockwise by ``angle`` degrees as displayed (y down), about
    the image centre, nearest neighbour, zero outside, same size. Topaz's training augmentation only."""
    if expand or center is not None or fill not in (None, 0, 0.0):
        raise NotImplementedError("torchvision stand-in: rotate() supports torchvision's defaults only")
    if interpolation is not None and str(getattr(interpolation, "value", interpolation)) != "nearest":
        raise NotImplementedError("torchvision stand-in: rotate() interpolates by nearest neighbour only")
    h, w = img.shape[-2:]
    a = math.radians(angle)
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    # Each output pixel takes the input pixel the inverse rotation brings it from.
    sx = torch.round(math.cos(a) * xx - math.sin(a) * yy + (w - 1) / 2).long()
    sy = torch.round(math.sin(a) * xx + math.cos(a) * yy + (h - 1) / 2).long()
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    out = img[..., sy.clamp(0, h - 1), sx.clamp(0, w - 1)]
    return torch.where(inside, out, torch.zeros_like(out))
PY

# Check that the picking commands start.
"$VENV/bin/topaz" preprocess --help > /dev/null
"$VENV/bin/topaz" extract --help > /dev/null
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
import topaz.extract  # noqa: F401  (imports the whole picking path, including the stand-in)
from topaz.model.factory import load_model

load_model("resnet16_u64")
from torchvision.transforms.functional import rotate  # the stand-in's, used by `topaz train`

square = torch.arange(25.0).reshape(1, 5, 5)
assert torch.equal(rotate(square, 90), torch.rot90(square, 1, dims=(-2, -1))), "stand-in rotate is wrong"
from topaz.denoise import load_model as load_denoiser

load_denoiser("unet")  # the pretrained model of `topaz denoise` (needs pkg_resources, see above)
print(f"topaz-em {md.version('topaz-em')} with torch {torch.__version__}: ok")
PY
