"""Append-only extended-XYZ store: crash-safe growth of data sets.

Each record is one extxyz frame appended in a single ``write`` and flushed to
disk, so a kill loses at most the frame being written. A truncated last frame
is detected from the atom-count line and cut off by :func:`read_frames` with
``repair=True``. Files ending in ``.gz`` are read transparently (the compact
form committed to the repository).
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from ase import Atoms
from ase.io import read, write


def frame_text(atoms: Atoms) -> str:
    """One extxyz frame as text."""
    buf = io.StringIO()
    write(buf, atoms, format="extxyz", write_results=False)
    return buf.getvalue()


def append_frames(path: str | Path, frames: list[Atoms]) -> None:
    """Append frames to ``path`` durably (one write, flush, fsync)."""
    text = "".join(frame_text(a) for a in frames)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _complete_length(text: str) -> int:
    """Length of the prefix of ``text`` that holds only complete frames."""
    pos = 0
    end = len(text)
    while pos < end:
        nl = text.find("\n", pos)
        if nl < 0:
            break
        head = text[pos:nl].strip()
        if not head:
            pos = nl + 1
            continue
        try:
            n = int(head)
        except ValueError:
            break
        cursor = nl + 1
        for _ in range(n + 1):
            nl2 = text.find("\n", cursor)
            if nl2 < 0:
                return pos
            cursor = nl2 + 1
        pos = cursor
    return pos


def read_frames(path: str | Path, repair: bool = False) -> list[Atoms]:
    """All complete frames of an extxyz file (plain or ``.gz``).

    Parameters
    ----------
    repair : bool
        Cut a truncated last frame off the file (plain files only), so that
        appending can resume after a kill.
    """
    path = Path(path)
    if not path.exists():
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    good = _complete_length(text)
    if good < len(text) and text[good:].strip():
        if repair and path.suffix != ".gz":
            with open(path, "r+", encoding="utf-8") as fh:
                fh.truncate(len(text[:good].encode("utf-8")))
        text = text[:good]
    if not text.strip():
        return []
    return read(io.StringIO(text), index=":", format="extxyz")


def write_gz(path: str | Path, frames: list[Atoms]) -> None:
    """Write frames to a gzip-compressed extxyz file atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = "".join(frame_text(a) for a in frames).encode("utf-8")
    # mtime=0: the same frames give the same bytes (clean diffs, stable hashes).
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                               compresslevel=9, mtime=0) as gz:
        gz.write(text)
    os.replace(tmp, path)
