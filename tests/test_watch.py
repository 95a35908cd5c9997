"""``pick --watch``: micrographs arriving one by one are each picked exactly once, across a restart.

A writer thread plays the microscope: it copies micrographs into a folder one by one, one of them slowly
in small chunks over 5 s, while `hydrapick.picking.watch.watch` polls the folder. The first watcher is
stopped by RELION's abort file half-way; a second one (the restart) picks the rest.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import starfile
from click.testing import CliRunner
from test_picking import DIAMETER_A, trained_checkpoint, write_blob_micrographs

from hydrapick.cli import cli
from hydrapick.io import read_coordinates
from hydrapick.io.relion_pipeline import ABORT_NOW
from hydrapick.picking import pick
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
            time.sleep(3 * POLL_S)  # let the watcher pick it first
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
    reference = pick(["source/*.mrc"], "reference", model=trained_checkpoint(), diameter_A=DIAMETER_A).picks
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
