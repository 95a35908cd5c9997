"""Make docs/img/simulate_vs_real.png: a simulated micrograph beside a real one at the same pixel size.

The real micrograph is EMPIAR-10028 (80S ribosome; 8-bit rendering downsampled 4x, 5.36 Å/px) from
../shared/data/real/empiar-10028; the simulated one has a procedural ribosome-sized particle at the same
pixel size, conditions drawn from the ranges below. Run from the repository root:

    python docs/img/simulate_vs_real.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mrcfile  # noqa: E402
import numpy as np  # noqa: E402

from hydrapick.config import SimulationConfig  # noqa: E402
from hydrapick.simulation import procedural_structure, simulate_micrograph  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real" / "empiar-10028" / "micrographs" / "061_10028.mrc"
OUT = Path(__file__).with_suffix(".png")

# EMPIAR-10028 was recorded on a Falcon II (integrating, low DQE) at 300 kV with ~1-3 µm defocus;
# the 8-bit renderings are smoothed by their downsampling. Everything else: the default ranges.
# (The simulator's defaults span this and much more; these narrow them to this dataset's conditions.)
CONFIG = SimulationConfig(
    pixel_size_A_range=(5.36, 5.36), voltage_kV_choices=(300.0,), cs_mm_choices=(2.7,),
    defocus_um_range=(1.5, 3.0), dose_e_per_A2_range=(15.0, 25.0), dqe_range=(0.3, 0.45),
    energy_filter_probability=0.0, counting_probability=0.0, mtf_sigma_px_range=(0.4, 0.6),
    resample_sigma_px_range=(0.0, 0.2), coverage_range=(0.2, 0.25),
    carbon_probability=0.0, ice_crystal_probability=0.0, blemish_probability=0.0, n_views=128)


def radial_power(image: np.ndarray) -> np.ndarray:
    d = image.astype(np.float64) - image.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(d))) ** 2 / d.size
    n = d.shape[0]
    y, x = np.indices(d.shape) - n // 2
    r = np.hypot(x, y).astype(int)
    prof = np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())
    return prof[1: n // 2]


def display(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo), 0, 1)


def main() -> None:
    real = mrcfile.open(REAL, permissive=True).data.astype(np.float32)
    structure = procedural_structure("ribosome", 7, mass_kDa=4000)
    sim = simulate_micrograph(CONFIG, 3, structure)
    fig = plt.figure(figsize=(15, 10.5))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 0.62])
    crop = slice(300, 556)
    panels = ((real, "real: EMPIAR-10028 (80S ribosome), 5.36 Å/px"),
              (sim.image, f"simulated: procedural ribosome ({sim.diameter_A:.0f} Å), 5.36 Å/px"))
    for i, (img, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(display(img), cmap="gray")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, 2])
    pair = [display(real[crop, crop]), np.ones((256, 8)), display(sim.image[crop, crop])]
    ax.imshow(np.concatenate(pair, 1), cmap="gray")
    ax.set_title("256 px crops: real | simulated", fontsize=10)
    ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    freq = np.arange(1, 512) / (1024 * 5.36)
    for img, label in ((real, "real"), (sim.image, "simulated")):
        prof = radial_power(img)
        ax.semilogy(freq, prof / prof[(freq > 0.03) & (freq < 0.05)].mean(), label=label, lw=1)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("radially averaged power\n(normalised at 1/33-1/20 Å)")
    ax.legend()
    c = sim.params["conditions"]
    ax.set_title(f"simulated: defocus {c['ctf']['defocus_u_A'] / 1e4:.2f} µm, {c['dose_e_per_A2']:.0f} e/Å², "
                 f"DQE {c['dqe']:.2f}, ice {sim.params['ice']['mean_thickness_A']:.0f} Å, "
                 f"B {c['ctf']['bfactor_A2']:.0f} Å², MTF σ {c['mtf_sigma_px']:.2f} px", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
