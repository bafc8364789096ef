"""What a multi-sample reader returns: :class:`LoadResult`."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Iterator

from ..sample import Sample

PathLike = str | os.PathLike


@dataclass
class LoadResult:
    """What a reader loaded, what it skipped and why.

    Attributes
    ----------
    samples : list of Sample
        The samples that loaded.
    skipped : list of (str, str)
        (name, reason) of each sample kept out; the reason names the file.
    duplicates : list of str
        Ids that the source listed more than once (each loaded once).
    """

    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def extend(self, other: LoadResult) -> LoadResult:
        """Append another result's samples, skips and duplicates; returns self."""
        self.samples += other.samples
        self.skipped += other.skipped
        self.duplicates += other.duplicates
        return self

    @property
    def not_converged(self) -> int:
        """Number of samples kept out because the oracle did not converge."""
        return sum(reason.startswith("not converged") for _, reason in self.skipped)

    def summary(self, max_reasons: int = 5) -> str:
        """A few lines for logs: counts per group, skips with reasons, duplicates."""
        groups = Counter(s.group for s in self.samples)
        parts = ", ".join(f"{g} {n}" for g, n in sorted(groups.items()))
        lines = [f"loaded {len(self.samples)} samples" + (f" ({parts})" if parts else "")]
        if self.skipped:
            other = len(self.skipped) - self.not_converged
            lines.append(f"skipped {len(self.skipped)}: {self.not_converged} not "
                         f"converged, {other} unreadable or inconsistent")
            shown = [(n, r) for n, r in self.skipped if not r.startswith("not converged")]
            lines += [f"  {n}: {r}" for n, r in shown[:max_reasons]]
            if len(shown) > max_reasons:
                lines.append(f"  ... and {len(shown) - max_reasons} more")
        if self.duplicates:
            head = ", ".join(self.duplicates[:max_reasons])
            more = "" if len(self.duplicates) <= max_reasons else ", ..."
            lines.append(f"{len(self.duplicates)} ids listed more than once, each "
                         f"loaded once: {head}{more}")
        return "\n".join(lines)
