"""hydrapick-relion-pick / -finetune played by a stand-in for RELION 4/5's External job.

`relion_command` builds the command line exactly as RELION's ``RelionJob::getCommandsExternalJob``
(src/pipeline_jobs.cpp) does, including the ``>> run.out 2>> run.err &`` of ``prepareFinalCommand``; the
job runs from the project folder, is aborted with ``RELION_JOB_ABORT_NOW`` half-way and then continued
with the same command, as RELION's "Continue" does. Outputs are read with ``starfile``, a reader
hydrapick does not own.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from test_picking import DIAMETER_A, blob_image, match_fraction, trained_checkpoint

from hydrapick.checkpoint import load_checkpoint
from hydrapick.io import read_coordinates, write_micrograph
from hydrapick.io.relion_pipeline import (
    ABORT_NOW,
    COORDS_LABEL_RELION4,
    COORDS_LABEL_RELION5,
    EXIT_ABORTED,
    EXIT_FAILURE,
    EXIT_SUCCESS,
)
from hydrapick.picking import outputs as pick_outputs
from hydrapick.relion import finetune_job, pick_job
from hydrapick.relion.job import JobError, parse_job_args

REPO = Path(__file__).resolve().parent.parent
N_MICS = 6
APIX = 2.0


def relion_command(exe: str, job: str, inputs: dict[str, str], params: list[tuple[str, str]],
                   threads: int = 1) -> str:
    """The External job's command, as RELION builds it (no quoting: RELION pastes the fields)."""
    command = f"{exe} --o {job}"
    for option, flag in (("in_mov", "--in_movies"), ("in_mic", "--in_mics"), ("in_part", "--in_parts"),
                         ("in_coords", "--in_coords"), ("in_3dref", "--in_3dref"), ("in_mask", "--in_mask")):
        if inputs.get(option):
            command += f" {flag} {inputs[option]}"
    for label, value in params:  # Param1..Param10: only those with a label
        if label:
            command += f" --{label} {value}"
    command += f" --j {threads}"
    command += " "  # other_args, empty
    return command


def make_project(root: Path) -> dict[str, np.ndarray]:
    """A RELION project: MotionCorr micrographs (header pixel size wrong on purpose) and a CTF STAR file."""
    rng = np.random.default_rng(7)
    truth = {}
    names = []
    for i in range(N_MICS):
        image, pts = blob_image(rng, (240, 320), 5, DIAMETER_A / APIX)
        name = f"MotionCorr/job002/Movies/mic_{i:03d}.mrc"
        write_micrograph(root / name, image, 1.0)  # the optics group's 2.0 A must win
        truth[name] = pts
        names.append(name)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographPixelSize": [APIX], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    mics = pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": [1] * N_MICS,
                         "rlnDefocusU": [15000.0] * N_MICS})
    (root / "CtfFind/job003").mkdir(parents=True)
    starfile.write({"optics": optics, "micrographs": mics}, root / "CtfFind/job003/micrographs_ctf.star")
    (root / "default_pipeline.star").write_text("\n# version 50001\n\ndata_pipeline_general\n\n"
                                                "_rlnPipeLineJobCounter 8\n")
    return truth


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path)


def pick_params(*extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("diameter", str(DIAMETER_A)), ("model", trained_checkpoint()), *extra]


def interrupt_after(monkeypatch, n: int, interrupt) -> list[str]:
    """Make the n-th micrograph's written outputs trigger ``interrupt()`` (RELION's Abort button, a
    signal); returns the names of the micrographs written, as they are written."""
    written: list[str] = []
    original = pick_outputs.PickOutputs.write_micrograph

    def write_then_interrupt(self, result):
        original(self, result)
        written.append(result.name)
        if len(written) == n:
            interrupt()

    monkeypatch.setattr(pick_outputs.PickOutputs, "write_micrograph", write_then_interrupt)
    return written


def test_parse_the_command_line_relion_builds():
    command = relion_command("hydrapick-relion-pick", "External/job007/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star"},
                             [("diameter", "150"), ("tta", ""), ("Batch-Size", "4")], threads=6)
    args = parse_job_args(shlex.split(command)[1:])
    assert args.output_name == "External/job007/" and args.threads == 6
    assert args.inputs == {"in_mics": "CtfFind/job003/micrographs_ctf.star"}
    assert args.params == {"diameter": "150", "tta": "", "batch_size": "4"}
    assert args.node_name("autopick.star") == "External/job007/autopick.star"
    # A path with relion_ in it gets --pipeline_control appended by RELION; it is accepted.
    assert parse_job_args(["--o", "External/job1/", "--pipeline_control", "External/job1/"]).threads is None
    for bad in (["External/job1/"], ["--in_mics", "x.star"], ["--o", "a/", "--o", "b/"]):
        with pytest.raises(JobError):
            parse_job_args(bad)


def test_pick_job_abort_then_continue(project, monkeypatch):
    job = Path("External/job007")
    command = relion_command("hydrapick-relion-pick", "External/job007/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star"}, pick_params())
    argv = shlex.split(command)[1:]
    # RELION's Abort button, pressed while the third micrograph is being written.
    written = interrupt_after(monkeypatch, 3, lambda: (job / ABORT_NOW).write_text(""))
    assert pick_job.main(argv) == 2
    assert (job / EXIT_ABORTED).is_file() and not (job / EXIT_SUCCESS).exists()
    assert len(written) == 3 and not (job / "autopick.star").exists()
    first = {n: (job / "Movies" / f"mic_{i:03d}_autopick.star").read_text() for i, n in enumerate(written)}

    # Continue: RELION removes the abort and exit files and runs the same command again.
    (job / ABORT_NOW).unlink()
    assert pick_job.main(argv) == 0
    assert written[3:] == [f"MotionCorr/job002/Movies/mic_{i:03d}.mrc" for i in range(3, N_MICS)]
    assert (job / EXIT_SUCCESS).is_file() and not (job / EXIT_ABORTED).exists()
    for i, name in enumerate(written[:3]):  # not picked again (the index writer rewrites the same rows)
        assert (job / "Movies" / f"mic_{i:03d}_autopick.star").read_text() == first[name]
    _check_pick_outputs(job, project)


def test_pick_job_continue_with_other_parameters_is_refused(project, monkeypatch):
    """A Continue after an abort, with another diameter and threshold: refused, nothing mixed."""
    job = Path("External/job013")
    mics = {"in_mic": "CtfFind/job003/micrographs_ctf.star"}
    written = interrupt_after(monkeypatch, 2, lambda: (job / ABORT_NOW).write_text(""))
    argv = shlex.split(relion_command("hydrapick-relion-pick", f"{job}/", mics, pick_params()))[1:]
    assert pick_job.main(argv) == 2
    (job / ABORT_NOW).unlink()
    # Another threshold: refused, naming the difference and how to re-pick; another diameter too.
    for params, named in ((pick_params(("threshold", "0.5")), ("threshold 0.2 there, 0.5 now", "new job")),
                          ([("diameter", "86.4"), *pick_params(("threshold", "0.5"))[1:]], ("72", "86.4"))):
        (job / "run.err").unlink(missing_ok=True)
        argv = shlex.split(relion_command("hydrapick-relion-pick", f"{job}/", mics, params))[1:]
        assert pick_job.main(argv) == 1
        assert (job / EXIT_FAILURE).is_file() and len(written) == 2  # nothing more picked
        reason = (job / "run.err").read_text()
        assert all(text in reason for text in named), reason


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_pick_job_stopped_by_sigterm_or_sighup_releases_the_lock_and_says_aborted(project, monkeypatch,
                                                                                  signum):
    """SLURM's time limit and scancel send SIGTERM (a closed terminal SIGHUP): the job must end as RELION
    can see, with its lock released so that Continue, on this node or another, picks the rest."""
    job = Path("External/job014")
    argv = shlex.split(relion_command("hydrapick-relion-pick", f"{job}/",
                                      {"in_mic": "CtfFind/job003/micrographs_ctf.star"}, pick_params()))[1:]
    original = pick_outputs.PickOutputs.write_micrograph
    written = interrupt_after(monkeypatch, 2, lambda: os.kill(os.getpid(), signum))
    before = signal.getsignal(signum)
    status = pick_job.main(argv)
    assert status == 128 + signum and len(written) == 2
    assert (job / EXIT_ABORTED).is_file() and not (job / EXIT_SUCCESS).exists()
    assert not list(job.glob(".hydrapick-pick*.lock"))
    assert signal.getsignal(signum) == before  # the handler is the job's only while it runs
    monkeypatch.setattr(pick_outputs.PickOutputs, "write_micrograph", original)
    assert pick_job.main(argv) == 0
    _check_pick_outputs(job, project)


def _check_pick_outputs(job: Path, truth: dict[str, np.ndarray]) -> None:
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star")
    assert list(nodes["rlnPipeLineNodeName"]) == [f"{job.as_posix()}/autopick.star"]
    assert list(nodes["rlnPipeLineNodeTypeLabel"]) == [COORDS_LABEL_RELION5]
    index = starfile.read(job / "autopick.star")
    assert list(index["rlnMicrographName"]) == list(truth)  # the STAR file's names, for Extract
    n = 0
    for mic, coords in zip(index["rlnMicrographName"], index["rlnMicrographCoordinates"], strict=True):
        assert coords == f"{job.as_posix()}/Movies/{Path(mic).stem}_autopick.star"
        rows = starfile.read(coords)  # relative to the project folder, as RELION reads it
        assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"} <= set(rows.columns)
        picks = read_coordinates(coords, "star")
        recall, precision = match_fraction(picks, truth[mic], 0.15 * DIAMETER_A / APIX)
        assert recall >= 0.8 and precision >= 0.8, (mic, recall, precision)
        n += len(rows)
    assert n > 0


def test_pick_job_as_relion_runs_it_with_run_out_and_run_err(project):
    """Through the shell, with RELION's redirections; the RELION 4 label when the project is RELION 4."""
    Path("default_pipeline.star").write_text("\n# version 30001\n\ndata_pipeline_general\n")
    exe = f"{sys.executable} -m hydrapick.relion.pick_job"
    command = relion_command(exe, "External/job008/", {"in_mic": "CtfFind/job003/micrographs_ctf.star"},
                             pick_params(("scales", "0.9,1,1.1")))
    Path("External/job008").mkdir(parents=True)
    final = command + " >> External/job008/run.out 2>> External/job008/run.err"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(final, shell=True, env=env, timeout=300)
    assert done.returncode == 0, Path("External/job008/run.err").read_text()
    assert Path("External/job008", EXIT_SUCCESS).is_file()
    out = Path("External/job008/run.out").read_text()
    assert f"picking {N_MICS} micrographs" in out and EXIT_SUCCESS in out
    nodes = starfile.read("External/job008/RELION_OUTPUT_NODES.star")
    assert list(nodes["rlnPipeLineNodeTypeLabel"]) == [COORDS_LABEL_RELION4]


def test_pick_job_failure_writes_the_reason_to_run_err(project):
    job = Path("External/job009")
    assert pick_job.main(["--o", "External/job009/", "--diameter", "150", "--j", "1"]) == 1
    assert (job / EXIT_FAILURE).is_file()
    assert "no input micrographs" in (job / "run.err").read_text()
    assert pick_job.main(["--o", "External/job009/", "--in_mics", "CtfFind/job003/micrographs_ctf.star",
                          "--diamter", "150", "--j", "1"]) == 1
    assert (job / EXIT_FAILURE).is_file()
    assert "unknown parameter(s) --diamter" in (job / "run.err").read_text()


def write_manual_picks(project, every: int = 1) -> None:
    """Manual picks (every ``every``-th particle) on two micrographs, as RELION 4/5's Manual picking job
    lays them out in ManualPick/job004."""
    coords_files = []
    names = list(project)[:2]
    for name in names:
        out = Path("ManualPick/job004/Movies") / (Path(name).stem + "_manualpick.star")
        out.parent.mkdir(parents=True, exist_ok=True)
        pts = project[name][::every]
        starfile.write(pd.DataFrame({"rlnCoordinateX": pts[:, 0], "rlnCoordinateY": pts[:, 1],
                                     "rlnAutopickFigureOfMerit": [-999.0] * len(pts)}), out)
        coords_files.append(out.as_posix())
    starfile.write({"coordinate_files": pd.DataFrame({"rlnMicrographName": names,
                                                      "rlnMicrographCoordinates": coords_files})},
                   "ManualPick/job004/manualpick.star")


def test_finetune_job_trains_a_head_from_manual_picks_and_the_pick_job_uses_it(project):
    write_manual_picks(project)
    command = relion_command("hydrapick-relion-finetune", "External/job010/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star",
                              "in_coords": "ManualPick/job004/manualpick.star"},
                             [("diameter", str(DIAMETER_A)), ("model", trained_checkpoint()),
                              ("name", "mine"), ("steps", "20"), ("device", "cpu")])
    assert finetune_job.main(shlex.split(command)[1:]) == 0, Path("External/job010/run.err").read_text()
    assert Path("External/job010", EXIT_SUCCESS).is_file()
    nodes = starfile.read("External/job010/RELION_OUTPUT_NODES.star")
    assert list(nodes["rlnPipeLineNodeName"]) == ["External/job010/model.pt"]
    command = relion_command("hydrapick-relion-pick", "External/job011/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star"},
                             [("model", "External/job010/model.pt"), ("head", "mine")])
    assert pick_job.main(shlex.split(command)[1:]) == 0, Path("External/job011/run.err").read_text()
    assert len(starfile.read("External/job011/autopick.star")) == N_MICS


def test_finetune_job_passes_sparse_labels_through(project):
    """Issue 35: manual picks that hold some particles of each micrograph train as sparse labels."""
    write_manual_picks(project, every=3)
    command = relion_command("hydrapick-relion-finetune", "External/job012/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star",
                              "in_coords": "ManualPick/job004/manualpick.star"},
                             [("diameter", str(DIAMETER_A)), ("model", trained_checkpoint()),
                              ("name", "clicks"), ("steps", "5"), ("device", "cpu"), ("sparse", "yes"),
                              ("expected_particles", "7"), ("train_body_blocks", "1")])
    assert finetune_job.main(shlex.split(command)[1:]) == 0, Path("External/job012/run.err").read_text()
    model, meta = load_checkpoint("External/job012/model.pt")
    info = meta["training"]["finetune"]["clicks"]
    assert info["config"]["sparse"] is True and info["config"]["expected_particles"] == 7.0
    # The other fine-tuning options pass through too: the head trained its own copy of a body block.
    assert info["config"]["train_body_blocks"] == 1 and len(model.heads["clicks"].body_tail) == 1
    sparse = info["calibration"]["sparse"]
    assert sparse["sparse"] is True and sparse["expected_particles"] == 7.0 and sparse["source"] == "given"
    assert sparse["unlabelled_share"] > 0


# --- RELION 4/5 Extract finds coordinates by the micrograph name, string for string -----------------------

def star_column_bytes(path: str | os.PathLike, label: str) -> list[bytes]:
    """The raw bytes of column ``label`` in the first loop of a STAR file that has it.

    Its own reader (neither hydrapick's nor starfile's), so nothing is normalised on the way: unquoted
    tokens, as RELION's MetaDataTable reads them.
    """
    labels: list[bytes] = []
    in_header = False
    values: list[bytes] = []
    for raw in Path(path).read_bytes().splitlines():
        line = raw.strip()
        if line.startswith(b"data_") or line == b"loop_":
            if values:
                return values
            labels, in_header = [], line == b"loop_"
        elif line.startswith(b"_") and in_header:
            labels.append(line.split()[0])
        elif line and not line.startswith(b"#") and labels:
            in_header = False
            if label.encode() in labels:
                values.append(line.split()[labels.index(label.encode())])
    return values


def relion45_extract_lookup(mics_star: str | os.PathLike, index_star: str | os.PathLike,
                            ) -> dict[bytes, bytes]:
    """Which coordinate file RELION 4/5 Extract reads for each micrograph of ``mics_star``.

    RELION 4/5 pass the picking job's ``autopick.star`` as ``--coord_list``: ``Preprocessing::initialise``
    (src/preprocessing.cpp) fills ``std::map<FileName, FileName> micname2coordname`` from its
    ``_rlnMicrographName``/``_rlnMicrographCoordinates`` rows, and ``extractParticlesFromFieldOfView``
    looks each micrograph of the input STAR up with ``micname2coordname[fn_mic]``: an exact string
    match, and a name not found gives "" (no file) and the micrograph is skipped without a word.
    Returns {input name: coordinate file, or b"" when skipped}.
    """
    index = dict(zip(star_column_bytes(index_star, "_rlnMicrographName"),
                     star_column_bytes(index_star, "_rlnMicrographCoordinates"), strict=True))
    return {name: index.get(name, b"") for name in star_column_bytes(mics_star, "_rlnMicrographName")}


def vary_star_names(root: Path, truth: dict[str, np.ndarray], outside: Path | None = None,
                    ) -> dict[str, np.ndarray]:
    """Rewrite the project's micrographs STAR with names in forms RELION keeps as written: an absolute
    path, ``./``, a doubled slash, and with ``outside``, ``../`` out of the project (a micrograph copied
    there); returns {new name: centres}."""
    import shutil

    old = list(truth)
    third = old[2]
    if outside is not None:
        outside.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / old[2], outside / "mic_002.mrc")
        third = f"../{outside.name}/mic_002.mrc"
    forms = [str(root / old[0]), "./" + old[1], third, old[3].replace("Movies/", "Movies//")] + old[4:]
    star = root / "CtfFind/job003/micrographs_ctf.star"
    blocks = starfile.read(star)
    blocks["micrographs"]["rlnMicrographName"] = forms
    starfile.write(blocks, star, overwrite=True)
    return {new: truth[o] for new, o in zip(forms, old, strict=True)}


def test_pick_job_index_keeps_the_star_files_micrograph_names_byte_for_byte(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    truth = vary_star_names(root, make_project(root), tmp_path / "outside")
    mics = "CtfFind/job003/micrographs_ctf.star"
    command = relion_command("hydrapick-relion-pick", "External/job012/", {"in_mic": mics}, pick_params())
    assert pick_job.main(shlex.split(command)[1:]) == 0, Path("External/job012/run.err").read_text()
    index = "External/job012/autopick.star"
    assert star_column_bytes(index, "_rlnMicrographName") == star_column_bytes(mics, "_rlnMicrographName")
    found = relion45_extract_lookup(mics, index)
    assert len(found) == N_MICS and all(found.values()), found  # every micrograph found by RELION 4/5
    for name, coords in found.items():
        picks = read_coordinates(coords.decode(), "star")
        recall, _ = match_fraction(picks, truth[name.decode()], 0.15 * DIAMETER_A / APIX)
        assert recall >= 0.8, (name, recall)


def test_console_scripts_are_declared_and_point_at_the_job_mains():
    import configparser
    import importlib

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].split("\n")
                   if line.strip())
    assert scripts["hydrapick-relion-pick"] == "hydrapick.relion.pick_job:main"
    assert scripts["hydrapick-relion-finetune"] == "hydrapick.relion.finetune_job:main"
    for target in (scripts["hydrapick-relion-pick"], scripts["hydrapick-relion-finetune"]):
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_pick_job_with_adaptation_continues_after_an_abort(project, monkeypatch):
    """The first run measures the scale, then adapts; Continue reuses the measure and adapts again to the
    same head (the network it adapts is the same whether or not this run measured), so it is accepted."""
    job = Path("External/job013")
    command = relion_command("hydrapick-relion-pick", "External/job013/",
                             {"in_mic": "CtfFind/job003/micrographs_ctf.star"}, pick_params(("adapt", "yes")))
    argv = shlex.split(command)[1:]
    interrupt_after(monkeypatch, 3, lambda: (job / ABORT_NOW).write_text(""))
    assert pick_job.main(argv) == 2
    (job / ABORT_NOW).unlink()
    assert pick_job.main(argv) == 0, (job / "run.err").read_text() if (job / "run.err").exists() else ""
    assert (job / EXIT_SUCCESS).is_file()
