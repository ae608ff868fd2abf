"""The spike-and-slab latent of Variational Sparse Coding (Tonolini, Jensen & Murray-Smith 2020).

Each scalar element is switched off (exactly 0, the spike) with probability 1 - spike, or on and
drawn from the slab N(loc, scale^2) with probability spike:

    z = s * (loc + scale * eps),   s ~ Bernoulli(spike),   eps ~ N(0, 1).

Events are scalars; wrap in ``Independent(..., 1)`` for a latent vector z: (..., D).

Densities are taken with respect to the mixed base measure nu = delta_0 + Lebesgue (a unit point
mass at zero plus the usual measure on R), so that

    log q(z) = log(1 - spike)                           if z == 0 exactly,
    log q(z) = log(spike) + log N(z; loc, scale^2)      otherwise.

Every distribution in this file uses the same nu, so log q(z) - log p(z) is a proper log density
ratio (a Radon-Nikodym derivative) wherever both sides are spike-and-slab or Gaussian: importance
weights and Monte Carlo KLs built from *hard* samples (``sample``, or ``rsample`` with
``straight_through=True``) are exact in expectation. Relaxed samples are never exactly 0, so
``log_prob`` scores them as slab values; do not use them for importance weights.

KL divergences registered here (derivations next to each):
  * SpikeAndSlab || SpikeAndSlab: closed form, finite for spike in [0, 1];
  * SpikeAndSlab || Normal: +inf unless spike == 1 (q puts mass on {0}, p does not);
  * Normal || SpikeAndSlab: KL(Normal || slab) - log(spike of p).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch.distributions import Distribution, Independent, Normal, constraints, kl_divergence
from torch.distributions.kl import register_kl
from torch.distributions.utils import broadcast_all

DEFAULT_TEMPERATURE = 0.1  # why: gates are mostly hard (|s - round(s)| < 0.1 for ~89% of draws
# at spike = 0.5) while d s / d logit(spike) = s (1 - s) / T stays bounded by 1 / (4 T) = 2.5.


class SpikeAndSlab(Distribution):
    """Elementwise spike-and-slab: 0 with probability 1 - spike, else N(loc, scale^2).

    Args:
        loc: slab mean, any shape (broadcast with the others).
        scale: slab standard deviation, > 0.
        spike: probability in [0, 1] that the element is ON (drawn from the slab); written gamma
            in the VSC paper (alpha for the prior). The end points are allowed: spike = 1 is the
            Gaussian N(loc, scale^2), spike = 0 the point mass at 0.
        temperature: T > 0 of the binary Concrete relaxation used by ``rsample``; lower is closer
            to a hard gate and gives higher-variance gradients (default 0.1, see
            ``DEFAULT_TEMPERATURE``).
        straight_through: when True, ``rsample`` returns hard values (exact zeros where off)
            whose gradients are those of the relaxed gate (Bengio et al. 2013); use it when
            ``rsample`` draws feed ``log_prob`` (Monte Carlo KL, IWAE weights).

    batch_shape: the broadcast shape of loc, scale and spike; event_shape: ().
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "spike": constraints.unit_interval}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, spike, temperature: float = DEFAULT_TEMPERATURE,
                 straight_through: bool = False, validate_args: bool | None = None):
        number = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
        one_element = isinstance(temperature, torch.Tensor) and temperature.numel() == 1
        value = float(temperature) if number or one_element else math.nan
        if not 0 < value < math.inf:
            raise ValueError(f"temperature must be a positive number; got {temperature!r}")
        self.loc, self.scale, self.spike = broadcast_all(loc, scale, spike)
        self.temperature = value
        self.straight_through = bool(straight_through)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.spike = self.spike.expand(batch_shape)
        new.temperature = self.temperature
        new.straight_through = self.straight_through
        super(SpikeAndSlab, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def slab(self) -> Normal:
        """The ON component N(loc, scale^2), batch_shape as this distribution's."""
        return Normal(self.loc, self.scale, validate_args=False)

    @property
    def off_probability(self) -> torch.Tensor:
        """1 - spike: the probability that an element is exactly 0; shape batch_shape."""
        return 1 - self.spike

    @property
    def mean(self) -> torch.Tensor:
        return self.spike * self.loc

    @property
    def variance(self) -> torch.Tensor:
        # E[z^2] - E[z]^2 = spike (scale^2 + loc^2) - spike^2 loc^2
        return self.spike * self.scale**2 + self.spike * (1 - self.spike) * self.loc**2

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Hard draws: exact zeros where switched off; shape (*sample_shape, *batch_shape)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            on = torch.bernoulli(self.spike.expand(shape))
            slab = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn_like(on)
            return torch.where(on > 0, slab, torch.zeros_like(slab))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draws, differentiable in loc, scale and spike.

        The gate is the binary Concrete / Gumbel-sigmoid (Maddison et al. 2017; Jang et al. 2017):
        s = sigmoid((logit(spike) + log u - log(1 - u)) / T), u ~ U(0, 1), which tends to the hard
        gate 1[logit(spike) + log u - log(1 - u) > 0] ~ Bernoulli(spike) as T -> 0. (The VSC paper
        relaxes the same step function with a steep sigmoid of a uniform threshold.) The slab is
        loc + scale * eps. With ``straight_through`` the forward value uses the hard gate.
        """
        shape = self._extended_shape(sample_shape)
        dtype, device = self.loc.dtype, self.loc.device
        finfo = torch.finfo(dtype)
        u = torch.rand(shape, dtype=dtype, device=device).clamp(finfo.tiny, 1 - finfo.eps)
        noise = torch.log(u) - torch.log1p(-u)  # standard logistic
        spike = self.spike.clamp(finfo.tiny, 1 - finfo.eps)  # finite logit at spike = 0 or 1
        logits = (torch.log(spike) - torch.log1p(-spike)).expand(shape) + noise
        gate = torch.sigmoid(logits / self.temperature)
        if self.straight_through:
            hard = (logits > 0).to(dtype)
            gate = hard + (gate - gate.detach())  # value: hard gate; gradient: relaxed gate
        eps = torch.randn(shape, dtype=dtype, device=device)
        return gate * (self.loc.expand(shape) + self.scale.expand(shape) * eps)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log density w.r.t. delta_0 + Lebesgue (see the module docstring); shape broadcast of
        value and batch_shape."""
        if self._validate_args:
            self._validate_sample(value)
        off = torch.log1p(-self.spike)
        on = torch.log(self.spike) + self.slab.log_prob(value)
        return torch.where(value == 0, off, on)

    def entropy(self) -> torch.Tensor:
        """-E[log q(z)] w.r.t. the same mixed measure: H(Bernoulli(spike)) + spike * H(slab)."""
        gamma = self.spike
        bernoulli = -torch.special.xlogy(gamma, gamma) - torch.special.xlogy(1 - gamma, 1 - gamma)
        return bernoulli + gamma * self.slab.entropy()


def switched_off_fraction(q: Distribution) -> torch.Tensor:
    """Expected fraction of latent dimensions that are exactly 0 in one draw of q.

    q: ``Independent(SpikeAndSlab, n)`` -> the mean of 1 - spike over its n event axes, shape
    q.batch_shape (e.g. (N,) for an encoder output over z: (N, D)); a bare ``SpikeAndSlab`` -> 1 -
    spike elementwise (average it yourself over the axes that are latent dimensions).
    """
    base, axes = q, 0
    if isinstance(q, Independent):
        base, axes = q.base_dist, q.reinterpreted_batch_ndims
    if not isinstance(base, SpikeAndSlab):
        raise TypeError(f"q must be a SpikeAndSlab or an Independent over one; got {type(q).__name__}")
    off = base.off_probability
    return off.mean(dim=tuple(range(-axes, 0))) if axes else off


@register_kl(SpikeAndSlab, SpikeAndSlab)
def _kl_spike_and_slab_spike_and_slab(q: SpikeAndSlab, p: SpikeAndSlab) -> torch.Tensor:
    # Derivation (the spike-and-slab KL of Tonolini, Jensen & Murray-Smith 2020, VSC, Sec. 3,
    # there with a N(0, 1) prior slab). With nu = delta_0 + Lebesgue, dq/dnu is 1 - g at 0 and
    # g N(z; mu, s^2) elsewhere (likewise p with a, N(z; m, t^2)). Then
    #   KL = (1 - g) log((1 - g) / (1 - a)) + int g N_q log(g N_q / (a N_p)) dz
    #      = (1 - g) log((1 - g) / (1 - a)) + g log(g / a) + g KL(N(mu, s^2) || N(m, t^2)),
    # the Bernoulli KL plus the spike-weighted Gaussian KL. xlogy gives 0 log 0 = 0, so the value
    # stays finite as g -> 0 or 1 (it is +inf only where q is on or off with p unable to be).
    g, a = q.spike, p.spike
    bernoulli = (torch.special.xlogy(g, g) - torch.special.xlogy(g, a)
                 + torch.special.xlogy(1 - g, 1 - g) - torch.special.xlogy(1 - g, 1 - a))
    slab = kl_divergence(q.slab, p.slab)
    return bernoulli + torch.where(g > 0, g * slab, torch.zeros_like(slab))


@register_kl(SpikeAndSlab, Normal)
def _kl_spike_and_slab_normal(q: SpikeAndSlab, p: Normal) -> torch.Tensor:
    # q puts mass 1 - g on the single point {0}, to which p gives probability 0, so q is not
    # absolutely continuous w.r.t. p and KL = +inf whenever g < 1 (the convention torch uses for
    # support mismatches). At g = 1, q is N(mu, s^2) and the KL is the Gaussian one.
    slab = kl_divergence(q.slab, p)
    return torch.where(q.spike < 1, torch.full_like(slab, float("inf")), slab)


@register_kl(Normal, SpikeAndSlab)
def _kl_normal_spike_and_slab(q: Normal, p: SpikeAndSlab) -> torch.Tensor:
    # q gives {0} probability 0, so w.r.t. nu = delta_0 + Lebesgue, dq/dnu = N_q off 0 and
    # dp/dnu = a N_p there: KL = E_q[log N_q(z) - log a - log N_p(z)] = KL(N_q || N_p) - log a.
    return kl_divergence(q, p.slab) - torch.log(p.spike)
