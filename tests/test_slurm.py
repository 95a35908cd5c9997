"""``hydrapick pick`` run by a real SLURM as a 4-task job array (``sbatch --array=0-3``).

``benchmarks/slurm_local.sh`` starts a one-node cluster (munged, slurmctld, slurmd; no systemd or cgroups)
and ``benchmarks/slurm_array.sh`` submits the array, runs the merge run (``--skip-existing``) and a single
run; this test checks their outputs and prints one ``REAL RUNNER`` line, which ``.ci/run`` shows. It is
skipped, saying why, without root or Debian's ``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs
them).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import starfile
from test_picking import DIAMETER_A, THRESHOLD, write_blob_micrographs

from hydrapick.io import read_coordinates

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
N_MICS, N_TASKS = 8, 4


def _why_not() -> str | None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (Debian packages 'slurm-wlm' and 'munge'; .ci/run "
                "installs them)")
    if os.geteuid() != 0:
        return "a one-node SLURM needs root here (slurmd runs the jobs)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _free_port_pair() -> int:
    """A port P with P and P + 1 free (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two free ports in a row")


@pytest.fixture()
def slurm(tmp_path_factory):
    """Environment of a one-node SLURM cluster (SLURM_CONF set); the daemons stop afterwards."""
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_LOCAL_PORT=str(_free_port_pair()))
    started = subprocess.run([str(BENCHMARKS / "slurm_local.sh"), "start", str(state)], env=env,
                             capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        env["SLURM_CONF"] = str(state / "slurm.conf")
        yield env
    finally:
        subprocess.run([str(BENCHMARKS / "slurm_local.sh"), "stop", str(state)], env=env,
                       capture_output=True, timeout=60)


def _micrographs_of(job: Path) -> list[str]:
    return [str(m) for m in starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
            ["rlnMicrographName"]]


def _summary_row(log: str, row: str) -> int:
    found = re.search(rf"^\W*{re.escape(row)}\W+(\d+)", log, re.M)
    assert found, f"no '{row}' row in:\n{log}"
    return int(found.group(1))


def test_slurm_array_shards_union_equals_one_run(slurm, tmp_path):
    mics = tmp_path / "micrographs"
    mics.mkdir()
    write_blob_micrographs(mics, N_MICS)
    work = tmp_path / "work"
    pythonpath = os.pathsep.join(p for p in (str(ROOT), slurm.get("PYTHONPATH")) if p)
    env = dict(slurm, HYDRAPICK=f"{sys.executable} -m hydrapick", PYTHON=sys.executable,
               PYTHONPATH=pythonpath, OMP_NUM_THREADS="1",
               PICK_OPTIONS=f"--threshold {THRESHOLD}")  # the bundled model's own threshold picks few blobs
    done = subprocess.run([str(BENCHMARKS / "slurm_array.sh"), str(mics), str(DIAMETER_A), str(work)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout.strip())

    # Each task picked its own shard (the array task's id of the task count) and nothing else.
    logs = [(work / f"shard_{k}.log").read_text() for k in range(N_TASKS)]
    for k, log in enumerate(logs):
        assert f"SLURM array task: shard {k}/{N_TASKS}" in log and f"shard {k}/{N_TASKS} done" in log, log
    per_shard = [_summary_row(log, "picked") for log in logs]
    # Every micrograph a shard picked is drawn in its previews (at most 3 per shard; 2 here).
    drawn = [sorted(p.stem for p in (work / f"previews/shard_{k}").glob("*.png")) for k in range(N_TASKS)]
    assert [len(d) for d in drawn] == per_shard == [N_MICS // N_TASKS] * N_TASKS
    stems = sorted(Path(m).stem for m in os.listdir(mics))
    assert drawn == [stems[k::N_TASKS] for k in range(N_TASKS)]  # every 4th, disjoint, covering all

    # The merge run picked nothing again; its index equals the single run's, with no micrograph twice.
    merge = (work / "merge.log").read_text()
    assert _summary_row(merge, "picked") == 0 and _summary_row(merge, "skipped (outputs exist)") == N_MICS
    union, single = _micrographs_of(work / "AutoPick/job001"), _micrographs_of(work / "AutoPick/job002")
    twice = [m for m, n in Counter(union).items() if n > 1]
    assert not twice and sorted(union) == sorted(single) and len(single) == N_MICS
    # And the shards' picks are the single run's, micrograph by micrograph.
    a = read_coordinates(work / "AutoPick/job001", "relion")
    b = read_coordinates(work / "AutoPick/job002", "relion")
    assert len(a) == len(b)
    for mic in single:
        mine, theirs = a[a.micrograph == mic], b[b.micrograph == mic]
        assert sorted(zip(mine.x, mine.y, strict=True)) == sorted(zip(theirs.x, theirs.y, strict=True))

    version = subprocess.run(["sbatch", "--version"], env=slurm, capture_output=True,
                             text=True).stdout.split()[-1]
    print(f"REAL RUNNER SLURM {version}: array of {N_TASKS} tasks picked {sum(per_shard)} micrographs "
          f"({','.join(map(str, per_shard))} per shard); single run {len(single)}; twice {len(twice)}; "
          f"picks {len(a)} (shards) and {len(b)} (single run)")
