"""Structures for the simulator: PDB/mmCIF reading, procedural particles, symmetry."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from hydrapick.simulation import (
    KINDS,
    StructureError,
    load_structure,
    procedural_structure,
    symmetric_assembly,
    symmetry_operators,
)
from hydrapick.simulation.structures import max_extent_A
from hydrapick.simulation.symmetry import axis_rotation, random_rotations

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
needs_shared = pytest.mark.skipif(not (SHARED / "4hhb.pdb").exists(), reason="../shared not available")


@pytest.mark.parametrize("group,order", [("C1", 1), ("C7", 7), ("D3", 6), ("T", 12), ("O", 24), ("I", 60)])
def test_symmetry_operators_form_the_group(group, order):
    ops = symmetry_operators(group)
    assert len(ops) == order
    assert np.allclose(ops[0], np.eye(3))
    for op in ops:
        assert np.allclose(op @ op.T, np.eye(3), atol=1e-9) and np.linalg.det(op) == pytest.approx(1.0)
    # Closed under composition.
    for a in ops[: min(order, 6)]:
        for b in ops:
            assert np.min(np.abs(ops - a @ b).reshape(order, -1).max(1)) < 1e-6
    with pytest.raises(ValueError, match="unknown symmetry"):
        symmetry_operators("Q5")


def test_random_rotations_are_uniform():
    r = random_rotations(20000, np.random.default_rng(0))
    assert np.allclose(np.einsum("nij,nkj->nik", r, r), np.eye(3), atol=1e-9)
    assert np.abs(r.mean(0)).max() < 0.02  # E[R] = 0 for the uniform (Haar) distribution
    assert (r[:, 2, 2] ** 2).mean() == pytest.approx(1 / 3, abs=0.01)


def test_max_extent():
    pts = np.array([[0, 0, 0], [3, 4, 0], [1, 1, 1]], float)
    assert max_extent_A(pts) == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    cloud = rng.standard_normal((500, 3))
    brute = np.sqrt(((cloud[:, None] - cloud[None]) ** 2).sum(-1)).max()
    assert max_extent_A(cloud) == pytest.approx(brute)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ribosome"])
def test_procedural_kinds(kind):
    mass = {"icosahedral": 700.0, "octahedral": 400.0, "tetrahedral": 250.0}.get(kind, 150.0)
    st = procedural_structure(kind, 3, mass_kDa=mass)
    assert st.n_atoms > 1000
    assert 0.5 * mass < st.mass_kDa < 2.5 * mass, st
    assert np.abs(st.xyz_A.mean(0)).max() < 10.0  # centred (mass-weighted centre at the origin)
    assert st.diameter_A > 2 * st.radius_of_gyration_A
    counts = st.element_counts()
    assert counts["C"] > counts["N"] > 0 and counts["O"] > 0


def test_procedural_is_reproducible_and_varied():
    a = procedural_structure("globular", 8, mass_kDa=100)
    b = procedural_structure("globular", 8, mass_kDa=100)
    c = procedural_structure("globular", 9, mass_kDa=100)
    assert np.array_equal(a.xyz_A, b.xyz_A) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    with pytest.raises(ValueError, match="unknown procedural kind"):
        procedural_structure("blob", 1)


def test_procedural_ribosome_has_rna():
    st = procedural_structure("ribosome", 2, mass_kDa=1500)
    counts = st.element_counts()
    assert counts.get("P", 0) > 1000  # one phosphate per nucleotide
    assert 700 < st.mass_kDa < 2500


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_procedural_ribosome_is_compact(seed):
    # The small subunit lies on the large one's face with its long axis across the interface, so no
    # principal extent is much longer than the next (end-to-end subunits gave 1.7-1.8x, and a particle
    # whose stated diameter is twice its width).
    st = procedural_structure("ribosome", seed)
    xyz = st.xyz_A - st.xyz_A.mean(0)
    _, _, axes = np.linalg.svd(xyz, full_matrices=False)
    along = xyz @ axes.T
    extent = np.percentile(along, 99.5, axis=0) - np.percentile(along, 0.5, axis=0)
    assert extent[0] / extent[1] < 1.4
    assert st.diameter_A < 1.6 * extent[1]


@pytest.mark.parametrize("group", ["C5", "D3", "T"])
def test_symmetric_assembly_has_its_symmetry(group):
    sub = procedural_structure("globular", 4, mass_kDa=40)
    asm = symmetric_assembly(sub, group, 1)
    ops = symmetry_operators(group)
    assert asm.n_atoms == len(ops) * sub.n_atoms
    assert asm.symmetry == group
    tree = cKDTree(asm.xyz_A)
    for op in ops[1:4]:
        d, _ = tree.query(asm.xyz_A @ op.T.astype(np.float32), k=1)
        assert d.max() < 1e-2
    # Copies are packed, not overlapping and not far apart.
    copies = np.array_split(asm.xyz_A, len(ops))
    d, _ = cKDTree(copies[0]).query(np.concatenate(copies[1:]), k=1)
    assert 2.5 < d.min() < 6.0


def test_procedural_with_explicit_symmetry():
    st = procedural_structure("cyclic", 2, mass_kDa=200, symmetry="C6")
    assert st.symmetry == "C6"
    rot = axis_rotation((0, 0, 1), 2 * np.pi / 6).astype(np.float32)
    d, _ = cKDTree(st.xyz_A).query(st.xyz_A @ rot.T, k=1)
    assert d.max() < 1e-2


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(StructureError, match="does not exist"):
        load_structure(tmp_path / "nothing.pdb")
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\nloop_\n_atom_site.id\n")
    with pytest.raises(StructureError, match="bad.cif"):
        load_structure(bad)


@needs_shared
def test_load_4hhb():
    st = load_structure(SHARED / "4hhb.pdb")
    assert st.n_atoms == 4558  # waters removed
    assert st.mass_kDa == pytest.approx(64.5, rel=0.05)  # haemoglobin tetramer with its hydrogens
    assert 60 < st.diameter_A < 80
    assert st.element_counts()["Fe"] == 4
    chain = load_structure(SHARED / "4hhb.pdb", chains=["A"])
    assert chain.mass_kDa == pytest.approx(st.mass_kDa / 4, rel=0.15)
    with pytest.raises(StructureError, match="no chain"):
        load_structure(SHARED / "4hhb.pdb", chains=["Z"])
    tetramer = symmetric_assembly(chain, "D2", 0)
    assert tetramer.n_atoms == 4 * chain.n_atoms


@needs_shared
def test_load_mmcif_without_element_column_guess():
    st = load_structure(SHARED / "adk_open.pdb")  # CHARMM file: no element column
    counts = st.element_counts()
    assert counts.get("Hg", 0) == 0 and counts["C"] > 500  # CA is carbon, HG is hydrogen here
    cif = load_structure(SHARED / "4v1w.cif")
    assert cif.n_atoms > 30000 and 120 < cif.diameter_A < 150  # apoferritin 24-mer
