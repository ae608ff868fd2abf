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


REMEDIES = ("anneal the KL weight (--kl-schedule linear or cyclical), set free bits (--free-bits 0.5), "
            "lower the learning rate (--lr), or weaken the decoder")


def collapse_verdict(kl: float, active: int, latent_dim: int, min_kl: float = 0.1, min_units: int = 1) -> tuple[bool, str]:
    """(collapsed, one sentence) from an epoch's validation KL (nats) and active units: collapsed
    when the KL is below ``min_kl`` or fewer than ``min_units`` dimensions are active."""
    state = f"KL {kl:.3f} nats, {active}/{latent_dim} active units"
    if kl < min_kl or active < min_units:
        return True, f"posterior collapse: {state}; the decoder ignores z. Remedies: {REMEDIES}"
    return False, f"no collapse: {state}"
