"""cryoSPARC ``.cs`` particle files: a numpy structured array saved with ``np.save``.

Fields written: ``uid`` (uint64), ``location/micrograph_uid`` (uint64), ``location/micrograph_path``
(bytes), ``location/micrograph_shape`` (2 x uint32, ``(height, width)``), ``location/center_x_frac`` and
``location/center_y_frac`` (float32, the centre as a fraction of the width/height), and
``pick_stats/ncc_score`` (float32). Pixels are ``center_x_frac * width`` and ``center_y_frac * height``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..picks import Picks, micrograph_key
from .atomic import atomic_path
from .errors import FormatError, check_file, describe

_REQUIRED = ("location/micrograph_path", "location/micrograph_shape", "location/center_x_frac",
             "location/center_y_frac")
DTYPE = np.dtype([
    ("uid", "<u8"),
    ("location/micrograph_uid", "<u8"),
    ("location/exp_group_id", "<u4"),
    ("location/micrograph_path", "S256"),
    ("location/micrograph_psize_A", "<f4"),
    ("location/micrograph_shape", "<u4", (2,)),
    ("location/center_x_frac", "<f4"),
    ("location/center_y_frac", "<f4"),
    ("pick_stats/ncc_score", "<f4"),
])


def read_cs(path: str | os.PathLike, *, flip_y: bool = False, image_height: int | None = None) -> Picks:
    """Picks from a cryoSPARC ``.cs`` file.

    ``flip_y`` mirrors y with each particle's stored micrograph height (``image_height`` overrides it).
    The score is ``pick_stats/ncc_score`` when present.
    """
    path = check_file(path, "a cryoSPARC .cs file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        # np.load would call any other file "pickled data"; say what the file is instead.
        kind = ("an empty file" if not magic else "a text file" if _is_text(path)
                else "another binary format")
        raise FormatError(f"{describe(path)} is not a cryoSPARC .cs file (a numpy structured array): it is "
                          f"{kind}", path)
    try:
        # allow_pickle=False: a .cs file is plain data and must never run code.
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a damaged .npy header makes numpy raise SyntaxError & co.
        raise FormatError(f"{describe(path)} is not a cryoSPARC .cs file (a numpy structured array): "
                          f"{' '.join(str(exc).split())[:120]}", path) from exc
    names = array.dtype.names or ()
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise FormatError(f"{describe(path)} has no {', '.join(missing)} field(s); fields found: "
                          f"{', '.join(names) if names else 'none (not a structured array)'}", path)
    array = array.reshape(-1)
    shape = np.asarray(array["location/micrograph_shape"], dtype=np.float64)
    if shape.shape != (len(array), 2) or (shape <= 0).any():
        raise FormatError(f"{describe(path)} has particles without a micrograph shape "
                          "(location/micrograph_shape must be (height, width) > 0)", path)
    height, width = shape[:, 0], shape[:, 1]
    x = array["location/center_x_frac"].astype(np.float64) * width
    y = array["location/center_y_frac"].astype(np.float64) * height
    if flip_y:
        y = (height if image_height is None else float(image_height)) - 1 - y
    score = (array["pick_stats/ncc_score"].astype(np.float64) if "pick_stats/ncc_score" in names
             else np.full(len(array), np.nan))
    mics = np.array([_decode(p) for p in array["location/micrograph_path"]], dtype=object)
    return Picks(micrograph=mics, x=x, y=y, score=score)


def _is_text(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _decode(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def write_cs(picks: Picks, path: str | os.PathLike, *, image_shape=None, flip_y: bool = False,
             pixel_size_A: float | Mapping[str, float] | None = None) -> None:
    """Write picks as a cryoSPARC ``.cs`` file (atomic).

    Parameters
    ----------
    image_shape : (height, width) or mapping of micrograph name -> (height, width), optional
        Micrograph shapes, needed to store fractions. Default: read from each micrograph's MRC header
        (the micrograph name must then be a readable path).
    flip_y : bool
        Mirror y with each micrograph's height before writing.
    pixel_size_A : float or mapping, optional
        Stored in ``location/micrograph_psize_A`` (0 when unknown).
    """
    path = Path(path)
    n = len(picks)
    array = np.zeros(n, dtype=DTYPE)
    shapes = np.zeros((n, 2), dtype=np.float64)
    for name in picks.micrographs():
        shapes[picks.micrograph == name] = _shape_for(name, image_shape, path)
    y = picks.y
    if flip_y:
        y = shapes[:, 0] - 1 - y
    rng = np.random.default_rng(zlib.crc32(str(path.name).encode()))
    # cryoSPARC identifies items by random 64-bit uids; unique within the file is what matters here.
    array["uid"] = rng.choice(np.iinfo(np.int64).max, size=n, replace=False) if n else []
    array["location/micrograph_uid"] = [zlib.crc32(micrograph_key(m).encode()) for m in picks.micrograph]
    encoded = [str(m).encode("utf-8") for m in picks.micrograph]
    if any(len(e) > 256 for e in encoded):
        raise ValueError(f"writing {path}: micrograph paths longer than 256 bytes cannot be stored")
    array["location/micrograph_path"] = encoded
    array["location/micrograph_psize_A"] = [_lookup(pixel_size_A, m) for m in picks.micrograph]
    array["location/micrograph_shape"] = shapes.astype(np.uint32)
    array["location/center_x_frac"] = picks.x / np.where(shapes[:, 1] > 0, shapes[:, 1], 1)
    array["location/center_y_frac"] = y / np.where(shapes[:, 0] > 0, shapes[:, 0], 1)
    array["pick_stats/ncc_score"] = np.nan_to_num(picks.score, nan=0.0)
    with atomic_path(path) as tmp:
        # Through a file handle so numpy does not append ".npy" to the name.
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _lookup(value, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, Mapping):
        return float(value.get(name, value.get(micrograph_key(name), 0.0)))
    return float(value)


def _shape_for(name: str, image_shape, path: Path) -> tuple[int, int]:
    if image_shape is not None:
        if isinstance(image_shape, Mapping):
            shape = image_shape.get(name, image_shape.get(micrograph_key(name)))
            if shape is None:
                raise ValueError(f"writing {path}: image_shape has no entry for micrograph {name!r}")
        else:
            shape = image_shape
        height, width = (int(v) for v in shape)
        if height <= 0 or width <= 0:
            raise ValueError(f"writing {path}: image shape must be positive, got {shape}")
        return height, width
    from .mrc import read_micrograph  # a header read; mmap keeps it cheap

    if not Path(name).is_file():
        raise ValueError(f"writing {path}: a cryoSPARC .cs file needs each micrograph's shape; pass "
                         f"image_shape=(height, width) (micrograph {name!r} is not a readable file)")
    return read_micrograph(name).shape
