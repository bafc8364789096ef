"""Seed schemes of the job planner, and which one a store was made with.

``"v2"``: every random stream is seeded by (seed, material, ...) and duplicates
are rejected under the supercell's full space group. ``"legacy"``: the streams
of stores made before, seeded without the material, so configuration *i* drew
the same sites in every material of one supercell shape; duplicates rejected
under lattice translations only. Job ids look alike under both schemes, so a
store keeps the scheme it was made with (frames without a recorded scheme are
legacy).
"""
from __future__ import annotations

import zlib
from pathlib import Path

from ase import Atoms

SEED_SCHEMES = ("v2", "legacy")


def stream_base(seed: int, material: str, scheme: str) -> list[int]:
    """Entropy of a material's streams; the concentration index is appended to it."""
    return [seed] if scheme == "legacy" else [seed, zlib.crc32(material.encode())]


def frame_scheme(info: dict) -> str:
    """Seed scheme a frame was planned with (frames that predate the record: legacy)."""
    return str(info.get("seed_scheme", "legacy"))


def store_scheme(frames: list[Atoms], asked: str | None, where: Path) -> str:
    """The seed scheme to plan with: the store's own, or ``asked`` for a new store.

    Raises
    ------
    ValueError
        If ``asked`` is unknown or differs from the store's scheme, or the store
        mixes schemes: the same ids would name other configurations.
    """
    if asked is not None and asked not in SEED_SCHEMES:
        raise ValueError(f"seed_scheme must be one of {SEED_SCHEMES}, got {asked!r}")
    found = {frame_scheme(a.info) for a in frames}
    if len(found) > 1:
        raise ValueError(f"{where} mixes seed schemes {sorted(found)}; "
                         "generate into a new folder")
    have = next(iter(found), None)
    if have is not None and asked is not None and asked != have:
        raise ValueError(f"{where} was made with seed scheme {have!r}, not {asked!r}: "
                         "resuming under another scheme would change its jobs")
    return have or asked or "v2"
