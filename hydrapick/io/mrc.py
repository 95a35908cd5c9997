"""Micrographs: MRC files (and TIFF, PNG or JPEG pictures, `hydrapick.io.images`) in, MRC files out,
and lists of micrographs.

Data are returned as stored (``data[y, x]``, any MRC mode, memory-mapped when possible) so that a
folder of thousands of 4k x 4k micrographs costs no memory until a part of an image is used.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from . import _star
from .atomic import atomic_path
from .errors import FormatError, check_file, describe
from .images import image_kind, is_image, read_image

log = logging.getLogger(__name__)

# MRC modes a micrograph may use (mode -> dtype). Complex modes are not images of a specimen.
_IMAGE_DTYPES = (np.int8, np.int16, np.uint16, np.float16, np.float32, np.uint8)
_COMPRESSED = (".gz", ".bz2")


@dataclass
class Micrograph:
    """One 2D micrograph.

    Parameters
    ----------
    data : (H, W) array
        Pixels as stored in the file (any dtype; a read-only memory map when possible), ``data[y, x]``.
    pixel_size_A : float or None
        Pixel size in Angstrom: the override if given, else the header's ``voxel_size.x``; None when
        the header leaves it unset (0 or 1.0) and no override was given.
    path : str
        The file the data came from.
    """

    data: np.ndarray
    pixel_size_A: float | None
    path: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def read_micrograph(path: str | os.PathLike, pixel_size_A: float | None = None,
                    mmap: bool = True) -> Micrograph:
    """Read a 2D micrograph from an MRC file or a TIFF, PNG or JPEG picture.

    Parameters
    ----------
    path : path
        ``.mrc`` (or ``.mrcs`` with one section; ``.gz``/``.bz2`` compressed files are read into memory),
        or ``.tif``/``.tiff``/``.png``/``.jpg``/``.jpeg`` (`hydrapick.io.images.read_image`: read into
        memory, colour made grey, no pixel size).
    pixel_size_A : float, optional
        Overrides the header's pixel size; a picture's only pixel size.
    mmap : bool
        Memory-map the data (default; MRC only); the array stays valid after the file is closed.

    Raises
    ------
    FormatError
        Missing, truncated or corrupt file, an unsupported mode, or a stack/volume with more than
        one section (a picture with more than one frame).
    """
    if is_image(path):
        data = _as_2d(read_image(check_file(path, f"a {image_kind(path)} micrograph")), Path(path))
        return Micrograph(data=data, pixel_size_A=_override(pixel_size_A), path=str(path))
    path = check_file(path, "an MRC micrograph")
    use_mmap = mmap and not path.name.lower().endswith(_COMPRESSED)
    if path.name.lower().endswith(_COMPRESSED):
        _check_claimed_size(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # permissive=False turns header and size problems into exceptions; what remains as a
            # warning (e.g. bytes after the data block) leaves the image usable, so it is only logged.
            warnings.simplefilter("always")
            opener = mrcfile.mmap if use_mmap else mrcfile.open
            with opener(path, mode="r", permissive=False) as mrc:
                data = mrc.data
                voxel_x = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError, TypeError, OverflowError, MemoryError) as exc:
        # OverflowError: a negative size in the header reaches mmap; MemoryError: an absurd one.
        raise FormatError(_damage(path, exc), path) from exc
    for w in caught:
        log.warning("%s: %s", path, w.message)
    if data is None:
        raise FormatError(f"{describe(path)} has no data block", path)
    data = _as_2d(data, path)
    size = _override(pixel_size_A)
    if size is None and voxel_x > 0 and not np.isclose(voxel_x, 1.0):
        # The header holds float32: 5.36 is stored as 5.3600001335; give back the value that was meant.
        # 0 is "unset"; 1.0 is what many tools write when they do not know the pixel size.
        size = float(str(np.float32(voxel_x)))
    return Micrograph(data=data, pixel_size_A=size, path=str(path))


def _check_claimed_size(path: Path) -> None:
    """A compressed file is decompressed into memory before its size can be checked: a damaged header
    claiming 40000 x 40000 pixels would take all the memory first. Its claim is checked beforehand."""
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            header = mrc.header
            nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
            itemsize = mrcfile.utils.data_dtype_from_header(header).itemsize
    except (ValueError, OSError, EOFError, TypeError, AttributeError):
        return  # the full read names the problem
    claimed = max(nx, 0) * max(ny, 0) * max(nz, 1) * itemsize
    available = _available_memory()
    if available is not None and claimed > available:
        shape = f"{nx} x {ny}" + (f" x {nz}" if nz > 1 else "")
        raise FormatError(f"{describe(path)} claims {shape} pixels in its header ({claimed / 1e9:.3g} GB), "
                          f"more than the memory available ({available / 1e9:.3g} GB): a damaged header?",
                          path)


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _override(pixel_size_A: float | None) -> float | None:
    if pixel_size_A is None:
        return None
    if not pixel_size_A > 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    return float(pixel_size_A)


def no_pixel_size(path: str | os.PathLike) -> str:
    """The start of the one line saying that micrograph ``path`` has no pixel size (callers add how to
    give one): ``File 'a.mrc' has no pixel size in its header`` or ``File 'a.png' has no pixel size (a
    PNG image carries none)``."""
    if is_image(path):
        return f"{describe(path)} has no pixel size (a {image_kind(path)} image carries none)"
    return f"{describe(path)} has no pixel size in its header"


def _as_2d(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype.kind == "c":
        raise FormatError(f"{describe(path)} holds complex data (mode {data.dtype}); a real-valued "
                          "2D micrograph was expected", path)
    if data.dtype.type not in _IMAGE_DTYPES:
        raise FormatError(f"{describe(path)} has unsupported data type {data.dtype}", path)
    if data.ndim == 3:
        if data.shape[0] != 1:
            raise FormatError(f"{describe(path)} holds {data.shape[0]} sections of "
                              f"{data.shape[1]}x{data.shape[2]} (a stack or volume); a single 2D "
                              "micrograph was expected", path)
        data = data[0]
    if data.ndim != 2 or min(data.shape) < 1:
        raise FormatError(f"{describe(path)} has shape {data.shape}; a 2D micrograph was expected", path)
    return data


def _damage(path: Path, exc: BaseException) -> str:
    """One line saying why an MRC file could not be read, naming truncation when that is the cause."""
    if path.name.lower().endswith(_COMPRESSED):
        # The file's size is the compressed size: it says nothing about the pixels the header describes.
        kind = "gzip" if path.name.lower().endswith(".gz") else "bzip2"
        return (f"{describe(path)} is not a readable {kind}-compressed MRC file (truncated or damaged): "
                f"{_short(exc)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mrc = mrcfile.open(path, mode="r", permissive=True, header_only=True)
        with mrc:
            header = mrc.header
            dims = {axis: int(header[axis]) for axis in ("nx", "ny", "nz")}
            bad = {axis: n for axis, n in dims.items() if n <= 0}
            if bad and header.map.tobytes() == b"MAP ":
                shown = ", ".join(f"{axis} = {n}" for axis, n in bad.items())
                return (f"{describe(path)} has a damaged MRC header: {shown} (the image dimensions must be "
                        "positive)")
            dtype = mrcfile.utils.data_dtype_from_header(header)
            n_pixels = int(header.nx) * int(header.ny) * int(header.nz)
            expected = int(header.nbytes) + int(header.nsymbt) + n_pixels * dtype.itemsize
        size = path.stat().st_size
        if header.map.tobytes() == b"MAP " and size < expected:
            dims = f"{header.nx}x{header.ny}x{header.nz}"
            return (f"{describe(path)} is truncated: its header describes {dims} {dtype} pixels "
                    f"({expected} bytes with the header) but the file has {size} bytes")
    except Exception:  # noqa: BLE001 - diagnosing a broken file must not raise a second error
        pass
    return f"{describe(path)} is not a readable MRC file: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def write_micrograph(path: str | os.PathLike, data: np.ndarray, pixel_size_A: float) -> None:
    """Write a 2D micrograph as MRC, atomically (temporary file, then rename).

    Parameters
    ----------
    path : path
        Output file, normally ``.mrc``. Parent folders are created.
    data : (H, W) array
        float32 normally; int8, int16, uint16 and float16 are stored in their own MRC modes and
        other real types are converted to float32.
    pixel_size_A : float
        Written to the header's voxel size (x, y and z).
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"write_micrograph expects a 2D array, got shape {data.shape}")
    if data.dtype.type not in (np.int8, np.int16, np.uint16, np.float16, np.float32):
        data = data.astype(np.float32)
    if not pixel_size_A > 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            mrc.voxel_size = float(pixel_size_A)


def read_micrograph_list(path: str | os.PathLike) -> list[tuple[str, float | None]]:
    """Micrograph paths listed in a RELION micrographs STAR file or a plain text file.

    `micrograph_list_entries` also gives each name exactly as the list wrote it.

    Relative paths are resolved against the list's folder; for a STAR file, RELION stores them
    relative to its project folder, so the project folder (two levels above a ``jobNNN`` folder) is
    tried first when the file is inside a job folder.

    Parameters
    ----------
    path : path
        ``.star`` with ``_rlnMicrographName`` (RELION 3.0, or 3.1+ with an optics block giving
        ``_rlnMicrographPixelSize``/``_rlnImagePixelSize`` per optics group) or a text file with one
        path per line (blank lines and ``#`` comments ignored).

    Returns
    -------
    list of (str, float or None)
        Each micrograph's path and its pixel size in Angstrom when the list gives one.
    """
    return [(file, size) for file, _, size in micrograph_list_entries(path)]


def micrograph_list_entries(path: str | os.PathLike) -> list[tuple[str, str, float | None]]:
    """`read_micrograph_list`'s entries with each name as written: ``(path to read, name, pixel size)``.

    RELION finds a micrograph's coordinates by its ``_rlnMicrographName`` string for string, so outputs
    name a STAR file's micrographs by that string, never by the resolved path.
    """
    path = Path(path)
    if path.suffix.lower() == ".star":
        entries = _star_micrograph_list(path)
    else:
        check_file(path, "a list of micrographs")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError) as exc:
            raise FormatError(f"{describe(path)} is not a text list of micrographs: {_short(exc)}",
                              path) from exc
        entries = [(line.strip(), None) for line in lines
                   if line.strip() and not line.lstrip().startswith("#")]
        if not entries:
            raise FormatError(f"{describe(path)} lists no micrographs", path)
    bases = _star.project_dirs(path)
    return [(_resolve(name, bases), name, size) for name, size in entries]


def _resolve(name: str, bases: list[Path]) -> str:
    p = Path(name)
    if p.is_absolute():
        return str(p)
    for base in bases:
        if (base / p).exists():
            return str(base / p)
    return str(bases[0] / p)


def _star_micrograph_list(path: Path) -> list[tuple[str, float | None]]:
    blocks = _star.read(path)
    table = _star.find_loop(blocks, "_rlnMicrographName", path, "a list of micrographs")
    names = table["_rlnMicrographName"]
    sizes: list[float | None] = [None] * len(names)
    size_col = next((c for c in ("_rlnMicrographPixelSize", "_rlnImagePixelSize") if c in table), None)
    if size_col is not None:
        sizes = [_star.to_float(v, path, size_col) for v in table[size_col]]
    elif "_rlnDetectorPixelSize" in table and "_rlnMagnification" in table:
        # RELION 3.0: pixel size = detector pixel (um) / magnification.
        detector = _star.floats(table, "_rlnDetectorPixelSize", path)
        magnification = _star.floats(table, "_rlnMagnification", path)
        sizes = [d * 1e4 / m if m > 0 else None for d, m in zip(detector, magnification, strict=True)]
    else:
        group_sizes = _optics_pixel_sizes(blocks, path)
        if group_sizes:
            groups = table.get("_rlnOpticsGroup")
            if groups is None:
                only = next(iter(group_sizes.values())) if len(group_sizes) == 1 else None
                sizes = [only] * len(names)
            else:
                sizes = [group_sizes.get(g) for g in groups]
    # A particles file names each micrograph once per particle; list each micrograph once.
    first: dict[str, float | None] = {}
    for name, size in zip(names, sizes, strict=True):
        first.setdefault(name, size)
    return list(first.items())


def _optics_pixel_sizes(blocks: dict, path: Path) -> dict[str, float]:
    optics = blocks.get("optics")
    if not optics or "_rlnOpticsGroup" not in optics:
        return {}
    candidates = ("_rlnMicrographPixelSize", "_rlnImagePixelSize", "_rlnMicrographOriginalPixelSize")
    col = next((c for c in candidates if c in optics), None)
    if col is None:
        return {}
    pairs = zip(optics["_rlnOpticsGroup"], optics[col], strict=True)
    return {group: _star.to_float(value, path, col) for group, value in pairs}
