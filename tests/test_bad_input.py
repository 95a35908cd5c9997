"""Bad input and concurrency give one clear error, never a silent wrong result (issue 14, items 1-10).

Each test reproduces one way hydrapick used to return wrong results or lose work quietly.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_picking import DIAMETER_A, trained_checkpoint, write_blob_micrographs

from hydrapick.checkpoint import read_checkpoint, save_checkpoint
from hydrapick.cli import cli
from hydrapick.cli.pick import PICK_EXIT_FAILED
from hydrapick.config import ModelConfig
from hydrapick.evaluation import evaluate_picks_files
from hydrapick.io import FormatError, read_coordinates, read_micrograph, write_coordinates, write_micrograph
from hydrapick.model import HydraPicker
from hydrapick.picking import pick
from hydrapick.picks import Picks


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def mics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_blob_micrographs(Path("Movies"), 2, pixel_size_A=2.0, particles=4, seed=3)


# --- 1: a micrograph's picks file must not be another's candidates file -------------------------------

def test_job_folder_refuses_a_picks_file_that_is_another_micrographs_candidates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    write_micrograph("mic_x.mrc", image, 2.0)
    write_micrograph("candidates/mic_x.mrc", image, 2.0)
    with pytest.raises(ValueError, match="would share the output file candidates/mic_x_autopick.star"):
        pick(["mic_x.mrc", "candidates/mic_x.mrc"], "job", model=trained_checkpoint(), diameter_A=DIAMETER_A)


# --- 2: coordinates of two files (or two names) reducing to one micrograph are refused -----------------

def _truth(tmp_path: Path) -> Path:
    folder = tmp_path / "truth"
    write_coordinates(Picks(micrograph="x", x=[10.0, 30.0], y=[10.0, 30.0]), folder / "x.star",
                      combined=False)
    return folder


def test_evaluate_refuses_two_truth_files_of_one_micrograph(tmp_path):
    folder = _truth(tmp_path)
    write_coordinates(Picks(micrograph="x", x=[10.0], y=[10.0]), folder / "x_autopick.star", combined=False)
    with pytest.raises(FormatError, match="x.star' and .*x_autopick.star' both hold coordinates of "
                                          "micrograph 'x'"):
        evaluate_picks_files(folder, folder / "x.star", box_px=10)


def test_evaluate_refuses_two_micrographs_of_one_name_in_a_combined_file(tmp_path):
    both = Picks(micrograph=np.array(["a/x.mrc", "b/x.mrc"], dtype=object), x=[10.0, 30.0], y=[10.0, 30.0])
    write_coordinates(both, tmp_path / "all.star", combined=True)
    result = run("evaluate", "--truth", str(tmp_path / "all.star"), "--picks", str(tmp_path / "all.star"),
                 "--box", "10")
    assert result.exit_code == 1
    assert "as 'a/x.mrc' and as 'b/x.mrc'" in result.output and "Traceback" not in result.output


def test_finetune_refuses_two_files_of_one_micrograph(tmp_path):
    from hydrapick.training import ManifestError
    from hydrapick.training.finetune import finetune

    write_blob_micrographs(tmp_path / "mics", 1, particles=3)
    coords = tmp_path / "coords"
    for name, x in (("mic_000.star", 50.0), ("mic_000_autopick.star", 60.0)):
        write_coordinates(Picks(micrograph="mic_000", x=[x], y=[50.0]), coords / name, combined=False)
    with pytest.raises(ManifestError, match="both hold coordinates of micrograph 'mic_000'"):
        finetune(trained_checkpoint(), "x", [str(tmp_path / "mics")], [str(coords)], DIAMETER_A,
                 device="cpu")


# --- 3: two runs writing one output ---------------------------------------------------------------------

def test_second_run_on_a_locked_output_fails_at_once_naming_the_holder(mics):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(".picks.star.lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        started = time.perf_counter()
        result = run("pick", "Movies/*.mrc", "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A),
                     "-o", "picks.star", "-q")
        assert time.perf_counter() - started < 10
        assert result.exit_code == 1
        assert f"PID {holder.pid} on host {socket.gethostname()}" in result.output
        assert ".picks.star.lock" in result.output and not Path("picks.star").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its stale lock is taken over, and removed when the run ends.
    result = run("pick", "Movies/*.mrc", "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A),
                 "-o", "picks.star", "-q")
    assert result.exit_code == 0, result.output
    assert Path("picks.star").exists() and not Path(".picks.star.lock").exists()


def test_output_lock_excludes_a_second_holder_and_releases(tmp_path):
    from hydrapick.io.lock import OutputLockedError, output_lock

    lock = tmp_path / "out" / ".x.lock"
    with output_lock(lock, "output 'x'"):
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        with pytest.raises(OutputLockedError, match=f"PID {os.getpid()}"):
            with output_lock(lock, "output 'x'"):
                pass
    assert not lock.exists()
    lock.write_text("123 some-other-host\n")  # cannot be checked from here: refused, not taken over
    with pytest.raises(OutputLockedError, match="on host some-other-host"):
        with output_lock(lock, "output 'x'"):
            pass


def test_job_folder_shards_lock_separately(mics):
    a = pick(["Movies/mic_000.mrc", "Movies/mic_001.mrc"], "job", model=trained_checkpoint(),
             diameter_A=DIAMETER_A, shard=(0, 2))
    assert a.n_failed == 0 and not list(Path("job").glob(".hydrapick-pick*.lock"))


# --- 4: a fresh training run does not append to a dead run's log -------------------------------------

def test_fresh_run_starts_a_new_log(tmp_path):
    from hydrapick.training.distributed import distributed_context
    from hydrapick.training.resume import prepare_run_folder

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    prepare_run_folder(tmp_path / "run", False, distributed_context(), final="model.pt", log_name="log.jsonl")
    assert not (tmp_path / "run" / "log.jsonl").exists()


# --- 5: checkpoints follow the umask ---------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_permissions_follow_the_umask(tmp_path, umask):
    model = HydraPicker(ModelConfig(body_channels=8, body_blocks=1, group_norm_groups=4,
                                    head_channels=(16, 16), stem_stride=2, anchor_stride=8))
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "m.pt", model, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- 6: unwritable outputs are found before the work ----------------------------------------------------

def test_pick_checks_combined_outputs_before_picking(mics):
    Path("blocker").write_text("a file, not a folder")
    result = run("pick", "Movies/*.mrc", "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A),
                 "-o", "blocker/picks.star", "-q")
    assert result.exit_code == 1
    assert "output 'blocker/picks.star' cannot be written: 'blocker' is not a folder" in result.output
    assert "picking" not in result.output


def test_evaluate_checks_json_and_plots_before_scoring(tmp_path):
    folder = _truth(tmp_path)
    (tmp_path / "f").write_text("")
    for option, target in (("--json", "f/s.json"), ("--plots", "f/p")):
        result = run("evaluate", "--truth", str(folder), "--picks", str(folder), "--box", "10", option,
                     str(tmp_path / target))
        assert result.exit_code == 1, result.output
        assert "cannot be written" in result.output and "Traceback" not in result.output


def test_unwritable_folder_is_found_by_probing(tmp_path, monkeypatch):
    from hydrapick.io import atomic
    from hydrapick.io.errors import OutputError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "TemporaryFile", refuse)
    with pytest.raises(OutputError, match="does not accept new files \\(Permission denied\\)"):
        atomic.check_writable(tmp_path / "ro" / "run")


def test_train_and_finetune_check_their_output_first(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "m.toml").write_text('[datasets.x]\nmicrographs = "none/*.mrc"\ncoordinates = "c"\n')
    train = run("train", str(tmp_path / "m.toml"), "-o", str(tmp_path / "f" / "run"))
    assert train.exit_code == 1 and "'f' is not a folder" in train.output.replace(str(tmp_path) + "/", "")
    ft = run("finetune", "x.mrc", "--coordinates", "c", "--name", "n", "--diameter", "100",
             "-o", str(tmp_path / "f" / "ft.pt"), "--model", trained_checkpoint())
    assert ft.exit_code == 1 and "cannot be written" in ft.output and "Traceback" not in ft.output


def test_resume_with_missing_or_empty_state_is_one_line(tmp_path):
    from hydrapick.training.errors import TrainingError
    from hydrapick.training.resume import RunCheckpoints

    class Run(RunCheckpoints):
        def __init__(self):
            self.out_dir, self.device = tmp_path, torch.device("cpu")

        def fingerprint(self):
            return {"config": {}}

    meta = {"resume": {"phase": "pretrain", "epoch": 1, "best_loss": None, "best_epoch": -1,
                       "state_file": "checkpoint-state-1.pt", "fingerprint": {"config": {}}}}
    with pytest.raises(TrainingError, match="checkpoint-state-1.pt named by the checkpoint does not exist"):
        Run().load_resume(meta)
    (tmp_path / "checkpoint-state-1.pt").write_bytes(b"")
    with pytest.raises(TrainingError, match="checkpoint-state-1.pt is damaged or empty"):
        Run().load_resume(meta)


# --- 7: particle sizes off by a unit ---------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    # The tiny test model sees particles at 24 px, so it picks 3 to 384 px.
    (["--diameter", "4", "--apix", "2"], "is 2 px across; hydrapick picks particles of 3 to 384 px"),
    (["--diameter", "4", "--apix", "2"], "was the diameter given in nm? 40 Å would be 20 px"),
    (["--diameter", "5"], "is 2.5 px across"),  # the header's 2 Å/px
    (["--diameter", "300", "--apix", "0.1"], "was the pixel size given in nm? 1 Å/px"),
    (["--diameter", "inf"], "must be a positive finite number in Å, got inf"),
    (["--diameter", "nan"], "must be a positive finite number in Å, got nan"),
    (["--diameter", "72", "--apix", "inf"], "pixel size must be a positive finite number"),
    (["--diameter", "0.001"], "0.0005 px across"),
])
def test_particle_size_off_by_a_unit_is_one_line(mics, args, expected):
    started = time.perf_counter()
    result = run("pick", "Movies/*.mrc", "--model", trained_checkpoint(), "-o", "p.star", "-q", *args)
    assert result.exit_code == 1, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert time.perf_counter() - started < 5  # model loading included; the check itself is instant


def test_particle_size_bounds_follow_the_model():
    from hydrapick.preprocess import check_particle_size

    config = ModelConfig(particle_diameter_px=64)
    assert check_particle_size(160.0, 20.0, config) == 8.0  # 1/8 of 64 px: the smallest accepted
    assert check_particle_size(1024.0, 1.0, config) == 1024.0  # 16 x 64 px: the largest
    with pytest.raises(ValueError, match="in pixels\\? 150 px would be 3000 Å"):
        check_particle_size(150.0, 20.0, config)
    with pytest.raises(ValueError, match="picks particles of 8 to 1024 px"):
        check_particle_size(1025.0, 1.0, config)


# --- 8: evaluate checks coordinates -----------------------------------------------------------------------

@pytest.mark.parametrize("x", ["nan", "inf"])
def test_non_finite_coordinates_name_the_file(tmp_path, x):
    (tmp_path / "t.star").write_text(f"data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n{x} 10\n20 20\n")
    with pytest.raises(FormatError, match="t.star' has 1 coordinate\\(s\\) that are not finite"):
        read_coordinates(tmp_path / "t.star")
    result = run("evaluate", "--truth", str(tmp_path / "t.star"), "--picks", str(tmp_path / "t.star"),
                 "--box", "10")
    assert result.exit_code == 1 and "t.star' has 1 coordinate(s)" in result.output


def test_truth_outside_the_micrograph_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("mics"), 1, particles=2)  # 240 x 320
    for x, where in ((-100.0, "(-100, 20) on 'mic_000' of its 320x240"), (1e30, "of its 320x240 micrograph")):
        write_coordinates(Picks(micrograph="mic_000", x=[x, 50.0], y=[20.0, 50.0]), "t/mic_000.star",
                          combined=False)
        with pytest.raises(ValueError, match="1 coordinate.s. lie outside .*" + re.escape(where)):
            evaluate_picks_files("t", "t", box_px=10, micrographs="mics")
    with pytest.raises(ValueError, match="negative"):  # without the micrographs, negatives still are
        write_coordinates(Picks(micrograph="mic_000", x=[-100.0], y=[20.0]), "t/mic_000.star", combined=False)
        evaluate_picks_files("t", "t", box_px=10)


# --- 9: missing micrographs, symlink loops, FIFOs ------------------------------------------------------

def test_missing_micrograph_is_reported_and_skipped_with_exit_3(mics):
    result = run("pick", "Movies/mic_000.mrc", "Movies/absent.mrc", "Movies/mic_001.mrc", "--model",
                 trained_checkpoint(), "--diameter", str(DIAMETER_A), "-o", "p.star", "-q")
    assert result.exit_code == PICK_EXIT_FAILED
    assert "failed: File 'Movies/absent.mrc' does not exist" in result.output
    picked = read_coordinates("p.star")
    assert sorted(set(picked.micrograph)) == ["Movies/mic_000.mrc", "Movies/mic_001.mrc"]


def test_symlink_loop_is_named(mics):
    os.symlink("loop.mrc", "loop.mrc")
    result = run("pick", "Movies/mic_000.mrc", "loop.mrc", "--model", trained_checkpoint(), "--diameter",
                 str(DIAMETER_A), "-o", "p.star", "-q")
    assert result.exit_code == PICK_EXIT_FAILED and "'loop.mrc' is a symlink loop" in result.output
    with pytest.raises(FormatError, match="is a symlink loop"):
        read_micrograph("loop.mrc")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("name", ["picks.star", "picks.txt", "picks.box", "picks.cs"])
def test_fifo_as_coordinate_file_is_refused_not_read(tmp_path, name):
    os.mkfifo(tmp_path / name)  # reading it would wait forever for a writer
    with pytest.raises(FormatError, match="is a FIFO \\(named pipe\\), not a regular file"):
        read_coordinates(tmp_path / name)


# --- 10: messages that said the wrong thing ----------------------------------------------------------------

def test_text_cs_is_called_text(tmp_path):
    (tmp_path / "p.cs").write_text("uid,x,y\n1,2,3\n")
    with pytest.raises(FormatError, match="is not a cryoSPARC .cs file .*: it is a text file") as info:
        read_coordinates(tmp_path / "p.cs")
    assert "pickle" not in str(info.value)


def test_negative_header_dimension_is_named(tmp_path):
    write_micrograph(tmp_path / "a.mrc", np.zeros((20, 30), np.float32), 2.0)
    data = bytearray((tmp_path / "a.mrc").read_bytes())
    data[0:4] = np.int32(-5).tobytes()
    (tmp_path / "a.mrc").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged MRC header: nx = -5 \\(the image dimensions must be "
                                          "positive\\)"):
        read_micrograph(tmp_path / "a.mrc")


def test_truncated_gzip_does_not_compare_compressed_sizes(tmp_path):
    import gzip

    write_micrograph(tmp_path / "a.mrc", np.zeros((64, 64), np.float32), 2.0)
    (tmp_path / "a.mrc.gz").write_bytes(gzip.compress((tmp_path / "a.mrc").read_bytes())[:-50])
    with pytest.raises(FormatError, match="not a readable gzip-compressed MRC file \\(truncated or "
                                          "damaged\\)") as info:
        read_micrograph(tmp_path / "a.mrc.gz")
    assert "bytes" not in str(info.value)


def test_checkpoint_error_never_suggests_weights_only_false(tmp_path):
    torch.save({"format": "hydrapick-checkpoint", "obj": Path("x")}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="never loads") as info:
        read_checkpoint(tmp_path / "evil.pt")
    assert "weights_only" not in str(info.value)
    result = run("pick", "x.mrc", "--model", str(tmp_path / "evil.pt"), "--diameter", "100", "-o",
                 str(tmp_path / "p.star"))
    assert result.exit_code == 1 and "weights_only" not in result.output and "never loads" in result.output


# --- issue 36, item 11: inputs the picker cannot handle are handled or said ---------------------------------

@pytest.mark.parametrize("sigma", [1000.0, 10000.0])
def test_hot_pixels_do_not_hide_the_particles(tmp_path, sigma):
    """0.04% hot pixels at 1000 sigma cut 20 picks to 12 (at 10^4 sigma to none): resampling smeared them
    before they were clipped."""
    from test_picking import blob_image, match_fraction

    from hydrapick.picking import pick_micrographs

    rng = np.random.default_rng(11)
    image, pts = blob_image(rng, (480, 640), 20, DIAMETER_A / 2.0)
    image.flat[rng.choice(image.size, int(image.size * 0.0004), replace=False)] = sigma
    write_micrograph(tmp_path / "hot.mrc", image, 2.0)
    result = next(pick_micrographs([str(tmp_path / "hot.mrc")], model=trained_checkpoint(),
                                   diameter_A=DIAMETER_A, device="cpu"))
    recall, precision = match_fraction(result.selected, pts, 0.15 * DIAMETER_A / 2.0)
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)


def test_constant_micrograph_and_a_border_or_distance_that_leave_nothing_are_warned(mics, caplog):
    write_micrograph("Movies/blank.mrc", np.full((240, 320), 7.0, np.float32), 2.0)
    with caplog.at_level("WARNING"):
        report = pick(["Movies/blank.mrc"], model=trained_checkpoint(), diameter_A=DIAMETER_A, device="cpu")
    assert len(report.picks) == 0 and "constant" in caplog.text and "blank.mrc" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        report = pick(sorted(map(str, mics)), model=trained_checkpoint(), diameter_A=DIAMETER_A,
                      border_A=100000.0, device="cpu")
    assert len(report.picks) == 0 and "border" in caplog.text and "Å" in caplog.text
    assert caplog.text.count("leaves no room") == 1  # once per run, not per micrograph
    caplog.clear()
    with caplog.at_level("WARNING"):
        pick(sorted(map(str, mics)), model=trained_checkpoint(), diameter_A=DIAMETER_A, min_distance_A=1e5,
             device="cpu")
    assert "minimum distance" in caplog.text


# --- issue 36, item 13: the minor ones ----------------------------------------------------------------------

def test_job_in_an_unwritable_folder_or_with_a_repeated_parameter_ends_in_one_line(tmp_path, monkeypatch,
                                                                                   capsys):
    from hydrapick.io.relion_pipeline import EXIT_FAILURE
    from hydrapick.relion import pick_job

    monkeypatch.chdir(tmp_path)
    assert pick_job.main(["--o", "External/job001/", "--diameter", "1", "--diameter", "2"]) == 1
    assert Path("External/job001", EXIT_FAILURE).is_file()  # RELION sees the failure
    assert "--diameter given twice" in Path("External/job001/run.err").read_text()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert pick_job.main(["--o", "External/job002/", "--diameter", "1"]) == 1
    err = capsys.readouterr().err
    assert "External/job002" in err and "Permission denied" in err and "Traceback" not in err


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    import errno

    from hydrapick.io import atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError, match="No space left on device.*picks.star"):
        atomic.write_text(tmp_path / "picks.star", "x")


def test_a_compressed_micrograph_claiming_more_pixels_than_memory_is_refused_before_reading(tmp_path):
    import gzip

    import mrcfile

    path = tmp_path / "huge.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 4), np.float32))
        mrc.header.nx = mrc.header.ny = 400_000  # 640 GB of float32
    with open(path, "rb") as f, gzip.open(tmp_path / "huge.mrc.gz", "wb") as g:
        g.write(f.read())
    with pytest.raises(FormatError, match="400000 x 400000.*memory"):
        read_micrograph(tmp_path / "huge.mrc.gz")


def test_a_micrograph_given_as_the_model_is_called_a_micrograph(tmp_path):
    from hydrapick.checkpoint import CheckpointError

    write_micrograph(tmp_path / "mic.mrc", np.zeros((16, 16), np.float32), 1.0)
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(tmp_path / "mic.mrc")
    assert "MRC micrograph" in str(refused.value) and "code" not in str(refused.value)


def test_box_files_hold_whole_pixels_centred_as_relion_reads_them(tmp_path):
    picks = Picks("m", [100.7, 57.2, 10.5], [40.4, 300.9, 12.5], [0.9, 0.8, 0.7], diameter_px=63.4)
    path = write_coordinates(picks, tmp_path / "m.box")
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    for (x_corner, y_corner, w, h, _), x, y in zip(rows, picks.x, picks.y, strict=True):
        assert all(v.lstrip("-").isdigit() for v in (x_corner, y_corner, w, h)), (x_corner, y_corner, w, h)
        # RELION (Preprocessing::readCoordinates): xpos = num1 + num3 / 2, in integers.
        assert int(x_corner) + int(w) // 2 == np.rint(x) and int(y_corner) + int(h) // 2 == np.rint(y)
    back = read_coordinates(path)
    np.testing.assert_array_equal(back.x, np.rint(picks.x))


@pytest.mark.parametrize("name", ["Movies/mic 001.mrc", "../elsewhere/mic_001.mrc"])
def test_names_relion_31_misreads_are_warned(tmp_path, monkeypatch, caplog, name):
    monkeypatch.chdir(tmp_path)
    folder = Path("project")
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    write_micrograph(folder / name, np.zeros((240, 320), np.float32) + np.random.default_rng(0).normal(
        size=(240, 320)).astype(np.float32), 2.0)
    monkeypatch.chdir(folder)
    with caplog.at_level("WARNING"):
        pick([name], "AutoPick/job003", model=trained_checkpoint(), diameter_A=DIAMETER_A, device="cpu")
    assert "RELION 3.1" in caplog.text and name in caplog.text
