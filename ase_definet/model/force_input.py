"""Force-informed input of DefiNet (issue #30, lever 6).

The oracle's forces at the *unrelaxed* structure say, atom by atom, where the
relaxation starts to go; the relaxed displacement is then, to first order, a
local inverse-stiffness map of them (``u ≈ K⁻¹ F``), which message passing can
learn. The forces enter as

* an initial vector state ``v_i = F_i ⊗ φ(|F_i|)``: each channel is the
  force times a learned function of its norm (a per-channel weight plus a
  radial correction), which is equivariant because only the invariant
  ``|F|`` multiplies the vector, and
* a scalar input ``ψ(|F_i|)`` added to the element/marker embedding.

``φ`` and ``ψ`` are linear maps of Gaussians in ``s = |F| / (|F| + F_0)``:
the squashing maps forces of any size into ``[0, 1)``, so a 10 eV/Å force on
an atom next to a vacancy does not fall off the end of a fixed basis, while
the usual 0.01-1 eV/Å range gets most of the resolution. Vacancy
placeholders are not atoms: their force is set to zero here whatever the
input holds.
"""
from __future__ import annotations

import torch
from torch import nn

#: Force scale (eV/Å) of the squashing ``s = |F| / (|F| + F_0)``.
FORCE_SCALE = 1.0

#: Gaussians on ``s ∈ [0, 1]``.
NUM_FORCE_BASIS = 16


class ForceEmbedding(nn.Module):
    """Scalar and vector node inputs from per-atom forces.

    Parameters
    ----------
    hidden : int
        Feature width F of the network.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, 1.0, NUM_FORCE_BASIS),
                             persistent=False)
        self.gamma = 0.5 * (NUM_FORCE_BASIS - 1) ** 2
        self.scalar = nn.Linear(NUM_FORCE_BASIS, hidden)
        self.vector = nn.Linear(NUM_FORCE_BASIS, hidden)

    def forward(self, forces: torch.Tensor, real: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dx (N, F), v (N, 3, F))`` from forces ``(N, 3)`` (eV/Å).

        ``real`` (N,) bool marks the real atoms; placeholders get zero force.
        """
        f = forces.to(dtype) * real.to(dtype)[:, None]
        norm = torch.linalg.vector_norm(f, dim=-1)
        s = norm / (norm + FORCE_SCALE)
        basis = torch.exp(-self.gamma * (s[:, None] - self.centers.to(dtype)) ** 2)
        return self.scalar(basis), f[:, :, None] * self.vector(basis)[:, None, :]
