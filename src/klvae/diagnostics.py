"""What the KL term is doing: active units, the spike-and-slab off fraction, the mutual
information I(x; z) and the aggregated posterior's KL, and the collapse verdict."""
from __future__ import annotations

import math

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


@torch.no_grad()
def mutual_information(model, x: torch.Tensor, chunk: int = 256,
                       condition: torch.Tensor | None = None) -> tuple[float, float]:
    """(I(x; z), KL(q(z) || p(z))) in nats, by the ELBO surgery of Hoffman & Johnson (2016):
    E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)), with the aggregated posterior
    q(z) = (1/N) sum_n q(z|x_n) over the N points of x: (N, *event).

    One z_i ~ q(z|x_i) per point; I = mean_i [log q(z_i|x_i) - log q(z_i)] and
    KL(q(z) || p(z)) = mean_i [log q(z_i) - log p(z_i)]. The estimate of I cannot exceed log N.

    With the class labels ``condition`` (N,) of a conditional model, the same surgery given y:
    (I(x; z | y), E_y KL(q(z|y) || p(z|y))), q(z|y) the aggregate over the points of class y; they
    still sum to the mean KL(q(z|x, y) || p(z|y))."""
    c = {} if condition is None else {"condition": condition}
    q = model.encode(x, **c)
    z = q.sample()  # (N, D)
    n = len(x)
    if condition is None:
        log_agg = torch.cat([  # log q(z_i) = logsumexp_j log q(z_i | x_j) - log N
            q.log_prob(z[i:i + chunk].unsqueeze(1)).logsumexp(1) for i in range(0, n, chunk)
        ]) - math.log(n)
    else:  # log q(z_i|y_i) = logsumexp over the j of class y_i of log q(z_i | x_j, y_j) - log N_{y_i}
        y, parts = condition.to(z.device), []
        for i in range(0, n, chunk):
            same = y[i:i + chunk, None] == y[None, :]  # (chunk, N): j of the same class as i
            log_q = q.log_prob(z[i:i + chunk].unsqueeze(1)).masked_fill(~same, -math.inf)
            parts.append(log_q.logsumexp(1) - same.sum(1).to(z.dtype).log())
        log_agg = torch.cat(parts)
    own = q.log_prob(z)
    mi = (own - log_agg).double().mean()
    agg_kl = (log_agg - model.prior(**c).log_prob(z)).double().mean()
    return float(mi), float(agg_kl)


class CollapseWarning(UserWarning):
    """The posterior has collapsed onto the prior (see :func:`collapse_verdict`)."""


REMEDIES = ("anneal the KL weight (--kl-schedule linear or cyclical), set free bits (--free-bits 0.5), "
            "lower the learning rate (--lr), or weaken the decoder")


def collapse_verdict(kl: float, active: int, latent_dim: int, min_kl: float = 0.1, min_units: int = 1) -> tuple[bool, str]:
    """(collapsed, one sentence) from an epoch's validation KL (nats) and active units: collapsed
    when the KL is below ``min_kl`` or fewer than ``min_units`` dimensions are active."""
    state = f"KL {kl:.3f} nats, {active}/{latent_dim} active units"
    if kl < min_kl or active < min_units:
        return True, f"posterior collapse: {state}; the decoder ignores z. Remedies: {REMEDIES}"
    return False, f"no collapse: {state}"
