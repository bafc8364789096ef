"""Host symmetry operations applied to structures, independently of the site tables."""
from __future__ import annotations

import warnings

import numpy as np
import spglib
from ase import Atoms

from ase_definet.data.defects import apply_defects
from ase_definet.data.sample import Sample


def host_operations(host: Atoms) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rotation, translation) in fractional coordinates, from spglib directly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING.*")
        ops = spglib.get_symmetry((host.cell.array, host.get_scaled_positions(),
                                   host.numbers), symprec=1e-5)
    return list(zip(ops["rotations"], ops["translations"]))


def pick(ops, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The first operation of a kind: a proper rotation about z, a mirror, a translation.

    A rotation and a mirror are taken with a non-lattice translation part, so the
    image is not the configuration shifted by a lattice vector.
    """
    for rot, trans in ops:
        ident = np.array_equal(rot, np.eye(3, dtype=int))
        det = round(np.linalg.det(rot))
        if kind == "translation" and ident and np.abs(trans).sum() > 1e-6:
            return rot, trans
        if kind == "rotation" and not ident and det == 1 and rot[2, 2] == 1:
            return rot, trans
        if kind == "mirror" and det == -1:
            return rot, trans
    raise LookupError(kind)


def image(atoms: Atoms, rot: np.ndarray, trans: np.ndarray) -> Atoms:
    """``atoms`` moved by the operation ``x -> R x + t`` (fractional), wrapped."""
    out = atoms.copy()
    frac = atoms.get_scaled_positions(wrap=False) @ rot.T + trans
    frac[:, :2] %= 1.0
    out.set_scaled_positions(frac)
    return out


def fingerprint(atoms: Atoms) -> frozenset:
    """Species and wrapped fractional positions, rounded: equal for equal structures."""
    frac = np.round(atoms.get_scaled_positions(wrap=True), 4) % 1.0
    return frozenset((int(z), *map(float, f)) for z, f in zip(atoms.numbers, frac))


def defect_sample(host: Atoms, sites, defects, info: dict, atoms: Atoms | None = None
                  ) -> Sample:
    """A sample of ``host`` with the defects applied (relaxed = unrelaxed)."""
    atoms = apply_defects(host, sites, defects) if atoms is None else atoms
    clean = host.copy()
    for key in ("cell_index", "basis_index"):
        clean.arrays.pop(key, None)
    return Sample(atoms, atoms.get_positions(), clean, dict(info))


#: The MoS2 site roles in WSe2 (same structure, the same site order).
WSE2_OF = {"Mo": "W", "S": "Se", "W": "Mo", "Se": "S"}


def twin_population(per_stratum: int = 20, planted: int = 4, n: int = 4):
    """A high-density set with twins planted on purpose, and the planted groups.

    MoS2 and WSe2 n×n at 10 and 12.5 % (``per_stratum`` distinct configurations
    each, full-symmetry distinct). For the first ``planted`` MoS2
    configurations of each concentration: a rotated, a mirrored and a
    translated copy (new ids), and the same sites in WSe2 (a pattern twin,
    new id). One legacy-style id pair (``MoS2_nxn-high-...`` and ``WSe2_...``,
    different sites) is tied by its ids only.

    Returns
    -------
    samples : list of Sample
    groups : list of list of int
        Indices that must share a split.
    """
    from ase_definet.data.defects import generate_configs
    from ase_definet.data.hosts import build_host
    hosts = {m: build_host(m, n) for m in ("MoS2", "WSe2")}
    ops = host_operations(hosts["MoS2"])
    moves = [pick(ops, kind) for kind in ("rotation", "mirror", "translation")]
    sc = f"{n}x{n}"
    samples, groups = [], []

    def add(material, sites, defects, sid, frac, atoms=None, **extra):
        info = {"id": sid, "material": material, "density": "high", "fraction": frac,
                "supercell": sc, **extra}
        samples.append(defect_sample(hosts[material], sites, defects, info, atoms))
        return len(samples) - 1

    for frac in (0.10, 0.125):
        tag = f"c{round(frac * 1000):03d}"
        for m_idx, material in enumerate(("MoS2", "WSe2")):
            cfgs = generate_configs(hosts[material], "high", per_stratum, seed=7 + m_idx,
                                    fractions=(frac,))
            for k, c in enumerate(cfgs):
                i = add(material, c.sites, c.defects, f"{material}-{tag}-{k}", frac)
                if material != "MoS2" or k >= planted:
                    continue
                group = [i]
                base = samples[i].atoms
                for j, (rot, trans) in enumerate(moves):
                    group.append(add(material, c.sites, c.defects, f"MoS2-{tag}-{k}-op{j}",
                                     frac, atoms=image(base, rot, trans)))
                other = tuple((kind, WSE2_OF[a], WSE2_OF.get(b)) for kind, a, b in c.defects)
                group.append(add("WSe2", c.sites, other, f"WSe2-{tag}-{k}-twin", frac))
                groups.append(group)
    # legacy ids equal but for the material, on different sites
    pair = []
    for material, seed in (("MoS2", 1), ("WSe2", 2)):
        c = next(generate_configs(hosts[material], "high", 1, seed=seed, fractions=(0.1,)))
        pair.append(add(material, c.sites, c.defects, f"{material}_{sc}-high-c100-00099",
                        0.1, seed=0))
    groups.append(pair)
    return samples, groups
