"""``pick --watch``: micrographs arriving one by one are each picked exactly once, across a restart.

A writer thread plays the microscope: it copies micrographs into a folder one by one, one of them slowly
in small chunks over 5 s, while `hydrapick.picking.watch.watch` polls the folder. The first watcher is
stopped by RELION's abort file half-way; a second one (the restart) picks the rest.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import starfile
from click.testing import CliRunner
from test_picking import DIAMETER_A, match_fraction, trained_checkpoint, write_blob_micrographs

from hydrapick.cli import cli
from hydrapick.io import read_coordinates
from hydrapick.io.relion_pipeline import ABORT_NOW
from hydrapick.picking import pick
from hydrapick.picking.calibrate import CALIBRATION_FILE
from hydrapick.picking.watch import watch

POLL_S = 0.3
SLOW = "mic_003.mrc"


def _arrive(source: Path, target: Path, names: list[str], *, gap_s: float, abort_after: str | None = None,
            job: Path | None = None) -> None:
    """Copy ``names`` into ``target`` one by one; SLOW in 50 chunks over 5 s; abort after ``abort_after``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = (source / name).read_bytes()
        if name == SLOW:
            chunk = len(data) // 50 + 1
            with open(target / name, "wb") as f:
                for start in range(0, len(data), chunk):
                    f.write(data[start:start + chunk])
                    f.flush()
                    time.sleep(0.1)
        else:
            (target / name).write_bytes(data)
        if name == abort_after and job is not None:
            # Abort once the watcher has picked something (its first pick waits for the scale to be
            # measured on three micrographs, seconds on a busy machine), and has had time to see this one.
            deadline = time.monotonic() + 120
            while not any((job / "Movies").glob("*_autopick.star")) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            time.sleep(3 * POLL_S)
            job.mkdir(parents=True, exist_ok=True)
            (job / ABORT_NOW).write_text("")
        time.sleep(gap_s)


def test_watch_picks_each_arriving_micrograph_once_across_a_restart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 10, particles=4)
    names = [f"mic_{i:03d}.mrc" for i in range(10)]
    job = Path("External/job007")
    picked: Counter[str] = Counter()
    failures: list[str] = []

    def seen(event) -> None:
        if event.name is not None:
            picked[event.name] += 1
        if event.error is not None:
            failures.append(event.error)

    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=POLL_S, progress=seen)
    writer = threading.Thread(target=_arrive, args=(Path("source"), Path("Movies"), names[:6]),
                              kwargs=dict(gap_s=0.2, abort_after=names[5], job=job))
    writer.start()
    first = watch("Movies", job, timeout_s=30, **kwargs)
    writer.join()
    assert first.stopped == "abort"
    assert 0 < first.done <= 6
    # The restart: RELION (or the user) removes the abort file; the rest arrive while the new watcher runs.
    (job / ABORT_NOW).unlink()
    writer = threading.Thread(target=_arrive, args=(Path("source"), Path("Movies"), names[6:]),
                              kwargs=dict(gap_s=0.2))
    writer.start()
    second = watch("Movies", job, timeout_s=4 * POLL_S + 1.0, **kwargs)
    writer.join()
    assert second.stopped == "timeout"
    assert not failures and not first.failures and not second.failures
    assert second.done == 10 and second.skipped == first.done
    assert {Path(n).name: c for n, c in picked.items()} == {n: 1 for n in names}
    # The index lists each micrograph once, and the slow one was picked whole: as a plain run picks it.
    index = starfile.read(job / "autopick.star")
    assert sorted(Path(m).name for m in index["rlnMicrographName"]) == names
    watched = read_coordinates(job, "relion")
    # At the scale the watch measured on its first micrographs (a plain run would measure on its own).
    reference = pick(["source/*.mrc"], "reference", model=trained_checkpoint(), diameter_A=DIAMETER_A,
                     calibration=job / CALIBRATION_FILE).picks
    assert len(watched) == len(reference) == second.picks > 0
    slow_w = watched[np.array([m.endswith(SLOW) for m in watched.micrograph])]
    slow_r = reference[np.array([m.endswith(SLOW) for m in reference.micrograph])]
    np.testing.assert_allclose(np.c_[slow_w.x, slow_w.y], np.c_[slow_r.x, slow_r.y], atol=0.01)
    rows = starfile.read(job / "Movies" / "mic_003_autopick.star")
    assert "rlnAutopickFigureOfMerit" in rows.columns and len(rows) == len(slow_r)


def test_watch_times_out_on_an_empty_folder_and_checks_its_options(tmp_path):
    started = time.monotonic()
    report = watch(tmp_path / "nothing_yet", tmp_path / "job", model=trained_checkpoint(),
                   diameter_A=DIAMETER_A, poll_s=0.05, timeout_s=0.3)
    assert report.stopped == "timeout" and report.done == 0
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="job folder"):
        watch(tmp_path, tmp_path / "p.star", model=trained_checkpoint(), diameter_A=DIAMETER_A)


def test_watch_picks_at_several_scales_as_pick_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 2, particles=4, seed=31)
    options = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, scales="0.9,1,1.1")
    report = watch("Movies", "AutoPick/job005", poll_s=0.05, timeout_s=0.5, **options)
    assert report.done == 2 and not report.failures
    direct = pick(["Movies/*.mrc"], "direct.star", **options)
    watched = read_coordinates("AutoPick/job005", "relion")
    assert len(watched) == len(direct.picks) > 0
    np.testing.assert_allclose(np.sort(watched.score), np.sort(direct.picks.score), atol=1e-5)


def test_watch_command_prints_a_live_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 2, particles=4)
    result = CliRunner().invoke(cli, ["pick", "Movies", "-o", "AutoPick/job003", "--watch",
                                      "--poll-interval", "0.05", "--watch-timeout", "0.5",
                                      "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A)])
    assert result.exit_code == 0, result.output
    assert "Movies/mic_001.mrc:" in result.output and "picks/micrograph" in result.output
    assert "stopped (nothing new for 0.5 s): 2 micrographs" in result.output
    bad = CliRunner().invoke(cli, ["pick", "a", "b", "-o", "job", "--watch", "--diameter", "72"])
    assert bad.exit_code != 0 and "one folder" in bad.output


def test_watch_adapts_once_and_a_restart_reuses_the_adapted_head(tmp_path):
    from hydrapick.config import AdaptConfig

    write_blob_micrographs(tmp_path / "Movies", 4, pixel_size_A=2.0, particles=6, seed=11)
    job = tmp_path / "job"
    fast = AdaptConfig(micrographs=4, rounds=1, steps=20, batch_size=4, crop_px=96)
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=0.05, max_polls=3, adapt=fast)
    first = watch(tmp_path / "Movies", job, **kwargs)
    assert first.done == 4 and first.adaptation is not None
    assert len(first.adaptation["micrographs"]) == 4
    assert first.adaptation["kept"], first.adaptation["reason"]
    assert (job / "adapted.pt").exists()
    # A restart finds the adapted model and picks with it instead of adapting again.
    (tmp_path / "Movies" / "mic_000.mrc").rename(tmp_path / "Movies" / "mic_new.mrc")
    second = watch(tmp_path / "Movies", job, **kwargs)
    assert second.adaptation is None and second.done == 4


# --- a facility's session, one poll at a time (issue 36) -------------------------------------------------
# `watch` sleeps between polls through its module's `time`; the tests replace that clock so each pause
# plays the next step of the session (a copy, a rename, a replacement) and advances the clock by the poll
# interval: the session is the same at every run, and takes no wall time.


class _Microscope:
    """A fake clock for `hydrapick.picking.watch`: the i-th pause between polls runs ``steps[i]``."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.now = 0.0
        self.polls = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.polls < len(self.steps) and self.steps[self.polls] is not None:
            self.steps[self.polls]()
        self.polls += 1
        self.now += seconds


def _session(monkeypatch, steps) -> _Microscope:
    import hydrapick.picking.watch as watch_module

    scope = _Microscope(steps)
    monkeypatch.setattr(watch_module, "time", scope)
    return scope


def _copy(source: Path, target: Path):
    def step() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return step


def _events():
    """A progress callback and the names it saw picked (a Counter) and the errors it saw."""
    picked: Counter[str] = Counter()
    errors: list[str] = []

    def seen(event) -> None:
        if event.name is not None and event.n_picks is not None:
            picked[Path(event.name).name] += 1
        if event.error is not None:
            errors.append(event.error)
    return seen, picked, errors


TINY_ADAPT = dict(micrographs=4, rounds=1, steps=20, batch_size=4, crop_px=96)


def test_watch_adapt_waits_for_its_micrographs_when_they_arrive_slower_than_the_polls(tmp_path, monkeypatch):
    from hydrapick.config import AdaptConfig

    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 4, particles=6, seed=11)
    names = [f"mic_{i:03d}.mrc" for i in range(4)]
    steps = []
    for name in names:  # one micrograph every third poll: each arrival is followed by idle polls
        steps += [_copy(Path("source") / name, Path("Movies") / name), None, None]
    _session(monkeypatch, steps)
    seen, picked, errors = _events()
    report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                   timeout_s=5.0, progress=seen, adapt=AdaptConfig(**TINY_ADAPT))
    info = report.adaptation
    assert info is not None and len(info["micrographs"]) == 4 and len(info["held_out"]) == 1
    assert info["kept"], info["reason"]
    assert report.done == 4 and not errors and picked == {n: 1 for n in names}
    # Every micrograph was picked with the adapted head: as a plain run with the saved model picks them at
    # the diameter the session measured, which the head records (a new calibration with the adapted head
    # may settle elsewhere).
    measured = json.loads(Path("job/scale_calibration.json").read_text())["diameter_A"]
    plain = pick(["source/*.mrc"], None, model="job/adapted.pt", head="adapted", calibrate=False)
    assert plain.calibration.diameter_A == pytest.approx(measured)
    watched = read_coordinates("job", "relion")
    assert len(watched) == len(plain.picks) > 0
    np.testing.assert_allclose(np.sort(watched.score), np.sort(plain.picks.score), atol=1e-5)


def test_watch_adapt_does_not_count_a_stalled_copy_among_its_micrographs(tmp_path, monkeypatch):
    from hydrapick.config import AdaptConfig

    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 4, particles=6, seed=11)
    Path("Movies").mkdir()
    for name in ("mic_000.mrc", "mic_001.mrc", "mic_002.mrc"):
        _copy(Path("source") / name, Path("Movies") / name)()
    whole = Path("source/mic_003.mrc").read_bytes()
    Path("Movies/mic_003.mrc").write_bytes(whole[:len(whole) // 3])  # stalled for several polls
    _session(monkeypatch, [None, None, None, _copy(Path("source/mic_003.mrc"), Path("Movies/mic_003.mrc"))])
    seen, picked, errors = _events()
    report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                   timeout_s=4.0, progress=seen, adapt=AdaptConfig(**TINY_ADAPT))
    # The truncated file was reported, not learnt from (nor a crash); adaptation waited for it to be whole.
    assert len(errors) == 1 and "truncated" in errors[0]
    assert len(report.adaptation["micrographs"]) == 4 and not report.failures
    assert report.done == 4 and picked == {f"mic_00{i}.mrc": 1 for i in range(4)}


def test_watch_adapt_with_too_few_micrographs_keeps_the_generic_head_and_says_so(tmp_path, monkeypatch):
    from hydrapick.config import AdaptConfig

    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 2, particles=6, seed=11)
    _session(monkeypatch, [])
    report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                   timeout_s=3.0, adapt=AdaptConfig(**TINY_ADAPT))
    info = report.adaptation
    # The session ended with 2 micrographs of the 4 asked for: too few for a held-out self-check.
    assert report.stopped == "timeout" and report.done == 2
    assert info is not None and not info["kept"] and info["held_out"] == []
    assert "too few" in info["reason"] and "on held-out" not in info["reason"]
    assert not Path("job/adapted.pt").exists()
    plain = pick(["Movies/*.mrc"], None, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    assert len(read_coordinates("job", "relion")) == len(plain.picks) > 0
    result = CliRunner().invoke(cli, ["pick", "Movies", "-o", "job2", "--watch", "--poll-interval", "1",
                                      "--watch-timeout", "3", "--model", trained_checkpoint(), "--diameter",
                                      str(DIAMETER_A), "--adapt", "--adapt-micrographs", "4"])
    assert result.exit_code == 0, result.output
    assert "nothing is picked until 4 micrographs have arrived" in result.output
    assert "generic head kept: 2 micrographs too few for the self-check" in " ".join(result.output.split())


def test_a_restart_after_the_generic_head_was_kept_picks_on_with_it_instead_of_adapting_again(tmp_path,
                                                                                                 monkeypatch):
    from hydrapick.config import AdaptConfig

    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 4, particles=6, seed=11)
    Path("Movies").mkdir()
    for name in ("mic_000.mrc", "mic_001.mrc"):
        _copy(Path("source") / name, Path("Movies") / name)()
    _session(monkeypatch, [])
    kwargs = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0, timeout_s=3.0,
                  adapt=AdaptConfig(**TINY_ADAPT))
    first = watch("Movies", "job", **kwargs)
    assert not first.adaptation["kept"] and not Path("job/adapted.pt").exists()
    # Two more arrive while no watcher runs; the same command restarts. Adapting now (4 micrographs) would
    # pick with another head than the 2 already picked, and the continuation would be refused.
    for name in ("mic_002.mrc", "mic_003.mrc"):
        _copy(Path("source") / name, Path("Movies") / name)()
    _session(monkeypatch, [])
    seen, picked, errors = _events()
    second = watch("Movies", "job", progress=seen, **kwargs)
    assert second.adaptation is None and second.done == 4 and not errors
    assert picked == {"mic_002.mrc": 1, "mic_003.mrc": 1}
    plain = pick(["Movies/*.mrc"], None, model=trained_checkpoint(), diameter_A=DIAMETER_A,
                 calibration=f"job/{CALIBRATION_FILE}")
    watched = read_coordinates("job", "relion")
    assert len(watched) == len(plain.picks) > 0
    np.testing.assert_allclose(np.sort(watched.score), np.sort(plain.picks.score), atol=1e-5)
    # The command does not announce a wait for micrographs to adapt on.
    _session(monkeypatch, [])
    result = CliRunner().invoke(cli, ["pick", "Movies", "-o", "job", "--watch", "--poll-interval", "1",
                                      "--watch-timeout", "2", "--model", trained_checkpoint(), "--diameter",
                                      str(DIAMETER_A), "--adapt", "--adapt-micrographs", "4"])
    assert result.exit_code == 0, result.output
    assert "nothing is picked until" not in result.output
    assert "4 micrographs in job (0 picked now" in " ".join(result.output.split())


def test_watch_refuses_an_adapted_model_that_was_never_checked(tmp_path):
    from hydrapick.checkpoint import load_checkpoint, save_checkpoint
    from hydrapick.config import AdaptConfig

    model, meta = load_checkpoint(trained_checkpoint())
    model.add_head("adapted")
    # What hydrapick wrote before the fix: adapted on one micrograph, "checked" on that micrograph.
    meta = {**meta, "thresholds": {**meta["thresholds"], "adapted": 0.6},
            "adaptation": {"micrographs": ["Movies/mic_000.mrc"], "held_out": [], "kept": True}}
    save_checkpoint(tmp_path / "job" / "adapted.pt", model, meta)
    with pytest.raises(ValueError, match="held-out"):
        watch(tmp_path / "Movies", tmp_path / "job", model=trained_checkpoint(), diameter_A=DIAMETER_A,
              poll_s=0.05, max_polls=1, adapt=AdaptConfig(**TINY_ADAPT))


def test_watch_picks_again_a_micrograph_that_changed_after_it_was_picked(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    old = write_blob_micrographs(Path("Movies"), 3, particles=4, seed=3)["Movies/mic_001.mrc"]
    new = write_blob_micrographs(Path("other"), 3, particles=6, seed=4)["other/mic_001.mrc"]
    target = Path("Movies/mic_001.mrc")
    replaced = []

    def replace() -> None:  # once it is picked, a re-transfer overwrites it in place with other content
        if replaced or not Path("job/Movies/mic_001_autopick.star").is_file():
            return
        mtime = target.stat().st_mtime_ns
        target.write_bytes(Path("other/mic_001.mrc").read_bytes())
        os.utime(target, ns=(mtime + 10**9, mtime + 10**9))
        replaced.append(True)

    _session(monkeypatch, [replace] * 20)
    seen, picked, errors = _events()
    lines = []

    def tell(event) -> None:
        seen(event)
        if event.name is not None:
            lines.append((Path(event.name).name, event.again, event.done, event.picks))

    with caplog.at_level("WARNING", logger="hydrapick.picking.watch"):
        report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                       timeout_s=4.0, progress=tell)
    assert replaced and "Movies/mic_001.mrc changed after it was picked" in caplog.text
    assert picked == {"mic_000.mrc": 1, "mic_001.mrc": 2, "mic_002.mrc": 1} and not errors
    assert report.repicked == ["Movies/mic_001.mrc"] and report.done == 3 and report.picked == 3
    # The line of the picking again counts the folder as it is: 3 micrographs, and only the new picks.
    (name, again, done, picks), = [line for line in lines if line[1]]
    assert name == "mic_001.mrc" and done == 3 and picks == report.picks
    # Its picks are those of the new content (not the old), and the index lists it once.
    picks = read_coordinates("job/Movies/mic_001_autopick.star", "star")
    tolerance = 0.15 * DIAMETER_A / 2.0
    recall, precision = match_fraction(picks, new, tolerance)
    assert recall >= 0.8 and precision >= 0.8, (recall, precision)
    assert match_fraction(picks, old, tolerance)[0] < 0.5
    index = starfile.read("job/autopick.star")
    assert sorted(index["rlnMicrographName"]) == [f"Movies/mic_00{i}.mrc" for i in range(3)]


def test_a_restarted_watch_picks_again_a_micrograph_replaced_while_no_watcher_ran(tmp_path, monkeypatch,
                                                                                   caplog):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 3, particles=4, seed=3)
    new = write_blob_micrographs(Path("other"), 3, particles=6, seed=4)["other/mic_001.mrc"]
    options = dict(model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0, timeout_s=3.0)
    _session(monkeypatch, [])
    first = watch("Movies", "job", **options)
    assert first.done == 3
    # Replaced between the sessions: newer than its picks file.
    target = Path("Movies/mic_001.mrc")
    target.write_bytes(Path("other/mic_001.mrc").read_bytes())
    later = Path("job/Movies/mic_001_autopick.star").stat().st_mtime_ns + 10**9
    os.utime(target, ns=(later, later))
    # And mic_002, which this session found picked, is replaced during it.
    other = Path("Movies/mic_002.mrc")

    def replace() -> None:
        st = other.stat()
        other.write_bytes(Path("other/mic_002.mrc").read_bytes())
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    _session(monkeypatch, [None, None, replace])
    seen, picked, errors = _events()
    with caplog.at_level("WARNING", logger="hydrapick.picking.watch"):
        second = watch("Movies", "job", progress=seen, **options)
    assert "Movies/mic_001.mrc was modified after an earlier session picked it" in caplog.text
    assert picked == {"mic_001.mrc": 1, "mic_002.mrc": 1} and not errors
    assert second.repicked == ["Movies/mic_001.mrc", "Movies/mic_002.mrc"]
    # The summary's counts add up: 2 picked now, 1 from the earlier session, 3 in the folder.
    assert (second.picked, second.skipped, second.done) == (2, 1, 3)
    recall, precision = match_fraction(read_coordinates("job/Movies/mic_001_autopick.star", "star"), new,
                                       0.15 * DIAMETER_A / 2.0)
    assert recall >= 0.8 and precision >= 0.8, (recall, precision)


def test_watch_holds_its_lock_for_the_whole_session(tmp_path, monkeypatch):
    from hydrapick.io.lock import OutputLockedError

    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("Movies"), 1, particles=4)
    raised: list[BaseException | None] = []

    def second_run() -> None:  # another run into the same job folder while the watcher waits
        def run() -> None:
            try:
                pick(["Movies/mic_000.mrc"], "job", model=trained_checkpoint(), diameter_A=DIAMETER_A)
                raised.append(None)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                raised.append(exc)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    _session(monkeypatch, [None, None, second_run])
    report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                   timeout_s=5.0)
    assert len(raised) == 1 and isinstance(raised[0], OutputLockedError), raised
    assert report.done == 1 and not report.failures
    assert not list(Path("job").glob(".*.lock"))  # released at the end


def test_watch_decides_failures_from_the_final_state_and_retries_a_fixed_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 2, particles=4)
    whole = Path("source/mic_000.mrc").read_bytes()
    Path("Movies").mkdir()
    Path("Movies/mic_000.mrc").write_bytes(whole[:len(whole) // 2])  # a copy that stalled half-way
    broken = Path("Movies/mic_001.mrc")
    good = Path("source/mic_001.mrc").read_bytes()
    broken.write_bytes(bytes(1024) + good[1024:])  # a damaged header: unreadable

    def fix() -> None:
        Path("Movies/mic_000.mrc").write_bytes(whole)  # the copy completes
        # The damaged file is copied again with its timestamp kept (cp -p, rsync -a): same size and mtime.
        st = broken.stat()
        broken.write_bytes(good)
        os.utime(broken, ns=(st.st_atime_ns, st.st_mtime_ns))

    _session(monkeypatch, [None, None, fix])
    result = CliRunner().invoke(cli, ["pick", "Movies", "-o", "job", "--watch", "--poll-interval", "1",
                                      "--watch-timeout", "4", "--model", trained_checkpoint(),
                                      "--diameter", str(DIAMETER_A)])
    assert "failed" in result.output  # each was reported when it failed ...
    assert result.exit_code == 0, result.output  # ... but both were picked in the end
    assert "2 micrographs in job" in result.output and "0 failed" in result.output
    index = starfile.read("job/autopick.star")
    assert sorted(index["rlnMicrographName"]) == ["Movies/mic_000.mrc", "Movies/mic_001.mrc"]


def test_watch_follows_a_relion_star_list_and_refuses_a_single_file(tmp_path, monkeypatch):
    from hydrapick.io import write_micrograph

    monkeypatch.chdir(tmp_path)
    truth = write_blob_micrographs(Path("MotionCorr/job002/Movies"), 2, pixel_size_A=2.0, particles=4)
    for path in truth:  # headers that say 1 A: the STAR file's optics group (2 A) must win
        from hydrapick.io import read_micrograph

        write_micrograph(path, read_micrograph(path).data, 1.0)
    star = Path("CtfFind/job003/micrographs_ctf.star")

    def listing(*names: str):
        def step() -> None:
            star.parent.mkdir(parents=True, exist_ok=True)
            star.write_text(
                "\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
                "_rlnMicrographPixelSize #3\nopticsGroup1 1 2.0\n\ndata_micrographs\n\nloop_\n"
                "_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
                + "".join(f"MotionCorr/job002/Movies/{n} 1\n" for n in names))
        return step

    _session(monkeypatch, [listing("mic_000.mrc"), None, None, listing("mic_000.mrc", "mic_001.mrc"), None,
                           None, listing("mic_000.mrc", "mic_001.mrc", "mic_404.mrc")])
    seen, picked, errors = _events()
    report = watch(str(star), "AutoPick/job004", model=trained_checkpoint(), diameter_A=DIAMETER_A,
                   poll_s=1.0, timeout_s=4.0, progress=seen)
    assert report.done == 2 and not errors and picked == {"mic_000.mrc": 1, "mic_001.mrc": 1}
    # A listed micrograph that never appeared is reported at the end, not left out without a word.
    assert [(Path(p).name, "does not exist" in r) for p, r in report.failures] == [("mic_404.mrc", True)]
    listing("mic_000.mrc", "mic_001.mrc")()
    plain = pick([str(star)], None, model=trained_checkpoint(), diameter_A=DIAMETER_A)
    watched = read_coordinates("AutoPick/job004", "relion")
    assert len(watched) == len(plain.picks) > 0
    np.testing.assert_allclose(np.sort(watched.score), np.sort(plain.picks.score), atol=1e-5)
    # One micrograph is not something to watch: refused at once, with what to do instead.
    started = time.monotonic()
    with pytest.raises(ValueError, match="without --watch"):
        watch("MotionCorr/job002/Movies/mic_000.mrc", "job", model=trained_checkpoint(),
              diameter_A=DIAMETER_A, poll_s=1.0, timeout_s=3600)
    assert time.monotonic() - started < 1  # the fake clock: no poll happened
    result = CliRunner().invoke(cli, ["pick", "MotionCorr/job002/Movies/mic_000.mrc", "-o", "job", "--watch",
                                      "--model", trained_checkpoint(), "--diameter", str(DIAMETER_A)])
    assert result.exit_code == 2 and "without --watch" in result.output
    assert "watching" not in result.output


def test_folder_watch_skips_dotfiles_and_reports_an_empty_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_blob_micrographs(Path("source"), 2, particles=4)
    write_blob_micrographs(Path("Movies"), 1, particles=4)
    hidden = Path("Movies/.mic_001.mrc")  # rsync's temporary name, renamed when the copy is complete
    steps = [_copy(Path("source/mic_001.mrc"), hidden), None, None,
             lambda: hidden.rename("Movies/mic_001.mrc"), None, lambda: Path("Movies/mic_002.mrc").touch()]
    _session(monkeypatch, steps)
    seen, picked, errors = _events()
    report = watch("Movies", "job", model=trained_checkpoint(), diameter_A=DIAMETER_A, poll_s=1.0,
                   timeout_s=4.0, progress=seen)
    assert picked == {"mic_000.mrc": 1, "mic_001.mrc": 1}
    index = starfile.read("job/autopick.star")
    assert sorted(index["rlnMicrographName"]) == ["Movies/mic_000.mrc", "Movies/mic_001.mrc"]
    # The zero-byte file is reported (it stayed empty to the end), not silently left out.
    assert [Path(p).name for p, _ in report.failures] == ["mic_002.mrc"]
    assert "empty" in report.failures[0][1] and errors
