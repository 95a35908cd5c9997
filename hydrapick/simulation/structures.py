"""Atomic structures for the simulator: the `Structure` container and PDB/mmCIF reading (gemmi).

A structure is a set of atoms with, per atom, an *atom type*: element, the hydrogens it carries (models
rarely contain hydrogens, so heavy atoms carry theirs implicitly) and the volume of solvent it displaces.
Coordinates are centred on the centre of mass, which is where a particle's label is placed.

The particle diameter used everywhere (labels, ``--diameter``, the manifest) is the structure's maximum
extent: the largest distance between two atom centres. That is the number a user measures in a map or
model and gives to a picker.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from . import scattering as sc

log = logging.getLogger(__name__)


class StructureError(ValueError):
    """A structure file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AtomType:
    """What the projector needs to know about an atom besides its position."""

    element: str
    hydrogens: float = 0.0  # implicit hydrogens at the atom's position
    volume_A3: float = 0.0  # solvent displaced by the atom and its hydrogens


@dataclass(frozen=True, eq=False)
class Structure:
    """Atoms of one particle, centred on its centre of mass.

    Parameters
    ----------
    name : str
        Short name (file stem or ``procedural-<kind>``).
    xyz_A : (N, 3) float32 array
        Atom positions in Å.
    atom_type : (N,) int16 array
        Index into ``types`` for every atom.
    types : tuple of AtomType
        The distinct atom types.
    b_factor_A2 : float
        One isotropic displacement factor for all atoms (Å^2).
    source : str
        File path, or a description of how it was generated.
    symmetry : str
        Point-group symmetry ("C1", "D7", "I", ...), for the record.
    """

    name: str
    xyz_A: np.ndarray
    atom_type: np.ndarray
    types: tuple[AtomType, ...]
    b_factor_A2: float = 20.0
    source: str = ""
    symmetry: str = "C1"

    @classmethod
    def from_atoms(cls, name: str, xyz_A: np.ndarray, elements, hydrogens=None, density_g_cm3=None, *,
                   b_factor_A2: float = 20.0, source: str = "", symmetry: str = "C1",
                   centre: bool = True) -> Structure:
        """Build a structure from per-atom arrays.

        Parameters
        ----------
        xyz_A : (N, 3) array of positions (Å).
        elements : (N,) sequence of element symbols.
        hydrogens : (N,) hydrogens carried by each atom; None: `scattering.IMPLICIT_HYDROGENS` by element.
        density_g_cm3 : (N,) density of the material each atom belongs to (sets the displaced solvent
            volume); None: protein density for all.
        centre : move the centre of mass to the origin.
        """
        xyz = np.asarray(xyz_A, dtype=np.float64).reshape(-1, 3)
        n = len(xyz)
        if n == 0:
            raise StructureError(f"structure {name!r} has no atoms")
        names, name_index = np.unique(np.asarray(elements).astype(str), return_inverse=True)
        element_index = np.array([sc.ELEMENTS.index(sc.element_symbol(e)) for e in names])[name_index.ravel()]
        if hydrogens is None:
            h = np.array([sc.IMPLICIT_HYDROGENS.get(e, 0.0) for e in sc.ELEMENTS])[element_index]
        else:
            h = np.broadcast_to(np.asarray(hydrogens, dtype=np.float64), (n,))
        rho = np.broadcast_to(np.asarray(sc.PROTEIN_DENSITY_G_CM3 if density_g_cm3 is None else density_g_cm3,
                                         dtype=np.float64), (n,))
        # Distinct (element, hydrogens, density) combinations become atom types; an integer key keeps
        # this fast for large structures (hydrogens and density to 1/1000).
        key = (element_index.astype(np.int64) * 10**8 + np.round(h * 1000).astype(np.int64) * 10**4
               + np.round(rho * 1000).astype(np.int64))
        uniq, inverse = np.unique(key, return_inverse=True)
        types = []
        for k in uniq:
            element = sc.ELEMENTS[int(k // 10**8)]
            hyd = (int(k) // 10**4 % 10**4) / 1000.0
            dens = (int(k) % 10**4) / 1000.0
            types.append(AtomType(element, hyd, sc.displaced_volume_A3(element, hyd, dens)))
        types = tuple(types)
        atom_type = inverse.astype(np.int16).reshape(-1)
        if centre:
            mass = np.array([sc.ATOMIC_MASS_DA[t.element] + t.hydrogens * sc.ATOMIC_MASS_DA["H"]
                             for t in types])[atom_type]
            xyz = xyz - (mass[:, None] * xyz).sum(0) / mass.sum()
        return cls(name, xyz.astype(np.float32), atom_type, types, float(b_factor_A2), source, symmetry)

    # --- derived quantities ----------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return len(self.xyz_A)

    @cached_property
    def atom_mass_Da(self) -> np.ndarray:
        per_type = np.array([sc.ATOMIC_MASS_DA[t.element] + t.hydrogens * sc.ATOMIC_MASS_DA["H"]
                             for t in self.types])
        return per_type[self.atom_type]

    @cached_property
    def mass_kDa(self) -> float:
        return float(self.atom_mass_Da.sum() / 1000.0)

    @cached_property
    def radius_of_gyration_A(self) -> float:
        w = self.atom_mass_Da
        centre = (w[:, None] * self.xyz_A).sum(0) / w.sum()
        return float(np.sqrt((w * ((self.xyz_A - centre) ** 2).sum(1)).sum() / w.sum()))

    @cached_property
    def max_radius_A(self) -> float:
        """Largest distance of an atom from the centre of mass."""
        return float(np.sqrt((self.xyz_A.astype(np.float64) ** 2).sum(1).max()))

    @cached_property
    def diameter_A(self) -> float:
        """Maximum extent: the largest distance between two atom centres (Å)."""
        return max_extent_A(self.xyz_A)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash: equal structures share cached projections."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.xyz_A).tobytes())
        h.update(np.ascontiguousarray(self.atom_type).tobytes())
        h.update(repr((self.types, round(self.b_factor_A2, 3))).encode())
        return h.hexdigest()[:16]

    def element_counts(self) -> dict[str, int]:
        counts = np.bincount(self.atom_type, minlength=len(self.types))
        out: dict[str, int] = {}
        for t, c in zip(self.types, counts, strict=True):
            out[t.element] = out.get(t.element, 0) + int(c)
        return out

    # --- transformations -----------------------------------------------------------------------------
    def transformed(self, rotation: np.ndarray | None = None, shift_A=(0.0, 0.0, 0.0)) -> Structure:
        """A copy with coordinates ``R @ x + shift`` (not re-centred)."""
        xyz = self.xyz_A.astype(np.float64)
        if rotation is not None:
            xyz = rotate_points(xyz, np.asarray(rotation, dtype=np.float64))
        xyz = xyz + np.asarray(shift_A, dtype=np.float64)
        return Structure(self.name, xyz.astype(np.float32), self.atom_type, self.types, self.b_factor_A2,
                         self.source, self.symmetry)

    def subset(self, mask: np.ndarray, name: str | None = None) -> Structure:
        """The atoms selected by ``mask`` (not re-centred)."""
        mask = np.asarray(mask)
        return Structure(name or self.name, self.xyz_A[mask], self.atom_type[mask], self.types,
                         self.b_factor_A2, self.source, self.symmetry)

    def recentred(self) -> Structure:
        w = self.atom_mass_Da
        centre = (w[:, None] * self.xyz_A.astype(np.float64)).sum(0) / w.sum()
        return self.transformed(None, -centre)

    def summary(self) -> dict:
        """Plain description for manifests and logs."""
        return {"name": self.name, "source": self.source, "symmetry": self.symmetry,
                "n_atoms": self.n_atoms, "mass_kDa": round(self.mass_kDa, 2),
                "diameter_A": round(self.diameter_A, 2),
                "radius_of_gyration_A": round(self.radius_of_gyration_A, 2),
                "b_factor_A2": round(self.b_factor_A2, 2), "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        return (f"Structure({self.name!r}, {self.n_atoms} atoms, {self.mass_kDa:.0f} kDa, "
                f"diameter {self.diameter_A:.0f} Å, {self.symmetry})")


def rotate_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points @ matrix.T`` for (N, 3) points and a (K, 3) matrix, written out per column.

    Tall, thin matrix products are written out because a BLAS call for them can be slower than the
    arithmetic by orders of magnitude when its thread pool competes with torch's.
    """
    m = np.asarray(matrix)
    if len(points) <= 64:
        return points @ m.T
    return np.stack([points[:, 0] * m[k, 0] + points[:, 1] * m[k, 1] + points[:, 2] * m[k, 2]
                     for k in range(m.shape[0])], axis=1)


def combine(parts: list[Structure], name: str, *, symmetry: str = "C1", source: str = "",
            b_factor_A2: float | None = None, centre: bool = True) -> Structure:
    """Merge structures (already placed) into one; atom types are unified."""
    types: list[AtomType] = []
    index: dict[AtomType, int] = {}
    xyz, at = [], []
    for p in parts:
        remap = np.empty(len(p.types), dtype=np.int16)
        for i, t in enumerate(p.types):
            if t not in index:
                index[t] = len(types)
                types.append(t)
            remap[i] = index[t]
        xyz.append(p.xyz_A)
        at.append(remap[p.atom_type])
    b = float(np.mean([p.b_factor_A2 for p in parts])) if b_factor_A2 is None else b_factor_A2
    s = Structure(name, np.concatenate(xyz).astype(np.float32), np.concatenate(at).astype(np.int16),
                  tuple(types), b, source, symmetry)
    return s.recentred() if centre else s


def max_extent_A(xyz: np.ndarray) -> float:
    """Largest distance between two points (via the convex hull, so large structures stay cheap)."""
    pts = np.asarray(xyz, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    if len(pts) > 50:
        from scipy.spatial import ConvexHull, QhullError

        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # flat or degenerate point sets: fall back to all points
            pass
    best = 0.0
    for start in range(0, len(pts), 2048):
        block = pts[start:start + 2048]
        d2 = ((block[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def load_structure(path: str | Path, *, assembly: str | None = "auto", chains: list[str] | None = None,
                   name: str | None = None) -> Structure:
    """Read a PDB or mmCIF model (optionally gzipped) into a `Structure`.

    Waters are removed (bulk solvent is modelled separately), only the first alternative conformation and
    the first model are kept, and non-crystallographic symmetry recorded in the file is expanded.
    Hydrogens in the file are used as they are; a model without hydrogens gets implicit ones.

    Parameters
    ----------
    path : PDB (.pdb, .ent) or mmCIF (.cif, .mmcif) file.
    assembly : "auto" builds the first biological assembly defined in the file (the deposited model
        when there is none); None uses the deposited model; a name selects that assembly.
    chains : keep only these chain names (applied before building the assembly).
    name : name to record; the file stem by default.

    Raises
    ------
    StructureError
        The file is missing, unreadable, has no atoms, or the assembly/chains do not exist.
    """
    import gemmi

    path = Path(path)
    if not path.exists():
        raise StructureError(f"structure file '{path}' does not exist")
    if path.is_dir():
        raise StructureError(f"structure file '{path}' is a directory")
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise StructureError(f"cannot read '{path}' as PDB/mmCIF: {exc}") from None
    if len(st) == 0:
        raise StructureError(f"structure file '{path}' has no models")
    st.setup_entities()
    st.remove_alternative_conformations()
    if chains:
        wanted = set(chains)
        present = [ch.name for ch in st[0]]
        missing = sorted(wanted - set(present))
        if missing:
            raise StructureError(f"'{path}' has no chain(s) {', '.join(missing)}; "
                                 f"chains: {', '.join(present)}")
        for model in st:
            for i in reversed(range(len(model))):
                if model[i].name not in wanted:
                    del model[i]
        st.assemblies.clear()  # an assembly of other chains no longer applies
    st.remove_empty_chains()
    if any(not op.given for op in st.ncs):
        st.expand_ncs(gemmi.HowToNameCopiedChain.Short)
    model = st[0]
    used_assembly = None
    if assembly is not None and st.assemblies:
        if assembly == "auto":
            chosen = st.assemblies[0]
        else:
            found = [a for a in st.assemblies if a.name == assembly]
            if not found:
                raise StructureError(f"'{path}' has no assembly {assembly!r}; assemblies: "
                                     f"{', '.join(a.name for a in st.assemblies)}")
            chosen = found[0]
        model = gemmi.make_assembly(chosen, model, gemmi.HowToNameCopiedChain.AddNumber)
        used_assembly = chosen.name
    elif assembly not in (None, "auto"):
        raise StructureError(f"'{path}' defines no assemblies (asked for {assembly!r})")

    xyz, elements, nucleic, hydrogen, bfac = [], [], [], [], []
    for chain in model:
        for res in chain:
            if res.is_water():
                continue
            info = gemmi.find_tabulated_residue(res.name)
            is_na = bool(info is not None and info.is_nucleic_acid())
            standard = bool(info is not None and (info.is_amino_acid() or is_na)) and res.name != "MSE"
            for atom in res:
                element = _element_of(atom, standard)
                p = atom.pos
                xyz.append((p.x, p.y, p.z))
                elements.append(element)
                nucleic.append(is_na)
                hydrogen.append(element == "H")
                bfac.append(atom.b_iso)
    if not xyz:
        raise StructureError(f"structure file '{path}' has no atoms (after removing waters)")
    elements_arr = np.asarray(elements)
    hydrogen_arr = np.asarray(hydrogen)
    density = np.where(np.asarray(nucleic), sc.NUCLEIC_ACID_DENSITY_G_CM3, sc.PROTEIN_DENSITY_G_CM3)
    if hydrogen_arr.any():
        hydrogens = np.zeros(len(xyz))  # explicit hydrogens: every atom stands for itself
    else:
        hydrogens = np.array([sc.IMPLICIT_HYDROGENS.get(e, 0.0) for e in elements_arr])
    known = elements_arr != ""
    if not known.all():
        log.warning("%s: %d atoms of unknown element skipped", path, int((~known).sum()))
    b = np.asarray(bfac, dtype=np.float64)
    # Refined B-factors vary between models and methods; one moderate value per structure keeps very
    # high-B loops from vanishing and B=0 models from looking sharper than any micrograph.
    b_struct = float(np.clip(np.median(b[b > 0]) if (b > 0).any() else 20.0, 10.0, 60.0))
    label = name or path.name.split(".")[0]
    source = str(path) + (f" (assembly {used_assembly})" if used_assembly else "")
    return Structure.from_atoms(label, np.asarray(xyz)[known], elements_arr[known], hydrogens[known],
                                density[known], b_factor_A2=b_struct, source=source)


def _element_of(atom, standard_residue: bool) -> str:
    """Tabulated element of a gemmi atom; "" when it cannot be known.

    Files written without the element column (CHARMM, old programs) make readers guess from the atom
    name, which turns CA into calcium and HG into mercury. In standard amino-acid and nucleotide residues
    every atom name starts with its element letter, so that letter is used there.
    """
    if standard_residue:
        letters = atom.name.lstrip("0123456789")
        if letters and letters[0] in "CNOSPH":
            return "H" if letters[0] in "HD" else letters[0]
    name = atom.element.name
    if name in ("X", ""):
        return ""
    try:
        return sc.element_symbol(name)
    except ValueError:
        return ""
