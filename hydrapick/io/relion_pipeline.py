"""RELION's pipeline-control files: how a job tells RELION it finished, and how RELION asks it to stop.

RELION 4/5 run an External job's executable in the background and watch its output folder (RELION's
``src/pipeline_control.h``, ``src/pipeliner.cpp``, ``PipeLine::checkProcessCompletion``):

- the job ends by creating ``RELION_JOB_EXIT_SUCCESS``, ``RELION_JOB_EXIT_FAILURE`` or
  ``RELION_JOB_EXIT_ABORTED`` in its folder (empty files; RELION only tests that they exist);
- the "Abort" button creates ``RELION_JOB_ABORT_NOW`` there; a job checks for it between units of work;
- after success RELION reads ``RELION_OUTPUT_NODES.star`` (block ``output_nodes``: ``_rlnPipeLineNodeName``,
  ``_rlnPipeLineNodeTypeLabel``) to learn the job's outputs (``PipeLine::getOutputNodesFromStarFile``).

Node type labels changed between versions (``src/pipeline_jobs.h``): RELION 4.0 calls picked coordinates
``MicrographsCoords.star.relion.autopick``, RELION 5 ``MicrographCoordsGroup.star.relion.autopick``, and
RELION 5 converts old labels only when it reads a pipeline file written before its version 50001, not
in ``RELION_OUTPUT_NODES.star``; `coordinates_node_label` therefore follows the project's version.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import _star
from .atomic import write_text

EXIT_SUCCESS = "RELION_JOB_EXIT_SUCCESS"
EXIT_FAILURE = "RELION_JOB_EXIT_FAILURE"
EXIT_ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"
OUTPUT_NODES = "RELION_OUTPUT_NODES.star"
EXIT_FILES = (EXIT_SUCCESS, EXIT_FAILURE, EXIT_ABORTED)

# RELION 5 (metadata version 50001) and RELION 4 (30001) names of an auto-picking job's coordinates.
COORDS_LABEL_RELION5 = "MicrographCoordsGroup.star.relion.autopick"
COORDS_LABEL_RELION4 = "MicrographsCoords.star.relion.autopick"
_VERSION = re.compile(r"^#\s*version\s+(\d+)")


def abort_requested(job_dir: str | os.PathLike) -> bool:
    """Whether RELION (or a user) asked the job in ``job_dir`` to stop (``RELION_JOB_ABORT_NOW``)."""
    return (Path(job_dir) / ABORT_NOW).exists()


def clear_exit_files(job_dir: str | os.PathLike) -> None:
    """Remove earlier exit and abort files, as RELION does before it (re)starts a job."""
    for name in (*EXIT_FILES, ABORT_NOW):
        try:
            (Path(job_dir) / name).unlink()
        except FileNotFoundError:
            pass


def write_exit(job_dir: str | os.PathLike, name: str) -> Path:
    """Create the exit file ``name`` (one of `EXIT_FILES`) in ``job_dir``."""
    if name not in EXIT_FILES:
        raise ValueError(f"{name!r} is not a RELION exit file; use one of {', '.join(EXIT_FILES)}")
    path = Path(job_dir) / name
    write_text(path, "")
    return path


def write_output_nodes(job_dir: str | os.PathLike, nodes: list[tuple[str, str]]) -> Path:
    """Write ``RELION_OUTPUT_NODES.star`` listing ``(node name, type label)`` pairs (atomic).

    Node names are paths as RELION names them: relative to the project folder, e.g.
    ``External/job012/autopick.star``.
    """
    path = Path(job_dir) / OUTPUT_NODES
    _star.write(path, [("output_nodes", {"_rlnPipeLineNodeName": [n for n, _ in nodes],
                                         "_rlnPipeLineNodeTypeLabel": [t for _, t in nodes]})])
    return path


def project_version(project_dir: str | os.PathLike) -> int | None:
    """The metadata version of the project's ``default_pipeline.star`` (30001: RELION 3.1/4, 50001: 5)."""
    path = Path(project_dir) / "default_pipeline.star"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(20), f, strict=False):
                match = _VERSION.match(line.strip())
                if match:
                    return int(match.group(1))
    except OSError:
        return None
    return None


def coordinates_node_label(project_dir: str | os.PathLike, relion_version: int | None = None) -> str:
    """The node type label of auto-picked coordinates for this project's RELION.

    ``relion_version`` (4 or 5) wins; else the version of the project's ``default_pipeline.star``
    (below 50001: RELION 4); else RELION 5's label.
    """
    if relion_version is None:
        version = project_version(project_dir)
        relion_version = 4 if version is not None and version < 50001 else 5
    if relion_version not in (4, 5):
        raise ValueError(f"relion_version must be 4 or 5, got {relion_version}")
    return COORDS_LABEL_RELION4 if relion_version == 4 else COORDS_LABEL_RELION5
