"""KL diagnostics computed from posterior statistics: active units and per-dimension KL."""
from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: unit i is active when Cov_x(E_q[z_i]) > 0.01


def unit_activity(loc: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_i|x]) per dimension from posterior means loc: (N, D) -> (D,)."""
    if loc.shape[0] < 2:
        raise ValueError("activity needs posterior means of at least 2 data points")
    return loc.double().var(0, unbiased=True).to(loc.dtype)


def active_units(loc: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies with x above ``threshold``."""
    return int((unit_activity(loc) > threshold).sum())


def off_fraction(q: Distribution) -> torch.Tensor | None:
    """Expected fraction of latent dimensions switched off per data point, (N,), for a
    spike-and-slab posterior; None for families without a spike."""
    from klvae.distributions.spike_and_slab import SpikeAndSlab, switched_off_fraction

    base = q.base_dist if isinstance(q, Independent) else q
    return switched_off_fraction(q) if isinstance(base, SpikeAndSlab) else None
