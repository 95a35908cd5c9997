"""Labelled synthetic micrographs from atomic models or procedural particles.

A physics-based simulator: projected Coulomb potential from atoms with tabulated electron scattering
factors, solvent displacement, random orientations, a full CTF with envelopes, ice, carbon film,
contamination, junk, shot noise and detector blur. See docs/simulate.md.

Public API::

    from hydrapick.config import SimulationConfig
    from hydrapick.simulation import (simulate, simulate_micrograph, simulate_dataset, load_structure,
                                      procedural_structure)

    simulate("sim/", 20, settings={"shape_px": (1024, 1024)}, seed=1)  # what `hydrapick simulate` does

    sim = simulate_micrograph(SimulationConfig(), seed=1)          # procedural particle
    sim.image, sim.pixel_size_A, sim.diameter_A, sim.picks, sim.params
"""

from ..config import SimulationConfig
from .ctf import CTFParams, ctf_1d, ctf_2d, ctf_zeros_inv_A
from .dataset import simulate_dataset
from .micrograph import SimulatedMicrograph, simulate_micrograph, view_bank_for
from .procedural import KINDS, procedural_structure
from .projection import clear_cache, project_structure
from .run import SimulatedDataset, simulate, simulation_config_from
from .structures import Structure, StructureError, load_structure
from .symmetry import symmetric_assembly, symmetry_operators

__all__ = [
    "CTFParams", "KINDS", "SimulatedDataset", "SimulatedMicrograph", "SimulationConfig", "Structure",
    "StructureError", "clear_cache", "ctf_1d", "ctf_2d", "ctf_zeros_inv_A", "load_structure",
    "procedural_structure", "project_structure", "simulate", "simulate_dataset", "simulate_micrograph",
    "simulation_config_from", "symmetric_assembly", "symmetry_operators", "view_bank_for",
]
