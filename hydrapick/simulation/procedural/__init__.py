"""Procedural pseudo-atomic particles, so the simulator needs no structure files.

Particles are built the way proteins are organised, so that their projections have protein-like
texture at every pixel size, not just the right outline:

* a *domain* is a bumpy ellipsoid filled with layers 10 Å apart; each layer is a row of alpha-helices
  (rods 10 Å apart, 1.5 Å rise, 100 degrees per residue) or a beta-sheet (strands 4.8 Å apart, 3.3 Å
  rise, pleated), successive layers twisted as in real folds, plus surface loops;
* every residue gets its backbone atoms (N, CA, C, O) and a side chain whose length and elements follow
  the natural amino-acid frequencies;
* RNA is built as A-form double helices (2.8 Å rise, 32.7 degrees twist, phosphates at 8.9 Å radius);
* domains are packed into compact, elongated, flat or irregular particles, point-group assemblies
  (Cn, Dn, T, O, I), rings, membrane proteins in a detergent micelle, and two-subunit ribonucleoprotein
  particles the size and composition of ribosomes.

Masses span ~50 kDa to several MDa. Everything is drawn from the generator passed in, so a seed fixes
the particle.

Modules: ``catalogue`` (the kinds, their mass ranges and `procedural_structure`), ``atoms`` (the atom
accumulator and geometry shared by every builder: unit vectors, bumpy ellipsoid envelopes), ``protein``
(domains of helices and sheets, residues, packing domains together), ``ribosome`` (A-form RNA helices
and ribonucleoprotein subunits) and ``membrane`` (transmembrane bundles in a micelle or nanodisc).
"""

from .catalogue import KIND_MASS_KDA, KIND_WEIGHTS, KINDS, procedural_structure

__all__ = ["KINDS", "KIND_MASS_KDA", "KIND_WEIGHTS", "procedural_structure"]
