"""Picking throughput: micrographs per second by micrograph size, network variant and device.

Run from the repository root::

    python benchmarks/pick_speed.py                          # CPU (and CUDA when present), light + thesis
    python benchmarks/pick_speed.py --sizes 4096 --configs light --count 8
    python benchmarks/pick_speed.py --model hydrapick/weights/generic.pt
    python benchmarks/pick_speed.py --model hydrapick/weights/generic.pt --tta   # test-time augmentation

For each size, float32 MRC micrographs are written to a temporary folder and picked with
`hydrapick.picking.pick_micrographs` exactly as ``hydrapick pick`` does: reading, preprocessing
(resampling to the model's particle size, normalisation), the network, decoding and NMS. One micrograph
is picked first to warm up (allocator, cuDNN autotuning); the timed run then picks ``--count`` others.

Micrographs are noise with dark Gaussian blobs at the particle size (a 1.34 A/px, 300 A particle by
default, as EMPIAR-10028: 4096 px micrographs are brought to 1170 px). Without ``--model`` the networks
have random weights with the output bias set to score every anchor near 0.5, so every anchor is a
candidate: decoding and NMS then cost their worst case, more than with a trained model.

Topaz (when the environment of benchmarks/topaz_setup.sh exists) runs on the same 4096 micrograph as
commands, ``topaz preprocess -s 8`` then ``topaz extract -m resnet16_u64``, and is compared with the
``hydrapick pick`` command on that micrograph; both wall times include process start-up and model loading.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOPAZ_VENV = ROOT / ".venv-topaz"


def write_micrographs(folder: Path, size: int, count: int, pixel_size_A: float, diameter_A: float,
                      seed: int = 0) -> list[Path]:
    """``count`` size x size float32 MRC files of noise with dark blobs of the particle diameter."""
    from hydrapick.io import write_micrograph

    rng = np.random.default_rng(seed)
    d = diameter_A / pixel_size_A
    yy, xx = np.mgrid[-int(2 * d):int(2 * d) + 1, -int(2 * d):int(2 * d) + 1]
    blob = (-1.5 * np.exp(-(xx ** 2 + yy ** 2) / (2 * (d / 4) ** 2))).astype(np.float32)
    r = blob.shape[0] // 2
    paths = []
    for i in range(count):
        image = rng.normal(0, 1, size=(size, size)).astype(np.float32)
        n = int(0.25 * (size / d) ** 2)  # a quarter-covered monolayer
        for x, y in rng.uniform(r, size - r - 1, size=(n, 2)).astype(int):
            image[y - r:y + r + 1, x - r:x + r + 1] += blob
        path = folder / f"mic_{size}_{i:03d}.mrc"
        write_micrograph(path, image, pixel_size_A)
        paths.append(path)
    return paths


def make_model(config_name: str, model_path: str | None):
    """(model, metadata) for a config name, or the checkpoint given."""
    import torch

    from hydrapick.config import ModelConfig
    from hydrapick.model import HydraPicker
    from hydrapick.picking import load_model

    if model_path:
        return load_model(model_path)
    torch.manual_seed(0)
    model = HydraPicker(getattr(ModelConfig, config_name)())
    with torch.no_grad():
        model.heads["generic"].output.bias[2] = 0.0  # every anchor ~0.5: worst-case decoding
    return model.eval(), {"thresholds": {"generic": 0.5}}


def time_picking(paths: list[Path], model, *, device: str, diameter_A: float, batch_size: int,
                 tta: bool = False) -> float:
    """Seconds to pick ``paths[1:]`` after warming up on ``paths[0]``."""
    from hydrapick.picking import pick_micrographs

    kwargs = dict(model=model, diameter_A=diameter_A, device=device, batch_size=batch_size, tta=tta)
    for r in pick_micrographs(paths[:1], **kwargs):
        if not r.ok:
            raise RuntimeError(r.error)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    for r in pick_micrographs(paths[1:], **kwargs):
        if not r.ok:
            raise RuntimeError(r.error)
    return time.perf_counter() - start


def run_command(command: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}): {tail}")
    return seconds


def compare_with_topaz(micrograph: Path, work: Path, *, venv: Path, pixel_size_A: float, diameter_A: float,
                       config_name: str, model_path: str | None, threads: int, scale: int = 8,
                       tta: bool = False) -> None:
    """Wall time of Topaz's commands and of ``hydrapick pick`` on one micrograph, side by side."""
    from hydrapick.checkpoint import save_checkpoint

    topaz = venv / "bin" / "topaz"
    if not topaz.exists():
        print(f"\nTopaz: skipped ({venv} not found; build it with benchmarks/topaz_setup.sh)")
        return
    if model_path is None:
        model, meta = make_model(config_name, None)
        model_path = str(save_checkpoint(work / f"{config_name}.pt", model, meta))
    radius = max(1, round(diameter_A / pixel_size_A / scale / 2))
    pre = work / "topaz_pre"
    topaz_cmds = [
        [str(topaz), "preprocess", "-s", str(scale), "-d", "-1", "-j", str(threads), "-o", str(pre),
         str(micrograph)],
        [str(topaz), "extract", "-m", "resnet16_u64", "-r", str(radius), "-x", str(scale), "-d", "-1",
         "-j", str(threads), "-o", str(work / "topaz.txt"), str(pre / micrograph.name)],
    ]
    hydra_cmd = [sys.executable, "-m", "hydrapick", "pick", str(micrograph), "--model", model_path,
                 "--diameter", f"{diameter_A:g}", "--device", "cpu", "-q", "-o", str(work / "hydrapick.star")]
    if tta:
        hydra_cmd.append("--tta")
    t_topaz = [run_command(c) for c in topaz_cmds]
    t_hydra = run_command(hydra_cmd)
    total = sum(t_topaz)
    print(f"\nSame {micrograph.name} ({pixel_size_A:g} A/px, {diameter_A:g} A particle), commands' wall time "
          "including start-up and model loading, CPU:")
    label = Path(model_path).name if model_path.endswith("generic.pt") else config_name
    label += ", --tta" if tta else ""
    print(f"  {f'topaz preprocess -s {scale} + extract (resnet16_u64)':<50}{total:6.1f} s "
          f"(preprocess {t_topaz[0]:.1f} s, extract {t_topaz[1]:.1f} s)")
    print(f"  {f'hydrapick pick ({label})':<50}{t_hydra:6.1f} s")
    print(f"  hydrapick is {total / t_hydra:.1f}x faster" if t_hydra < total
          else f"  hydrapick is {t_hydra / total:.1f}x slower")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--configs", nargs="+", default=["light", "thesis"], choices=["light", "thesis"])
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    parser.add_argument("--count", type=int, help="timed micrographs per size (default: by size and device)")
    parser.add_argument("--apix", type=float, default=1.34, help="pixel size in A (default 1.34)")
    parser.add_argument("--diameter", type=float, default=300.0, help="particle diameter in A (default 300)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", help="checkpoint to time instead of random-weight configs")
    parser.add_argument("--topaz-venv", type=Path, default=TOPAZ_VENV)
    parser.add_argument("--no-topaz", action="store_true")
    parser.add_argument("--tta", action="store_true", help="pick with test-time augmentation (8 copies)")
    args = parser.parse_args(argv)

    import torch

    from hydrapick.device import cpu_has_native_bf16, cpu_threads

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    configs = ["model"] if args.model else args.configs
    threads = cpu_threads()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"hydrapick pick speed: torch {torch.__version__}, {threads} CPU thread(s){load}, "
          f"CPU bfloat16 autocast: {'yes' if cpu_has_native_bf16() else 'no'}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"micrographs: float32 MRC, {args.apix:g} A/px, {args.diameter:g} A particles, read from a "
          f"temporary folder (page cache){'; test-time augmentation (--tta)' if args.tta else ''}\n")
    header = (f"{'device':<8}{'config':<8}{'size':>6}{'model px':>10}{'count':>7}{'seconds':>9}{'mic/s':>8}"
              f"{'s/mic':>8}")
    print(header)
    print("-" * len(header))
    work = Path(tempfile.mkdtemp(prefix="hydrapick-speed-"))
    try:
        biggest = None
        for size in args.sizes:
            for device in devices:
                for name in configs:
                    model, meta = make_model(name, args.model)
                    model_px = round(size * model.config.particle_diameter_px / (args.diameter / args.apix))
                    count = args.count or _default_count(size, device, name)
                    paths = write_micrographs(work, size, count + 1, args.apix, args.diameter)
                    seconds = time_picking(paths, (model, meta), device=device, diameter_A=args.diameter,
                                           batch_size=args.batch_size, tta=args.tta)
                    print(f"{device:<8}{name:<8}{size:>6}{model_px:>10}{count:>7}{seconds:>9.2f}"
                          f"{count / seconds:>8.2f}{seconds / count:>8.2f}", flush=True)
                    if size == max(args.sizes):
                        biggest = paths[0]
                    for p in paths[1:]:
                        p.unlink()
        if not args.no_topaz and biggest is not None:
            compare_with_topaz(biggest, work, venv=args.topaz_venv, pixel_size_A=args.apix,
                               diameter_A=args.diameter, config_name="light" if args.model else configs[0],
                               model_path=args.model, threads=threads, tta=args.tta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _default_count(size: int, device: str, config: str) -> int:
    if device.startswith("cuda"):
        return {1024: 64, 2048: 48}.get(size, 32)
    per = {1024: 8, 2048: 4}.get(size, 2)
    return per if config == "light" else max(1, per // 2)


if __name__ == "__main__":
    main()
