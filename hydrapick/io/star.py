"""RELION coordinate STAR files: per-micrograph, combined, and RELION 4/5 ``autopick.star`` jobs.

RELION 3.0 files (no version line, one ``data_`` block) and 3.1+ files (``# version 30001``, an
``optics`` block beside ``particles``) are read alike: the coordinates are taken from whichever block
holds ``_rlnCoordinateX``/``_rlnCoordinateY``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from ..picks import Picks, micrograph_key
from . import _star
from .errors import FormatError, check_file, describe

# RELION's "no value" for figures of merit and angles (manual picks carry FOM -999).
RELION_UNSET = -999.0
_JOB = re.compile(r"(^|/)job\d+/")


def is_empty_file(path: Path) -> bool:
    """True for a file without content (a micrograph without picks), whitespace included."""
    try:
        size = path.stat().st_size
        return size == 0 or (size < 1024 and not path.read_bytes().strip())
    except OSError:
        return False


def read_star(path: str | os.PathLike, micrograph: str | None = None, *, _follow: bool = True) -> Picks:
    """Picks from a RELION STAR file of any kind (per-micrograph, combined, or ``autopick.star``).

    Parameters
    ----------
    path : path
        The STAR file.
    micrograph : str, optional
        Micrograph name for a per-micrograph file (default: the file name without extension and
        picker suffix, e.g. ``mic_001`` for ``mic_001_autopick.star``). Ignored where the file names
        its micrographs.
    """
    path = check_file(path, "a STAR file")
    if is_empty_file(path):
        return Picks(x=[], y=[])
    blocks = _star.read(path)
    for table in blocks.values():
        if "_rlnMicrographCoordinates" in table:
            if not _follow:
                raise FormatError(f"{describe(path)} lists further coordinate files; a per-micrograph "
                                  "coordinate table was expected", path)
            return _read_autopick(path, table)
    table = _star.find_loop(blocks, "_rlnCoordinateX", path, "a RELION coordinate table")
    if "_rlnCoordinateY" not in table:
        raise FormatError(f"{describe(path)} has _rlnCoordinateX but no _rlnCoordinateY column; columns "
                          f"found: {', '.join(table)}", path)
    x = _star.floats(table, "_rlnCoordinateX", path)
    y = _star.floats(table, "_rlnCoordinateY", path)
    score = np.full(len(x), np.nan)
    if "_rlnAutopickFigureOfMerit" in table:
        score = np.array(_star.floats(table, "_rlnAutopickFigureOfMerit", path))
        score[score == RELION_UNSET] = np.nan
    if "_rlnMicrographName" in table:
        names = np.array(table["_rlnMicrographName"], dtype=object)
    else:
        names = micrograph if micrograph is not None else micrograph_key(path.name)
    return Picks(micrograph=names, x=x, y=y, score=score)


def _read_autopick(path: Path, table: _star.Table) -> Picks:
    if "_rlnMicrographName" not in table:
        raise FormatError(f"{describe(path)} has _rlnMicrographCoordinates but no _rlnMicrographName "
                          f"column; columns found: {', '.join(table)}", path)
    bases = _star.project_dirs(path)
    parts = []
    for name, coord in zip(table["_rlnMicrographName"], table["_rlnMicrographCoordinates"], strict=True):
        coord_path = _find(coord, bases)
        if coord_path is None:
            raise FormatError(f"{describe(path)} lists coordinates '{coord}' for {name}, but that file "
                              f"exists under none of: {', '.join(str(b) for b in bases)}", path)
        picks = read_star(coord_path, micrograph=name, _follow=False)
        parts.append(picks.with_micrograph(name))
    return Picks.concat(parts)


def _find(name: str, bases: list[Path]) -> Path | None:
    p = Path(name)
    if p.is_absolute():
        return p if p.exists() else None
    return next((b / p for b in bases if (b / p).exists()), None)


def _relion_columns(picks: Picks) -> dict[str, list]:
    score = np.where(np.isnan(picks.score), RELION_UNSET, picks.score)
    n = len(picks)
    return {
        "_rlnCoordinateX": picks.x.tolist(),
        "_rlnCoordinateY": picks.y.tolist(),
        "_rlnClassNumber": [0] * n,
        "_rlnAutopickFigureOfMerit": score.tolist(),
        "_rlnAnglePsi": [RELION_UNSET] * n,
    }


def write_relion_micrograph_star(picks_one_micrograph: Picks, path: str | os.PathLike) -> None:
    """Write one micrograph's picks as a RELION per-micrograph coordinate STAR (atomic).

    Columns: ``_rlnCoordinateX _rlnCoordinateY _rlnClassNumber _rlnAutopickFigureOfMerit _rlnAnglePsi``
    in a ``data_`` block after ``# version 30001``, as RELION's auto-picker writes them; picks without
    a score get RELION's -999.
    """
    if len(picks_one_micrograph.micrographs()) > 1:
        n = len(picks_one_micrograph.micrographs())
        raise ValueError(f"write_relion_micrograph_star got picks on {n} micrographs; write one file per "
                         "micrograph or a combined file")
    _star.write(path, [("", _relion_columns(picks_one_micrograph))])


def write_star_combined(picks: Picks, path: str | os.PathLike) -> None:
    """Write picks of any number of micrographs to one STAR file with ``_rlnMicrographName`` (atomic).

    Written without a version line, as a RELION 3.0 table (RELION 3.1+ converts such a file when it
    reads it and would reject a 3.1 file without an optics block).
    """
    columns = {"_rlnMicrographName": [str(m) for m in picks.micrograph], **_relion_columns(picks)}
    _star.write(path, [("particles", columns)], version=None)


def relion_output_subpath(micrograph_path: str) -> PurePosixPath:
    """Where RELION puts a micrograph's coordinates inside a job folder, without the suffix.

    RELION keeps the part of the micrograph path after its own job folder
    (``MotionCorr/job002/Movies/mic_001.mrc`` -> ``Movies/mic_001``) or the whole relative path when
    the micrograph is not inside a job folder.
    """
    text = str(micrograph_path).replace("\\", "/")
    matches = list(_JOB.finditer(text))
    if matches:
        text = text[matches[-1].end():]
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", "..", ".")]
    sub = PurePosixPath(*parts) if parts else PurePosixPath("micrograph")
    name = sub.name
    for ext in (".mrcs", ".mrc", ".tiff", ".tif", ".eer", ".mrc.gz", ".mrc.bz2"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = sub.stem
    return sub.with_name(name)


def split_by_micrograph(picks: Picks, micrographs: list[str]) -> dict[str, Picks]:
    """The picks of each named micrograph, renamed to that name (empty `Picks` when it has none).

    A pick belongs to a micrograph when its name is identical, or else has the same `micrograph_key`
    (so ``mic_001`` picks go to ``Movies/mic_001.mrc``); exact names keep ``a/mic.mrc`` and
    ``b/mic.mrc`` apart. One pass over the picks, so thousands of micrographs stay fast.
    """
    names, inverse = np.unique(picks.micrograph.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    rows = {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names.tolist())}
    by_key: dict[str, list[np.ndarray]] = {}
    for name, index in rows.items():
        by_key.setdefault(micrograph_key(name), []).append(index)
    result = {}
    for mic in micrographs:
        index = rows.get(mic)
        if index is None:
            parts = by_key.get(micrograph_key(mic), [])
            index = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        result[mic] = picks[index].with_micrograph(mic)
    return result


def write_relion_job(picks: Picks, job_dir: str | os.PathLike,
                     micrograph_paths: list[str] | None = None) -> Path:
    """Write picks the way a RELION 4/5 auto-picking job does.

    Writes ``<job_dir>/<mirrored tree>/<stem>_autopick.star`` for every micrograph (an empty table when
    it has no picks) and ``<job_dir>/autopick.star`` (block ``coordinate_files``: ``_rlnMicrographName``,
    ``_rlnMicrographCoordinates``). In a RELION job folder (``.../jobNNN``) coordinate paths are written
    relative to the project folder, two levels above it (``AutoPick/job006/Movies/mic_001_autopick.star``),
    as RELION does; in any other folder they are relative to that folder.

    Parameters
    ----------
    picks : Picks
        Picks on any of the micrographs; matched to ``micrograph_paths`` by `micrograph_key`.
    job_dir : path
        The job folder, e.g. ``AutoPick/job006``.
    micrograph_paths : list of str, optional
        Micrograph paths as RELION names them (relative to the project). Default: the picks'
        micrograph names.

    Returns
    -------
    Path
        The ``autopick.star`` file.
    """
    job_dir = Path(job_dir)
    if micrograph_paths is None:
        micrograph_paths = picks.micrographs()
    micrograph_paths = [str(m) for m in micrograph_paths]
    keys = {micrograph_key(m) for m in micrograph_paths}
    stray = [m for m in picks.micrographs() if micrograph_key(m) not in keys]
    if stray:
        raise ValueError(f"picks on {len(stray)} micrographs not in micrograph_paths, e.g. {stray[0]!r}")
    # RELION names coordinate files relative to the project, two levels above a jobNNN folder; any other
    # output folder gets paths relative to itself, which is where the reader looks next.
    job_abs = Path(os.path.abspath(job_dir))
    project = job_abs.parent.parent if _star._JOB_DIR.match(job_abs.name) else job_abs
    coord_files = []
    seen: dict[PurePosixPath, str] = {}
    groups = split_by_micrograph(picks, micrograph_paths)
    for mic in micrograph_paths:
        sub = relion_output_subpath(mic)
        if sub in seen:
            raise ValueError(f"micrographs {seen[sub]!r} and {mic!r} would share the coordinate file "
                             f"{sub}_autopick.star")
        seen[sub] = mic
        out = job_dir / f"{sub}_autopick.star"
        write_relion_micrograph_star(groups[mic], out)
        coord_files.append(os.path.relpath(os.path.abspath(out), project).replace(os.sep, "/"))
    target = job_dir / "autopick.star"
    _star.write(target, [("coordinate_files", {"_rlnMicrographName": micrograph_paths,
                                               "_rlnMicrographCoordinates": coord_files})])
    return target
