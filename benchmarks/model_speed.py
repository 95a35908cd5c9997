"""Cost of the HydraPicker network variants: parameters, FLOPs, forward time, memory, training step.

Run from the repository root::

    python benchmarks/model_speed.py                      # CPU, 2 threads, every variant
    python benchmarks/model_speed.py --device cuda        # GPU timings and torch.cuda peak memory
    python benchmarks/model_speed.py --variants light --sizes 512

Each measurement runs in a fresh subprocess so that the peak memory of one does not hide another's:
on CPU the figure is the process's peak resident memory during the measured calls (``VmHWM``, reset
just before them) minus the resident memory just before them (model, input and optimizer state already
allocated); on CUDA it is ``torch.cuda.max_memory_allocated`` minus the memory allocated before them.
Times are the fastest of the repeats: on a shared machine the slower ones measure the neighbours.

FLOPs are counted from the convolutions the network actually runs (forward hooks: output elements x
input channels x kernel area, one multiply-add = 2 FLOPs); normalisation, ReLU and additions are
left out (< 1 %). Dividing by the measured time gives the sustained GFLOP/s, to compare with what the
hardware can do.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    # name: ModelConfig keyword arguments
    "thesis": {},
    "strided": {"stem_stride": 2},
    "light": {"preset": "light"},
    "light-s4": {"preset": "light", "stem_stride": 4},
}
TRAIN_BATCH = 4
TRAIN_SIZE = 368  # thesis crop size


def model_config(name: str):
    from hydrapick.config import ModelConfig

    spec = dict(VARIANTS[name])
    preset = getattr(ModelConfig, spec.pop("preset", "thesis"))
    return preset(**spec)


def conv_macs(model, height: int, width: int) -> int:
    """Multiply-accumulates of all convolutions for one (1, 1, height, width) input (body + one head)."""
    import torch
    from torch import nn

    total = 0

    def hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() // output.shape[0] * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where not possible.

    Needed because a freshly started process can inherit the peak of the process that spawned it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(variant: str, mode: str, size: int, device_name: str, threads: int, repeats: int,
           amp: bool) -> dict:
    """One measurement in this process: ``mode`` is "forward" or "train"."""
    import torch

    from hydrapick.model import HydraPicker
    from hydrapick.model.anchors import anchor_centres, build_targets
    from hydrapick.model.losses import bias_loss, detection_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    config = model_config(variant)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    autocast = torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=amp)
    if mode == "forward":
        model = HydraPicker(config).to(device).eval()
        x = torch.randn(1, 1, size, size, device=device)

        def step() -> None:
            with torch.no_grad(), autocast:
                model(x)
    else:
        model = HydraPicker(config, ["a", "b"]).to(device).train()
        x = torch.randn(TRAIN_BATCH, 1, size, size, device=device)
        anchors = anchor_centres(size, size, config, device=device)
        g = torch.Generator().manual_seed(0)
        centres = [(torch.rand((20, 2), generator=g) * size).to(device) for _ in range(TRAIN_BATCH)]
        labels, offsets, positive = build_targets(anchors, centres, config)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(enabled=amp and cuda)

        def step() -> None:
            with autocast:
                out = model(x, head="a")
            parts = detection_loss(out.float(), labels, offsets, positive)
            loss = parts["loss"] + bias_loss(model)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()

    step()  # warm-up: allocator, kernels, optimizer state
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        before = _rss_bytes()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if cuda else _peak_rss_bytes()) - before
    return {"seconds": min(times), "peak_bytes": max(0, peak)}


def run_worker(args: argparse.Namespace, variant: str, mode: str, size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, mode, str(size), "--device", args.device,
           "--threads", str(args.threads), "--repeats", str(args.repeats)] + (["--amp"] if args.amp else [])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"benchmark worker {variant}/{mode}/{size} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="network variants to measure (none: only the post-processing timings)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after a warm-up (fastest kept)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    parser.add_argument("--amp", action="store_true", help="float16 autocast on CUDA (bfloat16 on CPU)")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        variant, mode, size = args.worker
        print(json.dumps(worker(variant, mode, int(size), args.device, args.threads, args.repeats, args.amp)))
        return

    import torch

    from hydrapick.model import HydraPicker

    mib = 2**20
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"CPU, {args.threads} threads")
    print(f"# hydrapick model cost on {where}; torch {torch.__version__}; best of {args.repeats} "
          f"after a warm-up{'; autocast' if args.amp else ''}; load average {os.getloadavg()[0]:.1f}")
    header = ["variant", "params body", "params/head", "MFLOP/px"]
    for s in args.sizes:
        header += [f"fwd {s}² s", f"GFLOP/s {s}²", f"mem {s}² MiB"]
    if not args.no_train:
        header += [f"train step {TRAIN_BATCH}x{TRAIN_SIZE}² s", "train mem MiB"]
    rows = []
    for variant in args.variants:
        config = model_config(variant)
        model = HydraPicker(config)
        body = sum(p.numel() for p in model.body.parameters())
        head = sum(p.numel() for p in model.heads["generic"].parameters())
        macs = {s: conv_macs(model, s, s) for s in args.sizes}
        flops_px = 2 * macs[max(args.sizes)] / max(args.sizes) ** 2
        row = [variant, f"{body / 1e6:.2f} M", f"{head / 1e6:.2f} M", f"{flops_px / 1e6:.3f}"]
        for s in args.sizes:
            r = run_worker(args, variant, "forward", s)
            row += [f"{r['seconds']:.2f}", f"{2 * macs[s] / r['seconds'] / 1e9:.1f}",
                    f"{r['peak_bytes'] / mib:.0f}"]
        if not args.no_train:
            r = run_worker(args, variant, "train", TRAIN_SIZE)
            row += [f"{r['seconds']:.2f}", f"{r['peak_bytes'] / mib:.0f}"]
        rows.append(row)
        print(f"# {variant}: {config}", flush=True)
    if rows:
        print_table(header, rows)
    postprocess(args.device, args.threads)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def postprocess(device_name: str, threads: int) -> None:
    """Time matching and NMS on a whole-micrograph grid (3584 x 3584 model pixels, 50,176 anchors).

    Measured with 1 thread and with ``threads``: these are many small operations, which torch's
    intra-op threads speed up little and slow down badly when the cores are shared with other work.
    """
    import torch

    from hydrapick.config import ModelConfig
    from hydrapick.model.anchors import anchor_centres, match, nms_by_distance

    device = torch.device(device_name)
    config = ModelConfig()
    distance = 0.8 * config.particle_diameter_px
    g = torch.Generator().manual_seed(0)
    anchors = anchor_centres(3584, 3584, config, device=device)
    jitter = (torch.rand(anchors.shape, generator=g) - 0.5) * config.anchor_stride
    centres = anchors + jitter.to(device)
    random_scores = torch.rand(len(anchors), generator=g).to(device)
    # Scores rising smoothly across the image give the longest chains of dependent NMS decisions.
    ramp_scores = -(anchors[:, 0] + 1e-3 * anchors[:, 1])
    particles = (torch.rand((3000, 2), generator=g) * 3584).to(device)
    cases = {
        "nms, random scores": lambda: nms_by_distance(centres, random_scores, distance),
        "nms, smooth ramp of scores": lambda: nms_by_distance(centres, ramp_scores, distance),
        "match 3000 particles": lambda: match(anchors, particles, config.particle_diameter_px),
    }
    thread_counts = sorted({1, threads}) if device.type == "cpu" else [threads]
    rows = []
    for name, fn in cases.items():
        row = [name, f"{len(anchors)}"]
        for n in thread_counts:
            torch.set_num_threads(n)
            fn()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            row.append(f"{min(times) * 1e3:.0f}")
        rows.append(row)
    print_table(["post-processing (one 3584² image)", "anchors",
                 *(f"ms, {n} thread{'s' * (n > 1)}" for n in thread_counts)], rows)


if __name__ == "__main__":
    main()
