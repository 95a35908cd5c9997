"""Per-micrograph imaging conditions drawn from a `SimulationConfig`: sampling, optics, exposure, ice.

Scale-like quantities (pixel size) are drawn log-uniformly, the rest uniformly in their ranges.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..config import SimulationConfig
from .ctf import CTFParams


@dataclass(frozen=True)
class Conditions:
    """Everything about how one micrograph was recorded (not what is in it)."""

    pixel_size_A: float
    ctf: CTFParams
    dose_e_per_A2: float
    dqe: float
    energy_filter: bool
    ice_thickness_A: float
    ice_gradient: float
    mtf_sigma_px: float
    binned: bool
    illumination_gradient: float
    counting: bool = True
    resample_sigma_px: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ctf"] = self.ctf.to_dict()
        return d


def pixel_size_bounds(config: SimulationConfig, diameter_A: float) -> tuple[float, float]:
    """Pixel sizes (Å) allowed for a particle of ``diameter_A``.

    The intersection of ``pixel_size_A_range`` with the sizes that make the particle span
    ``particle_diameter_px_range`` pixels. When they do not intersect, the end of the pixel range
    closest to the wanted particle size is used.
    """
    p_lo, p_hi = config.pixel_size_A_range
    d_lo, d_hi = config.particle_diameter_px_range
    lo = max(p_lo, diameter_A / d_hi)
    hi = min(p_hi, diameter_A / d_lo)
    if lo <= hi:
        return lo, hi
    edge = p_lo if diameter_A / d_hi < p_lo else p_hi
    return edge, edge


def _uniform(rng: np.random.Generator, r) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_conditions(config: SimulationConfig, rng: np.random.Generator, diameter_A: float) -> Conditions:
    """Draw one micrograph's conditions; the particle's ``diameter_A`` sets the pixel-size window."""
    lo, hi = pixel_size_bounds(config, diameter_A)
    pixel = _log_uniform(rng, lo, hi)
    voltage = float(rng.choice(config.voltage_kV_choices))
    cs = float(rng.choice(config.cs_mm_choices))
    amp = _uniform(rng, config.amplitude_contrast_range)
    dz = _uniform(rng, config.defocus_um_range) * 1e4
    astig = _uniform(rng, config.astigmatism_um_range) * 1e4
    phase_plate = rng.random() < config.phase_plate_probability
    phase_shift = _uniform(rng, config.phase_shift_deg_range) if phase_plate else 0.0
    if phase_plate:
        # Phase-plate data are recorded close to focus.
        dz = min(dz, float(rng.uniform(0.2, 0.8)) * 1e4)
    ctf = CTFParams(
        voltage_kV=voltage, cs_mm=cs, amplitude_contrast=amp,
        defocus_u_A=dz + astig / 2, defocus_v_A=dz - astig / 2,
        astigmatism_angle_deg=float(rng.uniform(0.0, 180.0)), phase_shift_deg=phase_shift,
        bfactor_A2=_uniform(rng, config.bfactor_A2_range),
        beam_divergence_mrad=_uniform(rng, config.beam_divergence_mrad_range),
        energy_spread_eV=config.energy_spread_eV, cc_mm=config.cc_mm,
        drift_A=_uniform(rng, config.drift_A_range), drift_angle_deg=float(rng.uniform(0.0, 180.0)),
    )
    dose = _uniform(rng, config.dose_e_per_A2_range)
    dqe = _uniform(rng, config.dqe_range)
    energy_filter = bool(rng.random() < config.energy_filter_probability)
    ice = max(_uniform(rng, config.ice_thickness_A_range), 0.0)
    ice_gradient = _uniform(rng, config.ice_gradient_range)
    mtf = _uniform(rng, config.mtf_sigma_px_range)
    binned = bool(rng.random() < config.binned_probability)
    illum = _uniform(rng, config.illumination_gradient_range)
    counting = bool(rng.random() < config.counting_probability)
    resample = _uniform(rng, config.resample_sigma_px_range)
    return Conditions(pixel, ctf, dose, dqe, energy_filter, ice, ice_gradient, mtf, binned, illum, counting,
                      resample)
