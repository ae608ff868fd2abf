"""What the KL term is doing: active units, the spike-and-slab off fraction, the mutual
information I(x; z) and the aggregated posterior's KL, and the collapse verdict."""
from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Independent, Normal

from klvae.errors import KlvaeWarning

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: unit i is active when Cov_x(E_q[z_i]) > 0.01


def unit_activity(loc: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_i|x]) per dimension from posterior means loc: (N, D) -> (D,)."""
    if loc.shape[0] < 2:
        raise ValueError("activity needs posterior means of at least 2 data points")
    if loc.shape[-1] == 0:  # no z (a language model)
        return loc.new_zeros(0)
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


def _normal_pairwise(base: Normal, z: torch.Tensor) -> torch.Tensor:
    """log N(z_i; loc_j, scale_j) summed over d, (M, N), by two matrix products in float64:
    sum_d (z_id - m_jd)^2 w_jd = z^2 @ w^T - 2 z @ (m w)^T + sum_d m_jd^2 w_jd, w = 1 / scale^2."""
    z, loc, scale = z.double(), base.loc.double(), base.scale.double()
    w = scale.pow(-2)
    quad = z.square() @ w.T - 2 * z @ (loc * w).T + (loc.square() * w).sum(-1)
    return (-0.5 * quad - scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)).to(base.loc.dtype)


PAIRWISE = {Normal: _normal_pairwise}  # base family of a diagonal posterior -> its fast pairwise density


def pairwise_log_prob(q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_j) for every sample z_i: (M, D) and every posterior j of q's batch (N,): (M, N).
    A posterior Independent over one axis of a base in :data:`PAIRWISE` (the diagonal Gaussian)
    takes matrix products; any other family broadcasts its ``log_prob``."""
    base = q.base_dist if isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1 else None
    fast = PAIRWISE.get(type(base)) if base is not None and len(q.batch_shape) == 1 else None
    return fast(base, z) if fast is not None else q.log_prob(z.unsqueeze(1))


PAIR_BUDGET = 2**25  # elements of one chunk's pairwise top-down walks (a hierarchy's log q(z_i | x_j))


@torch.no_grad()
def mutual_information(model, x: torch.Tensor, chunk: int = 256,
                       condition: torch.Tensor | None = None) -> tuple[float, float]:
    """(I(x; z), KL(q(z) || p(z))) in nats, by the ELBO surgery of Hoffman & Johnson (2016):
    E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)), with the aggregated posterior
    q(z) = (1/N) sum_n q(z|x_n) over the N points of x: (N, *event).

    One z_i ~ q(z|x_i) per point; I = mean_i [log q(z_i|x_i) - log q(z_i)] and
    KL(q(z) || p(z)) = mean_i [log q(z_i) - log p(z_i)]. The estimate of I cannot exceed log N.

    With the class labels ``condition`` (N,) of a conditional model (or its attributes (N, F)), the
    same surgery given y:
    (I(x; z | y), E_y KL(q(z|y) || p(z|y))), q(z|y) the aggregate over the points of class y; they
    still sum to the mean KL(q(z|x, y) || p(z|y))."""
    c = {} if condition is None else {"condition": condition}
    q = model.encode(x, **c)
    z = q.sample()  # (N, D)
    n = len(x)
    pair = getattr(model, "pair_elements", None)  # a hierarchy: the elements of one top-down walk per pair
    if pair:
        chunk = max(1, min(chunk, PAIR_BUDGET // (n * pair)))
    y = None if condition is None else condition.to(z.device)
    parts = []
    for i in range(0, n, chunk):  # log q(z_i) = logsumexp_j log q(z_i | x_j) - log N (over class y_i's j)
        log_q = pairwise_log_prob(q, z[i:i + chunk])  # (chunk, N)
        if y is None:
            parts.append(log_q.logsumexp(1) - math.log(n))
        else:
            same = y[i:i + chunk, None] == y[None, :]  # (chunk, N): j of the same class (attributes) as i
            same = same.all(-1) if same.dim() == 3 else same
            parts.append(log_q.masked_fill(~same, -math.inf).logsumexp(1) - same.sum(1).to(z.dtype).log())
    log_agg = torch.cat(parts)
    own = q.log_prob(z)
    mi = (own - log_agg).double().mean()
    agg_kl = (log_agg - model.prior(**c).log_prob(z)).double().mean()
    return float(mi), float(agg_kl)


class CollapseWarning(KlvaeWarning):
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
