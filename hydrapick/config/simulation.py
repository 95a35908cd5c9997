"""The simulator's ranges of conditions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SimulationConfig:
    """Ranges the simulator draws every micrograph's conditions from (see docs/simulate.md).

    ``*_range`` fields are ``(low, high)`` and drawn uniformly (``lo == hi`` fixes the value); ``*_choices``
    fields are drawn uniformly from the tuple (repeat a value to make it more likely); ``*_probability``
    fields switch a feature on for that fraction of micrographs. One seed fixes every draw.
    """

    shape_px: tuple[int, int] = (1024, 1024)  # (rows, columns)
    # Pixel size is drawn (log-uniformly) inside this range *and* so that the particle spans
    # particle_diameter_px_range pixels; when both cannot hold, the pixel range wins.
    pixel_size_A_range: tuple[float, float] = (0.7, 6.0)
    particle_diameter_px_range: tuple[float, float] = (20.0, 140.0)
    # Microscope and CTF.
    voltage_kV_choices: tuple[float, ...] = (300.0, 300.0, 300.0, 200.0)
    cs_mm_choices: tuple[float, ...] = (2.7, 2.7, 2.7, 2.0, 1.4, 0.01)
    amplitude_contrast_range: tuple[float, float] = (0.05, 0.12)
    defocus_um_range: tuple[float, float] = (0.5, 3.5)  # underfocus
    astigmatism_um_range: tuple[float, float] = (0.0, 0.12)  # |defocus_u - defocus_v|
    phase_plate_probability: float = 0.05
    phase_shift_deg_range: tuple[float, float] = (30.0, 120.0)
    bfactor_A2_range: tuple[float, float] = (30.0, 250.0)  # envelope: motion, damage, coherence losses
    beam_divergence_mrad_range: tuple[float, float] = (0.005, 0.05)
    energy_spread_eV: float = 0.8
    cc_mm: float = 2.7
    drift_A_range: tuple[float, float] = (0.0, 6.0)  # uncorrected linear motion during the exposure
    # Exposure and detector.
    dose_e_per_A2_range: tuple[float, float] = (10.0, 60.0)
    # Detective quantum efficiency at zero frequency: older integrating cameras ~0.3, counting ~0.8.
    dqe_range: tuple[float, float] = (0.3, 0.9)
    mtf_sigma_px_range: tuple[float, float] = (0.0, 0.8)  # detector MTF as a Gaussian blur (pixels)
    # Counting detectors blur the signal but not the shot noise; integrating ones blur both.
    counting_probability: float = 0.7
    resample_sigma_px_range: tuple[float, float] = (0.0, 0.8)  # downsampling/rendering blur of everything
    binned_probability: float = 0.5  # pixel-aperture sinc of summed (binned) pixels
    energy_filter_probability: float = 0.4
    # Ice.
    ice_thickness_A_range: tuple[float, float] = (200.0, 900.0)  # never thinner than the particle + 40 Å
    ice_gradient_range: tuple[float, float] = (0.0, 0.3)  # relative peak-to-peak change across the image
    # Support film.
    carbon_probability: float = 0.25  # a hole edge with carbon film crosses the image
    carbon_thickness_A_range: tuple[float, float] = (80.0, 300.0)
    hole_radius_A_range: tuple[float, float] = (5000.0, 10000.0)
    carbon_particle_density_range: tuple[float, float] = (0.0, 1.5)  # relative to the hole
    continuous_carbon_probability: float = 0.1  # thin carbon (or graphene oxide-like) over everything
    continuous_carbon_thickness_A_range: tuple[float, float] = (20.0, 60.0)
    # Particles.
    coverage_range: tuple[float, float] = (0.03, 0.4)  # fraction of the area inside particle discs
    n_particles: int | None = None  # a fixed count of free particles instead of coverage (aggregates extra)
    max_particles: int = 800
    min_separation_range: tuple[float, float] = (0.6, 1.0)  # closest centre distance / diameter
    preferred_orientation_probability: float = 0.2
    preferred_orientation_kappa_range: tuple[float, float] = (2.0, 12.0)
    aggregate_probability: float = 0.35
    aggregates_range: tuple[int, int] = (1, 5)
    aggregate_size_range: tuple[int, int] = (3, 14)
    # Junk, contamination, blemishes.
    junk_fraction_range: tuple[float, float] = (0.0, 0.25)  # junk objects per particle
    contamination_probability: float = 0.35  # dark surface contamination (balls, specks)
    ice_crystal_probability: float = 0.15
    illumination_gradient_range: tuple[float, float] = (0.0, 0.03)
    blemish_probability: float = 0.15  # smooth dark/bright detector blemishes
    hot_pixel_probability: float = 0.3
    # Structures (when none is given).
    structure_kind: str = "random"
    structure_mass_kDa_range: tuple[float, float] | None = None  # None: the kind's own range
    n_views: int = 256  # orientations in the per-structure projection bank
    # Label policy: which placed particles are written as picks.
    label_on_carbon: bool = False  # centre over the carbon film (outside the hole)
    label_in_aggregates: bool = False
    label_on_contamination: bool = False  # centre under contamination or an ice crystal
    label_overlapping: bool = True
    overlap_fraction: float = 0.5  # centres closer than this x diameter overlap
    label_edge_margin: float = 1.0  # centre at least this x radius inside the image

    def __post_init__(self) -> None:
        if len(self.shape_px) != 2 or min(self.shape_px) < 32:
            raise ValueError(f"shape_px must be two sizes >= 32, got {self.shape_px}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_range") and v is not None:
                if len(v) != 2 or not (v[0] <= v[1]):
                    raise ValueError(f"{f.name} must be (low, high) with low <= high, got {v}")
                if v[0] < 0:
                    raise ValueError(f"{f.name} must not be negative, got {v}")
            if f.name.endswith("_probability") and not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be in [0, 1], got {v}")
            if f.name.endswith("_choices") and (not v or min(v) < 0):
                raise ValueError(f"{f.name} must be a non-empty tuple of non-negative values, got {v}")
        for name in ("pixel_size_A_range", "particle_diameter_px_range", "dose_e_per_A2_range", "dqe_range",
                     "ice_thickness_A_range", "hole_radius_A_range", "min_separation_range"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.voltage_kV_choices) < 60:
            raise ValueError(f"voltage_kV_choices must be >= 60 kV, got {self.voltage_kV_choices}")
        if self.dqe_range[1] > 1:
            raise ValueError(f"dqe_range must be within (0, 1], got {self.dqe_range}")
        if self.amplitude_contrast_range[1] >= 1:
            raise ValueError(f"amplitude_contrast_range must be below 1, got {self.amplitude_contrast_range}")
        if self.n_particles is not None and self.n_particles < 0:
            raise ValueError(f"n_particles must be >= 0, got {self.n_particles}")
        if self.max_particles < 0 or self.n_views < 1:
            raise ValueError("max_particles must be >= 0 and n_views >= 1")
        if self.label_edge_margin < 0 or self.overlap_fraction < 0:
            raise ValueError("label_edge_margin and overlap_fraction must be >= 0")
