"""Streaming at facility scale: 1,000 micrographs through one ``hydrapick.pick`` call, memory and throughput.

Run from the repository root::

    python benchmarks/streaming_memory.py                       # 1,000 x 1024 px micrographs, CPU
    python benchmarks/streaming_memory.py --count 1000 --size 4096 --device cuda

``--distinct`` float32 MRC micrographs of noise with dark blobs are written to ``--work`` and hard-linked
under ``--count`` different names (distinct paths, so `hydrapick.pick` reads and picks every one; the disk
holds only the distinct files). One `hydrapick.pick` call picks them all and writes one STAR file, as a
facility's process would; its progress callback records the resident set size (VmRSS, the current one,
not the peak) and the clock after every micrograph. Printed: RSS after 100 micrographs and at the end
(the test is that they agree within 10%), and throughput for each block of 100.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def rss_MB() -> float:
    """Current resident set size of this process (MB), from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--distinct", type=int, default=20, help="different micrographs written")
    p.add_argument("--size", type=int, default=1024, help="micrograph side in pixels")
    p.add_argument("--apix", type=float, default=1.06)
    p.add_argument("--diameter", type=float, default=150.0, help="particle diameter in A")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", type=Path, default=ROOT / "cache" / "streaming")
    args = p.parse_args()

    from speed_matrix import write_micrographs

    import hydrapick

    base = write_micrographs(args.work / f"distinct_{args.size}", (args.size, args.size), args.distinct,
                             args.apix, args.diameter)
    links = args.work / f"links_{args.size}"
    links.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(args.count):
        link = links / f"mic_{i:05d}.mrc"
        if not link.exists():
            os.link(base[i % len(base)], link)
        paths.append(str(link))

    marks: list[tuple[int, float, float]] = []

    def progress(state) -> None:
        if state.result is not None:
            marks.append((state.done, time.perf_counter(), rss_MB()))

    started = time.perf_counter()
    report = hydrapick.pick(paths, args.work / "picks.star", diameter_A=args.diameter, pixel_size_A=args.apix,
                            device=args.device, progress=progress)
    total = time.perf_counter() - started
    scale = 64.0 / (args.diameter / args.apix)
    print(f"{args.count} micrographs of {args.size} x {args.size} px ({args.distinct} distinct files), "
          f"{args.apix} A/px, {args.diameter:g} A particles (model scale {round(args.size * scale)} px), "
          f"device {args.device}; {report.n_failed} failed, {len(report.picks)} picks, {total:.0f} s in all")
    print(f"{'micrographs':>12s} {'RSS MB':>8s} {'mic/s over the last block':>26s}")
    step = max(1, args.count // 10)
    prev_t = started
    for done, t, rss in marks:
        if done % step == 0:
            print(f"{done:12d} {rss:8.0f} {step / (t - prev_t):26.2f}")
            prev_t = t
    at = {done: rss for done, _, rss in marks}
    first = at.get(min(100, args.count))
    last = marks[-1][2]
    if first:
        print(f"RSS after {min(100, args.count)}: {first:.0f} MB; after {marks[-1][0]}: {last:.0f} MB; "
              f"change {100 * (last - first) / first:+.1f}% (target: within 10%)")


if __name__ == "__main__":
    main()
