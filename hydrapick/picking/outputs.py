"""The files a pick run writes: output formats, per-micrograph and combined outputs, previews.

`PickOutputs` decides where every output of one `hydrapick.picking.run.pick` run goes: per-micrograph files
(a RELION job folder, EMAN .box files) written as each micrograph is picked, or combined files (STAR,
Topaz, cryoSPARC) written at the end, always with the candidates above the score floor beside the picks
so they can be re-thresholded later.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.inputs import MicrographInput
from ..picks import Picks, micrograph_key
from .results import PickResult

PICK_FORMATS = ("star", "relion", "box", "topaz", "cs")
_FORMAT_ALIASES = {"eman": "box", "cryosparc": "cs", "rln": "star", "job": "relion"}
_SUFFIX_FORMATS = {".star": "star", ".txt": "topaz", ".cs": "cs"}


def output_format(output: str | os.PathLike, format: str | None = None) -> str:
    """The output format for ``output``: ``format`` if given, else from the name.

    ``.star`` -> star (one file with ``_rlnMicrographName``), ``.txt`` -> topaz, ``.cs`` -> cs, and a
    name without extension (or an existing folder) -> relion (a job folder).
    """
    if format is not None:
        name = _FORMAT_ALIASES.get(format.lower(), format.lower())
        if name not in PICK_FORMATS:
            raise ValueError(f"unknown output format {format!r}; use one of {', '.join(PICK_FORMATS)}")
        return name
    path = Path(output)
    if path.is_dir() or str(output).endswith(("/", os.sep)) or not path.suffix:
        return "relion"
    name = _SUFFIX_FORMATS.get(path.suffix.lower())
    if name is None:
        if path.suffix.lower() == ".box":
            raise ValueError(f"output '{output}': an EMAN .box file holds one micrograph; give a folder "
                             "with --format box")
        raise ValueError(f"output '{output}': cannot tell the format from '{path.suffix}'; give --format "
                         f"({', '.join(PICK_FORMATS)})")
    return name


class PickOutputs:
    """Where each output goes, for one run (per-micrograph files for folders, combined files otherwise)."""

    def __init__(self, output: str | os.PathLike, fmt: str, items: Sequence[MicrographInput],
                 shard: tuple[int, int] | None) -> None:
        from ..io.star import relion_output_subpath

        self.format = fmt
        self.folder = fmt in ("relion", "box")
        path = Path(output)
        if self.folder and path.is_file():
            raise ValueError(f"output '{output}' is a file; --format {fmt} writes a folder")
        if not self.folder and path.is_dir():
            raise ValueError(f"output '{output}' is a folder; --format {fmt} writes one file")
        self._shard = shard
        self.sharded = shard is not None and shard[1] > 1
        if self.sharded and not self.folder:
            # Shards of a combined file cannot share it; each writes its own (see docs/picking.md).
            path = path.with_name(f"{path.stem}.shard{shard[0]}of{shard[1]}{path.suffix}")  # type: ignore
        self.path = path
        # Every candidate above the floor, for re-thresholding. Folders keep them per micrograph under
        # candidates/ (so skip_existing keeps earlier runs' candidates); a job folder also gets one
        # combined candidates.star (a .box folder does not: its reader would mix it with the picks).
        self.candidates_path = (path / "candidates.star" if self.folder
                                else path.with_name(f"{path.stem}_candidates{path.suffix}"))
        self.candidates_dir = path / "candidates"
        self._sub: dict[str, str] = {}
        if self.folder:
            owner: dict[str, str] = {}
            for item in items:
                sub = (f"{relion_output_subpath(item.name)}_autopick.star" if fmt == "relion"
                       else f"{micrograph_key(item.name)}.box")
                # A micrograph's picks file must not be another's candidates file either
                # (mic_x.mrc's candidates/mic_x_autopick.star is candidates/mic_x.mrc's picks file).
                for file in (sub, f"{self.candidates_dir.name}/{sub}"):
                    if file in owner:
                        raise ValueError(f"micrographs '{owner[file]}' and '{item.name}' would share the "
                                         f"output file {file}; give micrographs distinct names")
                    owner[file] = item.name
                self._sub[item.name] = sub

    @property
    def lock_file(self) -> Path:
        """The lock held while a run writes here (`hydrapick.io.lock.output_lock`); shards of a folder
        write disjoint files, so each shard has its own."""
        if self.folder:
            shard = f".shard{self._shard[0]}of{self._shard[1]}" if self.sharded else ""  # type: ignore
            return self.path / f".hydrapick-pick{shard}.lock"
        return self.path.with_name(f".{self.path.name}.lock")

    def claim(self) -> contextlib.AbstractContextManager:
        """Check that every output can be written, then lock the output for this run.

        Raises `hydrapick.io.errors.OutputError` (one line) before any micrograph is picked: an output
        that cannot be written, or one that another run is writing.
        """
        from ..io.atomic import check_writable
        from ..io.lock import output_lock

        for target in ([self.path] if self.folder else [self.path, self.candidates_path]):
            check_writable(target, "output")
        return output_lock(self.lock_file, f"output '{self.path}'")

    def main_file(self, item: MicrographInput) -> Path:
        return self.path / self._sub[item.name]

    def candidates_file(self, item: MicrographInput) -> Path:
        return self.candidates_dir / self._sub[item.name]

    def exists(self, item: MicrographInput) -> bool:
        return self.main_file(item).is_file() and self.candidates_file(item).is_file()

    def write_micrograph(self, result: PickResult) -> None:
        """Per-micrograph files, candidates first: a main file therefore marks a finished micrograph."""
        if not self.folder:
            return
        item = MicrographInput(result.path, result.name)
        self._write_one(result.picks, self.candidates_file(item))
        self._write_one(result.selected, self.main_file(item))

    def _write_one(self, picks: Picks, path: Path) -> None:
        from ..io import write_coordinates

        if self.format == "relion":
            write_coordinates(picks, path, "star", combined=False)
        else:
            write_coordinates(picks, path, "box")

    def read_back(self, item: MicrographInput) -> Picks:
        from ..io import read_coordinates

        picks = read_coordinates(self.main_file(item), "star" if self.format == "relion" else "box",
                                 micrograph=item.name)
        return picks.with_micrograph(item.name)

    def finish(self, picks: Picks, candidates: Picks, results: Sequence[PickResult],
               names: list[str]) -> list[Path]:
        """Index files (folders) or the combined files; returns the main outputs."""
        from ..io import write_coordinates, write_relion_job

        if self.folder:
            self.path.mkdir(parents=True, exist_ok=True)
            if self.format == "relion" and not self.sharded:
                write_relion_job(picks, self.path, names)
                write_coordinates(candidates, self.candidates_path, "star", combined=True)
            return [self.path]
        if self.format == "cs":
            from ..io.cryosparc import write_cs

            shapes = {r.name: r.shape for r in results if r.shape is not None}
            sizes = {r.name: r.pixel_size_A for r in results if r.pixel_size_A is not None}
            write_cs(candidates, self.candidates_path, image_shape=shapes, pixel_size_A=sizes)
            write_cs(picks, self.path, image_shape=shapes, pixel_size_A=sizes)
        else:
            extra = {"combined": True} if self.format == "star" else {}
            write_coordinates(candidates, self.candidates_path, self.format, **extra)
            write_coordinates(picks, self.path, self.format, **extra)
        return [self.path]


def write_preview(result: PickResult, folder: str | os.PathLike) -> Path:
    """PNG of the micrograph with its selected picks (red boxes of the particle diameter)."""
    from ..evaluation.plots import overlay
    from ..io import read_micrograph

    image = np.asarray(read_micrograph(result.path).data, dtype=np.float32)
    selected = result.selected
    box = float(selected.diameter_px[0]) if len(selected) else float(np.nanmean(result.picks.diameter_px)
                                                                        if len(result.picks) else 0.0)
    out = Path(folder) / f"{micrograph_key(result.name)}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, out, picks=selected, box_px=box or 1.0,
            title=f"{result.name}: {len(selected)} picks, score >= {result.threshold:.2f}")
    return out
