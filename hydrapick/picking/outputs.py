"""The files a pick run writes: output formats, per-micrograph and combined outputs, previews.

`PickOutputs` decides where every output of one `hydrapick.picking.run.pick` run goes: per-micrograph files
(a RELION job folder, EMAN .box files) written as each micrograph is picked, or combined files (STAR,
Topaz, cryoSPARC) written at the end, always with the candidates above the score floor beside the picks
so they can be re-thresholded later.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..io.inputs import MicrographInput, is_micrograph_list
from ..picks import Picks, micrograph_key
from .results import PickResult

log = logging.getLogger(__name__)

PICK_FORMATS = ("star", "relion", "box", "topaz", "cs")
# A folder output records the settings its picks were made with, so that a continuation with other
# settings is refused instead of mixing picks made two ways (`PickOutputs.record_settings`).
SETTINGS_FILE = "pick_settings.json"
# The settings that change which picks a micrograph gets; "model" is a fingerprint of the weights used.
COMPARED_SETTINGS = ("model", "head", "diameter_A", "calibrated_scale", "threshold", "scales", "tta",
                     "min_distance_A", "border_A", "pixel_size_A")
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


def pick_settings(net, head: str, *, diameter_A: float, threshold: float, scales: Sequence[float],
                  tta: bool, min_distance_A: float | None = None, border_A: float | None = None,
                  pixel_size_A: float | None = None, calibrated_scale: float | None = None,
                  model_source: str | None = None) -> dict:
    """The settings a run picks with, as recorded in a folder output's `SETTINGS_FILE`.

    ``model`` is a SHA-256 of the weights that pick (the body and head ``head``), so the same model read
    from another file is the same model and a retrained head under an old name is not. ``calibrated_scale``
    is the diameter scale a calibration chose, when one did; ``min_distance_A``, ``border_A`` and
    ``pixel_size_A`` are None where the defaults apply. ``model_source`` (a path) is only for reading.
    """
    from ..version import __version__

    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        if key.startswith("heads.") and not key.startswith(f"heads.{head}."):
            continue  # other heads do not pick
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = {"model": digest.hexdigest()[:16], "head": head, "diameter_A": float(diameter_A),
                "calibrated_scale": calibrated_scale, "threshold": float(threshold),
                "scales": [float(r) for r in scales], "tta": bool(tta), "min_distance_A": min_distance_A,
                "border_A": border_A, "pixel_size_A": pixel_size_A, "model_source": model_source,
                "hydrapick_version": __version__}
    return json.loads(json.dumps(settings))  # as read back from the file, so the two compare exactly


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
        if fmt in ("relion", "star"):
            _warn_relion_31_names(items, job=fmt == "relion")

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

    def check_not_inputs(self, specs: Iterable, items: Sequence[MicrographInput]) -> None:
        """Raise ValueError when an output file is one of the inputs (a list or a micrograph).

        ``pick list.star -o list.star`` would otherwise replace the list with picks.
        """
        inputs = {os.path.realpath(os.fspath(spec)): "the micrograph list" for spec in specs
                  if isinstance(spec, (str, os.PathLike)) and is_micrograph_list(os.fspath(spec))}
        inputs.update({os.path.realpath(it.path): "a micrograph" for it in items})
        if self.folder:
            files = [self.path / "autopick.star", self.candidates_path] if self.format == "relion" else []
        else:
            files = [self.path, self.candidates_path]
        for file in files:
            what = inputs.get(os.path.realpath(file))
            if what is not None:
                raise ValueError(f"output '{file}' is also an input ({what}); writing it would destroy it: "
                                 "choose another output")

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS_FILE

    def record_settings(self, settings: dict, items: Sequence[MicrographInput], *, continuing: bool) -> None:
        """Check a folder output's recorded settings against this run's, then record this run's.

        Picks made with other settings must not join the folder's: a continuation (``continuing``, i.e.
        ``skip_existing``) that differs is refused, and so is a plain run that differs while the folder
        holds picks of micrographs outside this run. A plain run that re-picks all of them replaces the
        record (and first removes its micrographs' old files, so that an interrupted re-pick never
        leaves old picks that a continuation would take for new ones).

        Raises
        ------
        ValueError
            Saying what differs and how to re-pick.
        """
        if not self.folder:
            return
        from ..io.atomic import write_text

        recorded = None
        if self.settings_file.is_file():
            try:
                recorded = json.loads(self.settings_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read the settings recorded in '{self.settings_file}' ({exc}); "
                                 "remove it to pick into this folder anyway") from None
        mine = {self.main_file(it) for it in items}
        earlier = [f for f in self.main_files() if f not in mine]
        done = [f for f in mine if f.is_file()]
        if recorded is None:
            if earlier or (continuing and done):
                log.warning("output folder '%s' holds picks but records no settings (%s); they cannot be "
                            "checked against this run's", self.path, SETTINGS_FILE)
        else:
            differ = [k for k in COMPARED_SETTINGS if recorded.get(k) != settings.get(k)]
            if differ:
                what = "; ".join(_setting_change(k, recorded, settings) for k in differ)
                where = f"output folder '{self.path}' was picked with other settings ({self.settings_file}): "
                if continuing and done:
                    raise ValueError(
                        where + what + ". Continuing would mix picks made two ways. Continue with the "
                        "recorded settings, or re-pick with the new ones into a new folder (or here without "
                        "--skip-existing, giving every micrograph; a RELION External job: a new job)")
                if earlier:
                    raise ValueError(
                        where + what + f". It holds picks of {len(earlier)} micrograph(s) not in this run "
                        f"(e.g. '{earlier[0]}') that would mix with this run's. Pick into a new folder, or "
                        "give those micrographs too to re-pick them all")
                for file in done:  # re-picked below with the new settings
                    file.unlink()
        write_text(self.settings_file, json.dumps(settings, indent=2) + "\n")

    def main_files(self) -> list[Path]:
        """The per-micrograph main files in the folder now (candidates not counted)."""
        if not self.path.is_dir():
            return []
        pattern = "*_autopick.star" if self.format == "relion" else "*.box"
        return [p for p in self.path.rglob(pattern)
                if self.candidates_dir not in p.parents and p.is_file()]

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
                names, picks, candidates = self._keep_earlier(names, picks, candidates)
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


    def _keep_earlier(self, names: list[str], picks: Picks, candidates: Picks,
                      ) -> tuple[list[str], Picks, Picks]:
        """Add the micrographs an earlier run indexed in ``autopick.star`` and this run did not pick, so
        that a second run into a job folder extends its index instead of losing the first run's."""
        from ..io import _star, read_coordinates
        from ..io.star import relion_output_subpath

        index = self.path / "autopick.star"
        if not index.is_file():
            return names, picks, candidates
        try:
            earlier = list(_star.read(index).get("coordinate_files", {}).get("_rlnMicrographName", []))
        except ValueError as exc:
            log.warning("the earlier index '%s' is not readable (%s); this run's replaces it", index, exc)
            return names, picks, candidates
        mine = set(names)
        taken = {relion_output_subpath(n) for n in names}
        kept = [n for n in earlier if n not in mine and relion_output_subpath(n) not in taken
                and (self.path / f"{relion_output_subpath(n)}_autopick.star").is_file()]
        if not kept:
            return names, picks, candidates
        log.warning("kept %d micrograph(s) picked by an earlier run in '%s'", len(kept), index)
        parts, extra = [picks], [candidates]
        for name in kept:
            sub = f"{relion_output_subpath(name)}_autopick.star"
            parts.append(read_coordinates(self.path / sub, "star", micrograph=name).with_micrograph(name))
            if (self.candidates_dir / sub).is_file():
                extra.append(read_coordinates(self.candidates_dir / sub, "star", micrograph=name)
                             .with_micrograph(name))
        keep = set(kept)
        order = [n for n in earlier if n in keep or n in mine] + [n for n in names if n not in set(earlier)]
        return order, Picks.concat(parts), Picks.concat(extra)


def _warn_relion_31_names(items: Sequence[MicrographInput], *, job: bool) -> None:
    """Warn about micrograph names that RELION 3.1 reads wrongly (written as they are: RELION 4/5 and
    the other tools read them, and RELION finds coordinates by them)."""
    spaced = [it.name for it in items if any(c.isspace() for c in it.name)]
    upward = [it.name for it in items if ".." in it.name.replace("\\", "/").split("/")] if job else []
    for names, why in ((spaced, "a space splits a STAR field, and RELION 3.1 reads no quotes"),
                       (upward, "RELION 3.1's --coord_dir lookup follows '..' out of the job folder, "
                                "where the coordinates are not")):
        if names:
            log.warning("%d micrograph name(s) that RELION 3.1 reads wrongly, e.g. '%s': %s; rename or link "
                        "the micrographs for RELION 3.1", len(names), names[0], why)


def _setting_change(key: str, recorded: dict, now: dict) -> str:
    def shown(d: dict) -> str:
        value = d.get(key)
        if key == "model" and d.get("model_source"):
            return f"{value} ({d['model_source']})"
        if value is None:
            return "default"
        if isinstance(value, list):
            return ",".join(f"{v:g}" for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return f"{key} {shown(recorded)} there, {shown(now)} now"


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
