"""Reading and writing particle coordinates in any supported format, chosen by extension or by name.

Every reader returns `Picks` in pixels of the micrograph as read (``data[y, x]``, origin at the centre
of the first pixel, y down). ``flip_y`` mirrors y (``y -> image_height - 1 - y``) for files written by
tools that count y upwards from the bottom row; it is never applied implicitly.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..picks import Picks, micrograph_key
from . import box, cbox, cryosparc, star, topaz
from .errors import FormatError, check_file, describe

log = logging.getLogger(__name__)

FORMATS = ("star", "relion", "box", "cbox", "topaz", "cs")

_EXTENSIONS = {".star": "star", ".box": "box", ".cbox": "cbox", ".txt": "topaz", ".cs": "cs"}
_ALIASES = {"eman": "box", "cryolo": "cbox", "cryosparc": "cs", "csparc": "cs", "rln": "star"}
# File extension of each format (a RELION job folder is read through its autopick.star).
_READ_EXTENSIONS = {"star": ".star", "relion": ".star", "box": ".box", "cbox": ".cbox", "topaz": ".txt",
                    "cs": ".cs"}
# File extension used when a format is written one file per micrograph.
FILE_EXTENSIONS = {"star": ".star", "box": ".box", "topaz": ".txt"}

_READERS: dict[str, Callable[[Path, str | None], Picks]] = {
    "star": star.read_star,
    "box": box.read_box,
    "cbox": cbox.read_cbox,
    "topaz": topaz.read_topaz,
}


def resolve_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format name for ``path``: ``format`` if given (aliases accepted), else from the extension."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in FORMATS:
            raise ValueError(f"unknown coordinate format {format!r}; known formats: {', '.join(FORMATS)}")
        return name
    path = Path(path)
    if path.is_dir():
        return "relion"
    name = _EXTENSIONS.get(path.suffix.lower())
    if name is None:
        raise FormatError(f"{describe(path)}: cannot tell the coordinate format from the extension "
                          f"'{path.suffix}'; pass a format, one of: {', '.join(FORMATS)}", path)
    return name


def read_coordinates(path: str | os.PathLike, format: str | None = None, *, flip_y: bool = False,
                     image_height: int | None = None, micrograph: str | None = None) -> Picks:
    """Read particle coordinates from one file (or a RELION job folder).

    Parameters
    ----------
    path : path
        A coordinate file; for ``relion``, a job folder holding ``autopick.star`` (an
        ``autopick.star`` file itself is read as ``star`` and followed alike).
    format : str, optional
        One of `FORMATS`; default from the extension (``.star``, ``.box``, ``.cbox``, ``.txt`` = Topaz,
        ``.cs``).
    flip_y : bool
        Mirror y: ``y -> image_height - 1 - y``. cryoSPARC files carry their micrographs' shapes, so
        ``image_height`` may be omitted for them.
    image_height : int, optional
        Micrograph height in pixels, needed with ``flip_y``.
    micrograph : str, optional
        Micrograph name for a per-micrograph file (default: the file name without extension and
        picker suffix). Files that name their micrographs keep their names.

    Raises
    ------
    FormatError
        Unknown extension, missing file, missing columns or unreadable values.
    """
    path = Path(path)
    name = resolve_format(path, format)
    if name == "cs":
        return _finite(cryosparc.read_cs(path, flip_y=flip_y, image_height=image_height), path)
    _check_flip(flip_y, image_height)
    if name == "relion":
        picks = star.read_star(_autopick_star(path))
    else:
        check_file(path, f"a {name} coordinate file")
        picks = _READERS[name](path, micrograph)
    return _finite(picks.flip_y(image_height) if flip_y else picks, path)


def _finite(picks: Picks, path: Path) -> Picks:
    """``picks``, unless a coordinate is NaN or infinite: then a FormatError naming the file."""
    bad = ~(np.isfinite(picks.x) & np.isfinite(picks.y))
    if bad.any():
        first = int(np.argmax(bad))
        raise FormatError(f"{describe(path)} has {int(bad.sum())} coordinate(s) that are not finite numbers "
                          f"(NaN or infinity), the first on micrograph '{picks.micrograph[first]}': "
                          f"({picks.x[first]}, {picks.y[first]})", path)
    return picks


def check_one_file_per_micrograph(sources: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Refuse coordinates of one micrograph coming from two files, or under two names in one file.

    ``sources`` gives, for each file, a label for messages (``File 'x.star'``) and the micrograph names it
    holds. Coordinates are matched to micrographs by `micrograph_key`, so ``x.star`` beside
    ``x_autopick.star``, or ``a/x.mrc`` and ``b/x.mrc`` in one combined file, would merge two sets of
    coordinates into one micrograph: double the truth and half the precision, silently.

    Raises
    ------
    FormatError
        Naming both files (or names) and the micrograph.
    """
    owner: dict[str, tuple[str, str]] = {}
    for label, names in sources:
        for name in dict.fromkeys(str(n) for n in names):
            key = micrograph_key(name)
            if key in owner and owner[key] != (label, name):
                first_label, first_name = owner[key]
                where = (f"{first_label} and {label}" if first_label != label
                         else f"{label} (as '{first_name}' and as '{name}')")
                raise FormatError(f"{where} both hold coordinates of micrograph '{key}'; coordinates are "
                                  "matched to micrographs by file name, so they would be merged: keep one, "
                                  "or give the micrographs distinct names")
            owner[key] = (label, name)


def _autopick_star(path: Path) -> Path:
    if path.is_file():
        return path
    candidate = path / "autopick.star"
    if not candidate.exists():
        raise FormatError(f"{describe(path)} is not a RELION job folder: it has no autopick.star", path)
    return candidate


def _check_flip(flip_y: bool, image_height: int | None) -> None:
    if flip_y and image_height is None:
        raise ValueError("flip_y needs image_height (the micrograph height in pixels)")


def read_coordinate_folder(path_or_glob: str | os.PathLike, format: str | None = None, *,
                           flip_y: bool = False, image_height: int | None = None) -> Picks:
    """Read every coordinate file in a folder (or matching a glob pattern) into one `Picks`.

    A folder holding ``autopick.star`` is read as a RELION job. Otherwise every file with a known
    extension (or the given format's) is read, in sorted order; each per-micrograph file names its
    micrograph after itself.
    """
    picks, _ = read_coordinate_folder_with_empty(path_or_glob, format, flip_y=flip_y,
                                                 image_height=image_height)
    return picks


def read_coordinate_folder_with_empty(path_or_glob: str | os.PathLike, format: str | None = None, *,
                                      flip_y: bool = False, image_height: int | None = None,
                                      ) -> tuple[Picks, list[str]]:
    """`read_coordinate_folder`, and the micrographs (`micrograph_key`) whose own per-micrograph file
    holds no particle: an empty file says "no particles on this micrograph", which `Picks` alone cannot
    carry (none for a RELION job folder, whose autopick.star is read instead).
    """
    text = os.fspath(path_or_glob)
    folder = Path(text)
    if folder.is_dir():
        if (folder / "autopick.star").exists() and format in (None, "star", "relion"):
            return read_coordinates(folder / "autopick.star", "star", flip_y=flip_y,
                                    image_height=image_height), []
        wanted = {_READ_EXTENSIONS[resolve_format(folder, format)]} if format else set(_EXTENSIONS)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)
    elif glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    else:
        raise FormatError(f"{describe(text)} is neither a folder nor a glob pattern matching files", text)
    if not files:
        kinds = f"of format {format}" if format else f"({', '.join(sorted(_EXTENSIONS))})"
        raise FormatError(f"{describe(text)} holds no coordinate files {kinds}", text)
    log.debug("reading %d coordinate files from %s", len(files), text)
    parts = [read_coordinates(p, format, flip_y=flip_y, image_height=image_height) for p in files]
    empty = [micrograph_key(p.name) for p, part in zip(files, parts, strict=True) if not len(part)]
    check_one_file_per_micrograph((describe(p), part.micrograph if len(part) else [micrograph_key(p.name)])
                                  for p, part in zip(files, parts, strict=True))
    return Picks.concat(parts), empty


def write_coordinates(picks: Picks, path: str | os.PathLike, format: str | None = None, *,
                      flip_y: bool = False, image_height: int | None = None, box_px: float | None = None,
                      combined: bool | None = None, image_shape=None,
                      micrograph_paths: list[str] | None = None) -> Path:
    """Write picks in one format, atomically.

    Parameters
    ----------
    picks : Picks
        Coordinates in pixels of the micrograph as read.
    path : path
        Output file; for ``relion``, the job folder (e.g. ``AutoPick/job006``).
    format : str, optional
        One of `FORMATS` except ``cbox`` (read only); default from the extension.
    flip_y : bool
        Mirror y on the way out (``y -> image_height - 1 - y``).
    image_height : int, optional
        Micrograph height in pixels, needed with ``flip_y`` (cryoSPARC uses ``image_shape``).
    box_px : float, optional
        Box side for EMAN ``.box`` files (default: each pick's ``diameter_px``).
    combined : bool, optional
        STAR only: one file with ``_rlnMicrographName`` (default when the picks span more than one
        micrograph) or a per-micrograph file.
    image_shape : (height, width) or mapping of micrograph name -> (height, width), optional
        cryoSPARC only: micrograph shapes (default: read from each micrograph's MRC header).
    micrograph_paths : list of str, optional
        ``relion`` only: every micrograph of the job, including those without picks.

    Returns
    -------
    Path
        The file written (``autopick.star`` for ``relion``).
    """
    path = Path(path)
    name = resolve_format(path, format)
    if name == "cs":
        cryosparc.write_cs(picks, path, image_shape=image_shape, flip_y=flip_y)
        return path
    _check_flip(flip_y, image_height)
    if flip_y:
        picks = picks.flip_y(image_height)
    if name == "relion":
        job_dir = path.parent if path.suffix.lower() == ".star" else path  # .../job006/autopick.star
        return star.write_relion_job(picks, job_dir, micrograph_paths)
    if name == "star":
        if combined is None:
            combined = len(picks.micrographs()) > 1
        if combined:
            star.write_star_combined(picks, path)
        else:
            star.write_relion_micrograph_star(picks, path)
    elif name == "box":
        box.write_box(picks, path, box_px=box_px)
    elif name == "topaz":
        topaz.write_topaz(picks, path)
    else:
        raise ValueError(f"{name} files can be read but not written; write one of: "
                         f"{', '.join(f for f in FORMATS if f != 'cbox')}")
    return path


def write_coordinate_folder(picks: Picks, folder: str | os.PathLike, format: str = "star", *,
                            suffix: str = "", micrographs: list[str] | None = None, **kwargs) -> list[Path]:
    """Write one coordinate file per micrograph: ``<folder>/<stem><suffix><ext>``.

    ``micrographs`` lists every micrograph to write a file for (an empty one when it has no picks);
    default: those with picks. Other keyword arguments go to `write_coordinates`.
    """
    name = resolve_format(folder, format)
    if name not in FILE_EXTENSIONS:
        raise ValueError(f"write_coordinate_folder writes star, box or topaz files, not {name}")
    folder = Path(folder)
    if micrographs is None:
        micrographs = picks.micrographs()
    written = []
    for mic, one in star.split_by_micrograph(picks, micrographs).items():
        out = folder / f"{micrograph_key(mic)}{suffix}{FILE_EXTENSIONS[name]}"
        written.append(write_coordinates(one, out, name, combined=False, **kwargs))
    return written
