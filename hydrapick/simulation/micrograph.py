"""`simulate_micrograph`: one labelled synthetic micrograph, in memory.

Image formation, in order:

1. the projected potential of the particles (from the structure's `ViewBank`), broken particles and
   denatured blobs, in excess of the ice they displace (V Å);
2. plus the carbon film (mean inner potential x thickness, with amorphous density fluctuations), ice
   thickness variations with the structural noise of amorphous water, and contamination;
3. phase ``phi = sigma(kV) x potential``; exit wave ``exp(i phi - eta phi)`` (amplitude contrast);
4. the wave is propagated through the objective lens: multiplied by ``E(k) exp(i gamma(k))`` (defocus,
   astigmatism, Cs, phase plate, B-factor, coherence and drift envelopes) with one FFT pair, and squared;
5. inelastic scattering in ice and carbon (mean free paths): removed by an energy filter or added back as
   a flat background without contrast; contamination and ice crystals scatter out of the aperture;
6. uneven illumination, Poisson shot noise at the dose, detector MTF, detector blemishes.

The returned image is in counted electrons per pixel.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from ..config import SimulationConfig
from ..picks import Picks
from . import detector as det
from . import scattering as sc
from .conditions import Conditions, draw_conditions, pixel_size_bounds
from .ctf import wave_transfer
from .particles import draw_junk, place_particles, render_blobs
from .procedural import procedural_structure
from .projection import ViewBank, get_view_bank, render_views
from .scene import draw_contamination, draw_support, ice_thickness_map
from .structures import Structure, load_structure

log = logging.getLogger(__name__)

# Mean free path (Å) for elastic scattering of amorphous carbon beyond a typical objective aperture.
CARBON_APERTURE_MFP_A = 1500.0
# Ice-equivalent thickness (Å) beyond which contamination adds no more coherent phase.
CONTAMINATION_PHASE_A = 300.0
# Mirror padding (pixels, each side) of the exit wave before the lens transfer, so that the FFT's
# periodic boundary does not fold delocalised contrast from one border onto the other.
LENS_PADDING_PX = 64


@dataclass
class SimulatedMicrograph:
    """A synthetic micrograph and its ground truth.

    Attributes
    ----------
    image : (H, W) float32
        Counted electrons per pixel (particles dark, as recorded).
    pixel_size_A : float
    diameter_A : float
        The structure's maximum extent (Å): what a user would give a picker as the particle diameter.
    picks : Picks
        The labelled particles (see the label policy in `hydrapick.simulation.scene`), micrograph pixels,
        ``diameter_px`` set, no scores.
    params : dict
        Every drawn parameter (conditions, scene, particles with their reasons) as plain values.
    layers : dict of (H, W) float32 arrays
        Only with ``layers=True``: ``particles_potential_V_A`` (projected potential of the particles
        alone, V Å), ``potential_V_A`` (everything: particles, junk, ice, carbon, contamination) and
        ``expected_counts`` (the noise-free image: mean counts before shot noise and detector blur).
    """

    image: np.ndarray
    pixel_size_A: float
    diameter_A: float
    picks: Picks
    params: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)

    @property
    def diameter_px(self) -> float:
        return self.diameter_A / self.pixel_size_A


_STRUCTURE_CACHE: dict[tuple, Structure] = {}


def resolve_structure(structure, config: SimulationConfig, rng: np.random.Generator) -> Structure:
    """A `Structure` from a Structure, a file path, or None (procedural, drawn from ``rng``)."""
    if isinstance(structure, Structure):
        return structure
    if structure is None:
        mass = None
        if config.structure_mass_kDa_range is not None:
            lo, hi = config.structure_mass_kDa_range
            mass = lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return procedural_structure(config.structure_kind, rng, mass_kDa=mass)
    path = Path(structure)
    key = (str(path.resolve()), path.stat().st_mtime if path.exists() else None)
    if key not in _STRUCTURE_CACHE:
        if len(_STRUCTURE_CACHE) > 8:
            _STRUCTURE_CACHE.clear()
        _STRUCTURE_CACHE[key] = load_structure(path)
    return _STRUCTURE_CACHE[key]


def _generators(seed: int | np.random.Generator, n: int) -> list[np.random.Generator]:
    # Independent streams per stage: adding draws to one stage leaves the others' draws unchanged.
    if isinstance(seed, np.random.Generator):
        return seed.spawn(n)
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(n)]


MIN_DIAMETER_A = 10.0
# A particle drawn for a single micrograph is seen ~100 times: more views than this would go unused.
ONE_OFF_VIEWS = 64


def view_bank_for(structure: Structure, config: SimulationConfig, n_views: int | None = None) -> ViewBank:
    """The (cached) projection bank covering every pixel size ``config`` can draw for ``structure``."""
    lo, hi = pixel_size_bounds(config, structure.diameter_A)
    return get_view_bank(structure, lo, hi, n_views or config.n_views)


def _ice_texture(shape, pixel_size_A: float, thickness: np.ndarray, mean_A: float, rng) -> np.ndarray:
    """Projected-potential fluctuations (V Å) of amorphous ice of the given thickness map.

    Random water molecules give, per pixel, a standard deviation ``sqrt(n t) f_w(0) / p`` at white
    spectrum; amorphous water is nearly incompressible, so its structure factor is ~0.06 at low frequency
    and peaks at 1/3.7 Å^-1 (the "water ring"), and the molecule's form factor damps high frequencies.
    """
    fy = np.fft.fftfreq(shape[0], d=pixel_size_A).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_size_A).astype(np.float32)[None, :]
    k = np.sqrt(fx**2 + fy**2)
    # The filter is radial: tabulate it once and look it up.
    table_k = np.linspace(0.0, float(k.max()) * 1.001, 2048)
    rise = (table_k / 0.25) ** 4
    s_k = 0.06 + 0.94 * rise / (1.0 + rise) + 1.2 * np.exp(-0.5 * ((table_k - 0.27) / 0.035) ** 2)
    form = (sc.scattering_factor("O", table_k) + 2 * sc.scattering_factor("H", table_k)) / (
        sc.scattering_factor("O", 0.0) + 2 * sc.scattering_factor("H", 0.0))
    table = (np.sqrt(s_k) * form).astype(np.float32)
    filt = table[np.minimum((k * (2047 / table_k[-1])).astype(np.int32), 2047)]
    amp = math.sqrt(sc.ICE_MOLECULES_PER_A3 * mean_A) * sc.WATER_FT0 / pixel_size_A
    white = rng.standard_normal(shape, dtype=np.float32)
    spec = sfft.rfft2(white, workers=2) * filt
    field_ = sfft.irfft2(spec, s=shape, workers=2)
    return (field_ * amp * np.sqrt(thickness / mean_A)).astype(np.float32)


def simulate_micrograph(config: SimulationConfig | None = None, seed: int | np.random.Generator = 0,
                        structure: Structure | str | Path | None = None, *, name: str = "simulated",
                        layers: bool = False) -> SimulatedMicrograph:
    """Simulate one labelled micrograph.

    Parameters
    ----------
    config : ranges to draw from; `SimulationConfig()` when None.
    seed : int or numpy Generator; the same seed (and config and structure) gives the same micrograph.
    structure : a `Structure`, a PDB/mmCIF path, or None for a procedural particle drawn from the seed.
        The per-structure projection bank is built on first use and cached, so pass the same structure
        again for speed. A particle drawn from the seed is used once, so its bank has at most
        `ONE_OFF_VIEWS` orientations.
    name : micrograph name recorded in ``picks.micrograph``.
    layers : also return the noise-free intermediate images (see `SimulatedMicrograph.layers`).

    Returns
    -------
    SimulatedMicrograph
    """
    config = config or SimulationConfig()
    g_struct, g_cond, g_scene, g_texture, g_noise, g_det = _generators(seed, 6)
    one_off = structure is None
    structure = resolve_structure(structure, config, g_struct)
    if not structure.diameter_A >= MIN_DIAMETER_A:
        raise ValueError(f"structure {structure.name!r} is {structure.diameter_A:.1f} Å across; "
                         f"the simulator needs a particle of at least {MIN_DIAMETER_A:.0f} Å")
    bank = view_bank_for(structure, config, min(config.n_views, ONE_OFF_VIEWS) if one_off else None)
    cond: Conditions = draw_conditions(config, g_cond, structure.diameter_A)
    p = cond.pixel_size_A
    shape = (int(config.shape_px[0]), int(config.shape_px[1]))
    diameter_px = structure.diameter_A / p
    # Ice is at least as thick as the particle is wide (particles lie flat-ish in it) plus a margin.
    ice_mean = max(cond.ice_thickness_A, 0.8 * structure.diameter_A + 40.0)

    # --- scene ---
    support = draw_support(shape, p, config, g_scene)
    ice, ice_info = ice_thickness_map(shape, p, ice_mean, cond.ice_gradient, support, g_scene)
    contamination = draw_contamination(shape, p, config, g_scene)
    particles, placement = place_particles(shape, diameter_px, bank.n_views, bank.view_directions, config,
                                           g_scene, support, contamination)
    junk = draw_junk(shape, diameter_px, len(particles.x), len(bank.fragments[0].views), config, g_scene)

    # --- projected potential (V Å) ---
    potential = np.zeros(shape, np.float32)
    render_views(potential, bank.level_for(p), particles.view, particles.x, particles.y, particles.psi_rad, p)
    extra = {"particles_potential_V_A": potential.copy()} if layers else {}
    if len(junk.fragments["x"]):
        frag = junk.fragments
        render_views(potential, bank.level_for(p, fragments=True), frag["view"], frag["x"], frag["y"],
                     frag["psi"], p)
    render_blobs(potential, junk.blobs, p, g_scene)
    potential += sc.ICE_MIP_V * (ice - ice_mean)
    potential += _ice_texture(shape, p, ice, ice_mean, g_texture)
    carbon = support.carbon_A
    if carbon is not None:
        potential += sc.CARBON_MIP_V * carbon
        # Amorphous carbon: random atoms, white at these resolutions, damped at low frequency.
        fluct = np.sqrt(0.5 * sc.CARBON_ATOMS_PER_A3 * carbon) * (sc.CARBON_FT0 / p)
        potential += fluct * g_texture.standard_normal(shape, dtype=np.float32)
    if contamination.thickness_A is not None:
        # A thick object is far from a thin phase object: multiple and inelastic scattering wash out
        # the coherent fringes its edge would otherwise ring with, so its phase saturates.
        potential += sc.ICE_MIP_V * CONTAMINATION_PHASE_A * np.tanh(contamination.thickness_A
                                                                  / CONTAMINATION_PHASE_A)

    if layers:
        extra["potential_V_A"] = potential.copy()

    # --- exit wave, lens, intensity ---
    ctf = cond.ctf
    phase = (sc.interaction_constant(ctf.voltage_kV) * sc.BONDING_SCALE * potential).astype(np.float32)
    phase -= phase.mean()
    eta = ctf.amplitude_contrast / math.sqrt(1.0 - ctf.amplitude_contrast**2)
    pad = min(LENS_PADDING_PX, shape[0] // 4, shape[1] // 4)
    padded = np.pad(phase, pad, mode="reflect") if pad else phase
    amplitude = np.exp(-eta * padded)
    wave = np.empty(padded.shape, np.complex64)
    wave.real = amplitude * np.cos(padded)
    wave.imag = amplitude * np.sin(padded)
    inner = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    exit_intensity = float(np.mean(amplitude[inner].astype(np.float64) ** 2))
    spec = sfft.fft2(wave, workers=2)
    spec *= wave_transfer(ctf, padded.shape, p)
    wave = sfft.ifft2(spec, workers=2)[inner]
    intensity = (wave.real**2 + wave.imag**2).astype(np.float32)
    del wave, spec, padded
    # The envelopes stand for partial coherence, drift and blur: they spread electrons, they do not
    # remove them, so the lens conserves the exit wave's intensity.
    intensity *= np.float32(exit_intensity / float(intensity.mean(dtype=np.float64)))

    mfp_ice = sc.inelastic_mfp_ice_A(ctf.voltage_kV)
    depth = ice / mfp_ice
    if carbon is not None:
        depth = depth + carbon / sc.inelastic_mfp_carbon_A(ctf.voltage_kV)
    if contamination.thickness_A is not None:
        depth = depth + contamination.thickness_A / mfp_ice
    zero_loss = np.exp(-depth).astype(np.float32)
    if cond.energy_filter:
        intensity *= zero_loss
    else:
        # Inelastically scattered electrons arrive too, blurred beyond recognition: contrast is diluted.
        intensity = zero_loss * intensity + (1.0 - zero_loss)
    # Electrons scattered outside the objective aperture are lost with or without a filter: most by
    # contamination and ice crystals, and by the carbon film (dense, heavier atoms than ice).
    loss = contamination.optical_depth
    if carbon is not None:
        loss = carbon / CARBON_APERTURE_MFP_A if loss is None else loss + carbon / CARBON_APERTURE_MFP_A
    if loss is not None:
        intensity *= np.exp(-loss)
    illum = det.illumination(shape, cond.illumination_gradient, g_det)
    if illum is not None:
        intensity *= illum

    # --- detection ---
    mean_count = cond.dose_e_per_A2 * p * p
    if layers:
        extra["expected_counts"] = intensity * np.float32(mean_count)
    if cond.counting:
        # Each electron is one count wherever its charge spreads: the MTF blurs the signal, not the
        # noise (DQE(f) = DQE(0) MTF(f)^2). Resampling then blurs both.
        intensity = det.blur(intensity, cond.mtf_sigma_px, False)
        post_sigma = cond.resample_sigma_px
    else:
        post_sigma = math.hypot(cond.mtf_sigma_px, cond.resample_sigma_px)
    counts = det.shot_noise(intensity, cond.dose_e_per_A2, p, g_noise, cond.dqe)
    image = det.blur(counts, post_sigma, cond.binned)
    blemish_info = det.blemishes(image, config, g_det, mean_count)

    keep = particles.labelled
    picks = Picks(micrograph=np.full(int(keep.sum()), name, dtype=object), x=particles.x[keep],
                  y=particles.y[keep], diameter_px=np.full(int(keep.sum()), diameter_px))
    params = {
        "name": name,
        "seed": int(seed) if not isinstance(seed, np.random.Generator) else "generator",
        "shape_px": list(shape),
        "structure": structure.summary(),
        "diameter_A": round(structure.diameter_A, 3),
        "diameter_px": round(diameter_px, 3),
        "pixel_size_A": cond.pixel_size_A,
        "conditions": cond.to_dict(),
        "ice": {**ice_info, "mean_thickness_A": round(float(ice.mean()), 2)},
        "support": support.to_dict(),
        "contamination": contamination.objects,
        "placement": placement,
        "particles": particles.to_dict(),
        "junk": junk.to_dict(),
        "detector": {"mean_count_expected": round(mean_count, 4), **blemish_info},
        "n_labelled": int(keep.sum()),
    }
    return SimulatedMicrograph(image=image, pixel_size_A=p, diameter_A=float(structure.diameter_A),
                               picks=picks, params=params, layers=extra)
