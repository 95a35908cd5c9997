"""Electron scattering factors, beam constants and the mean inner potentials of ice and carbon.

Atoms scatter electrons through their Coulomb potential. The elastic scattering factor of a neutral atom
is tabulated as a sum of five Gaussians,

    f(s) = sum_i a_i exp(-b_i s^2),   s = sin(theta) / lambda = q / 2   (Å^-1),   f in Å,

with the coefficients of L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan (1996), "Robust
parameterization of elastic and absorptive electron atomic scattering factors", Acta Cryst. A52, 257-276,
Table 1 (fit range 0 <= s <= 2 Å^-1). The potential and the scattering factor are related by

    V(q) = (h^2 / (2 pi m0 e)) f(q) = 47.878 V Å^2 * f(q)          (3D Fourier transform, V Å^3)

so the projected potential of one atom, a function of the distance r from it in the image plane, is

    V_z(r) = 47.878 sum_i a_i (4 pi / b_i) exp(-4 pi^2 r^2 / b_i)    (V Å),

and a thermal factor B (Å^2) adds B to every b_i. Everything here is in volts, ångströms and radians.
"""

from __future__ import annotations

import math

import numpy as np

# h^2 / (2 pi m0 e) in V Å^2: converts an electron scattering factor (Å) into a potential (V Å^3).
POTENTIAL_PER_SCATTERING_FACTOR = 47.87801
ELECTRON_REST_ENERGY_EV = 510998.95
# Avogadro in g/cm^3 <-> Da/Å^3 units: 1 Da / (1 g/cm^3) = 1.66054 Å^3.
A3_PER_DA_AT_UNIT_DENSITY = 1.66054

# Peng et al. (1996) Table 1: element -> (a_1..a_5 in Å, b_1..b_5 in Å^2).
PENG_1996: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "H": ((0.0349, 0.1201, 0.1970, 0.0573, 0.1195), (0.5347, 3.5867, 12.3471, 18.9525, 38.6269)),
    "C": ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575), (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)),
    "N": ((0.1022, 0.3219, 0.7982, 0.8197, 0.1715), (0.2451, 1.7481, 6.1925, 17.3894, 48.1431)),
    "O": ((0.0974, 0.2921, 0.6910, 0.6990, 0.2039), (0.2067, 1.3815, 4.6943, 12.7105, 32.4726)),
    "F": ((0.1083, 0.3175, 0.6487, 0.5846, 0.1421), (0.2057, 1.3439, 4.2788, 11.3932, 28.7881)),
    "Na": ((0.2142, 0.6853, 0.7692, 1.6589, 1.4482), (0.3334, 2.3446, 10.0830, 48.3037, 138.2700)),
    "Mg": ((0.2314, 0.6866, 0.9677, 2.1882, 1.1339), (0.3278, 2.2720, 10.9241, 39.2898, 101.9748)),
    "P": ((0.2548, 0.6106, 1.4541, 2.3204, 0.8477), (0.2908, 1.8740, 8.5176, 24.3434, 63.2996)),
    "S": ((0.2497, 0.5628, 1.3899, 2.1865, 0.7715), (0.2681, 1.6711, 7.0267, 19.5377, 50.3888)),
    "Cl": ((0.2443, 0.5397, 1.3919, 2.0197, 0.6621), (0.2468, 1.5242, 6.1537, 16.6687, 42.3086)),
    "K": ((0.4115, -1.4031, 2.2784, 2.6742, 2.2162), (0.3703, 3.3874, 13.1029, 68.9592, 194.4329)),
    "Ca": ((0.4054, 1.3880, 2.1602, 3.7532, 2.2063), (0.3499, 3.0991, 11.9608, 53.9353, 142.3892)),
    "Mn": ((0.3796, 1.2094, 1.7815, 2.5420, 1.5937), (0.2699, 2.0455, 7.4726, 31.0604, 91.5622)),
    "Fe": ((0.3946, 1.2725, 1.7031, 2.3140, 1.4795), (0.2717, 2.0443, 7.6007, 29.9714, 86.2265)),
    "Zn": ((0.4288, 1.2646, 1.4472, 1.8294, 1.0934), (0.2593, 1.7998, 6.7500, 25.5860, 73.5284)),
}

ELEMENTS: tuple[str, ...] = tuple(PENG_1996)
ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "Na": 11, "Mg": 12, "P": 15, "S": 16, "Cl": 17,
                 "K": 19, "Ca": 20, "Mn": 25, "Fe": 26, "Zn": 30}
ATOMIC_MASS_DA = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "F": 18.998, "Na": 22.990,
                  "Mg": 24.305, "P": 30.974, "S": 32.06, "Cl": 35.45, "K": 39.098, "Ca": 40.078,
                  "Mn": 54.938, "Fe": 55.845, "Zn": 65.38}

# Hydrogens carried by each heavy atom when a model has none (most crystal and cryo-EM models): chosen
# so that an average residue gets its ~7.8 hydrogens (C ~1.2, N ~0.9, O ~0.2, S ~0.5).
IMPLICIT_HYDROGENS = {"C": 1.2, "N": 0.9, "O": 0.2, "S": 0.5}

PROTEIN_DENSITY_G_CM3 = 1.35  # partial specific volume 0.74 cm^3/g
NUCLEIC_ACID_DENSITY_G_CM3 = 1.80  # partial specific volume ~0.55 cm^3/g
LIPID_DENSITY_G_CM3 = 0.90  # detergent/lipid tails: lighter than water, hence the pale micelle belt

# Vitreous ice: 0.92 g/cm^3 -> 0.0307 H2O per Å^3. Amorphous carbon film: ~2.0 g/cm^3 -> 0.100 C per Å^3.
ICE_MOLECULES_PER_A3 = 0.92 / (18.015 * A3_PER_DA_AT_UNIT_DENSITY)
CARBON_ATOMS_PER_A3 = 2.0 / (12.011 * A3_PER_DA_AT_UNIT_DENSITY)

# Inelastic mean free paths (Å): electrons scattered inelastically are removed by an energy filter and
# otherwise form a blurred background without particle contrast. Vitreous ice ~380 nm at 300 kV and
# ~300 nm at 200 kV; amorphous carbon about half of that.
INELASTIC_MFP_ICE_A = {300.0: 3800.0, 200.0: 3000.0, 100.0: 2000.0}
INELASTIC_MFP_CARBON_A = {300.0: 1800.0, 200.0: 1500.0, 100.0: 1000.0}


def element_symbol(name: str) -> str:
    """The tabulated element used for ``name`` (any case, e.g. ``"FE"``, ``"se"``).

    Elements outside the table use the tabulated element closest in atomic number (e.g. Se -> Zn,
    Cu -> Zn, Co -> Fe, I -> Zn): rare in biological models, and their exact shape is invisible at
    cryo-EM pixel sizes; only their extra weight matters, which the neighbour approximates.

    Raises
    ------
    ValueError
        If ``name`` is not a chemical element.
    """
    key = name.strip().capitalize()
    if key in PENG_1996:
        return key
    if key in ("D", "T"):  # deuterium, tritium
        return "H"
    import gemmi  # lazily: only needed for elements outside the table

    z = gemmi.Element(key).atomic_number
    if z <= 0:
        raise ValueError(f"unknown chemical element {name!r}")
    return min(ELEMENTS, key=lambda e: (abs(ATOMIC_NUMBER[e] - z), -ATOMIC_NUMBER[e]))


def scattering_factor(element: str, q: np.ndarray | float) -> np.ndarray:
    """Elastic electron scattering factor f (Å) of a neutral atom at spatial frequency ``q`` (Å^-1).

    ``q = 2 sin(theta) / lambda`` is the usual Fourier-space frequency (``q = 2 s`` in Peng's notation).
    """
    a, b = PENG_1996[element_symbol(element)]
    q2 = np.asarray(q, dtype=np.float64) ** 2
    return sum(ai * np.exp(-bi * q2 / 4.0) for ai, bi in zip(a, b, strict=True))


def atom_potential_ft(element: str, q: np.ndarray, b_factor_A2: float = 0.0) -> np.ndarray:
    """Fourier transform (V Å^3) of one atom's potential at frequency ``q`` (Å^-1), with thermal factor B."""
    q = np.asarray(q, dtype=np.float64)
    return POTENTIAL_PER_SCATTERING_FACTOR * scattering_factor(element, q) * np.exp(-b_factor_A2 * q**2 / 4.0)


def projected_atom_potential(element: str, r_A: np.ndarray | float, b_factor_A2: float = 0.0) -> np.ndarray:
    """Projected potential (V Å) of one atom at in-plane distance ``r_A`` (Å) from its centre.

    The analytic 2D inverse transform of `atom_potential_ft`; used to check the gridded projections.
    """
    a, b = PENG_1996[element_symbol(element)]
    r2 = np.asarray(r_A, dtype=np.float64) ** 2
    total = np.zeros_like(r2)
    for ai, bi in zip(a, b, strict=True):
        bb = bi + b_factor_A2
        total += ai * (4.0 * math.pi / bb) * np.exp(-4.0 * math.pi**2 * r2 / bb)
    return POTENTIAL_PER_SCATTERING_FACTOR * total


def wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength (Å) at accelerating voltage ``voltage_kV``: 0.01969 Å at 300 kV."""
    v = voltage_kV * 1e3
    return 12.2642598 / math.sqrt(v * (1.0 + v / (2.0 * ELECTRON_REST_ENERGY_EV)))


def interaction_constant(voltage_kV: float) -> float:
    """Phase shift per unit projected potential, sigma (rad / (V Å)): 6.53e-4 at 300 kV.

    sigma = 2 pi / (lambda V) * (m0 c^2 + e V) / (2 m0 c^2 + e V) with the relativistic wavelength.
    """
    v = voltage_kV * 1e3
    lam = wavelength_A(voltage_kV)
    return 2.0 * math.pi / (lam * v) * (ELECTRON_REST_ENERGY_EV + v) / (2.0 * ELECTRON_REST_ENERGY_EV + v)


def _mfp(table: dict[float, float], voltage_kV: float) -> float:
    volts = sorted(table)
    return float(np.interp(voltage_kV, volts, [table[v] for v in volts]))


def inelastic_mfp_ice_A(voltage_kV: float) -> float:
    """Inelastic mean free path (Å) of vitreous ice at ``voltage_kV`` (interpolated)."""
    return _mfp(INELASTIC_MFP_ICE_A, voltage_kV)


def inelastic_mfp_carbon_A(voltage_kV: float) -> float:
    """Inelastic mean free path (Å) of amorphous carbon at ``voltage_kV`` (interpolated)."""
    return _mfp(INELASTIC_MFP_CARBON_A, voltage_kV)


def mean_inner_potential_V(composition: dict[str, float], per_A3: float) -> float:
    """Mean inner potential (V) of a material with ``per_A3`` formula units per Å^3.

    ``composition`` maps elements to counts per formula unit (water: ``{"O": 1, "H": 2}``). Computed from
    the same neutral-atom scattering factors as the particles, so particle, ice and carbon contrasts are
    consistent with each other.
    """
    f0 = sum(n * float(scattering_factor(e, 0.0)) for e, n in composition.items())
    return POTENTIAL_PER_SCATTERING_FACTOR * f0 * per_A3


# Neutral (isolated) atoms overstate the potential of condensed matter, whose bonding electrons are
# drawn into the bonds: they give vitreous ice 4.5 V and amorphous carbon 12 V, where holography and
# electron scattering measure about 3.6 V and 9-10 V. Every potential is scaled by this factor when it
# becomes a phase, which keeps the neutral-atom ratios between protein, ice and carbon.
BONDING_SCALE = 0.8

ICE_MIP_V = mean_inner_potential_V({"O": 1, "H": 2}, ICE_MOLECULES_PER_A3)  # ~4.5 V
CARBON_MIP_V = mean_inner_potential_V({"C": 1}, CARBON_ATOMS_PER_A3)  # ~12 V
# Potential transforms at q = 0 (V Å^3) of one water molecule and one carbon atom.
WATER_FT0 = POTENTIAL_PER_SCATTERING_FACTOR * float(scattering_factor("O", 0.0)
                                                    + 2 * scattering_factor("H", 0.0))
CARBON_FT0 = POTENTIAL_PER_SCATTERING_FACTOR * float(scattering_factor("C", 0.0))


def displaced_volume_A3(element: str, hydrogens: float,
                        density_g_cm3: float = PROTEIN_DENSITY_G_CM3) -> float:
    """Volume of solvent (Å^3) displaced by one atom and its hydrogens in a material of the given density."""
    mass = ATOMIC_MASS_DA[element_symbol(element)] + hydrogens * ATOMIC_MASS_DA["H"]
    return mass * A3_PER_DA_AT_UNIT_DENSITY / density_g_cm3
