"""The Power Spherical distribution on the unit sphere S^{d-1} (De Cao & Aziz 2020, "The Power
Spherical distribution"): a von Mises-Fisher look-alike whose samples need no rejection.

p(x; loc, kappa) = N(kappa, d)^{-1} (1 + <loc, x>)^kappa w.r.t. the surface measure, with
alpha = (d-1)/2 + kappa, beta = (d-1)/2 and

    N(kappa, d) = 2^{alpha+beta} pi^beta Gamma(alpha) / Gamma(alpha+beta)

(substitute t = <loc, x> = 2u - 1 so that (1 + t)^kappa (1 - t^2)^{(d-3)/2} dt
becomes a Beta(alpha, beta) kernel, times |S^{d-2}| = 2 pi^beta / Gamma(beta)). A draw is
w = 2u - 1 with u ~ Beta(alpha, beta), v uniform on S^{d-2}, y = [w, sqrt(1 - w^2) v], and an
orthogonal map taking e1 to loc. Beta draws carry torch's implicit reparameterisation gradients.

kappa-only functions (lgamma, digamma) are evaluated in float64 and cast back: at kappa = 1e5
their float32 values lose ~0.05 nats to cancellation.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Dirichlet, Distribution, constraints
from torch.distributions.kl import register_kl

from klvae.distributions.sphere import rotate_north_to
from klvae.distributions.uniform import HypersphericalUniform, log_sphere_area
from klvae.errors import KlvaeError

__all__ = ["PowerSpherical"]

_UNIT_NORM_TOL = 1e-3  # | |loc| - 1 | allowed by argument validation (float32 normalisation is good to ~1e-7)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float64 (except on MPS, which has none): kappa-only special functions are cheap."""
    return x if x.device.type == "mps" else x.to(torch.float64)


class PowerSpherical(Distribution):
    """Power Spherical on S^{d-1}: density proportional to (1 + <loc, x>)^scale.

    loc: (..., d) unit vectors, d >= 2 (the mode); scale: (...) concentration kappa > 0 (a float
    is broadcast). batch_shape = broadcast of loc.shape[:-1] and scale.shape, event_shape = (d,).
    ``rsample`` is reparameterised in both; ``mean`` = E[<x, loc>] loc with
    E[<x, loc>] = (alpha - beta)/(alpha + beta) = kappa / (kappa + d - 1).
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    support = constraints.real_vector  # points with unit norm
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, validate_args: bool | None = None):
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1 or loc.shape[-1] < 2:
            shape = tuple(loc.shape) if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise KlvaeError(f"PowerSpherical loc must be a tensor of shape (..., d) with d >= 2; got {shape}")
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape)
        except RuntimeError:
            raise KlvaeError(
                f"PowerSpherical scale of shape {tuple(scale.shape)} does not broadcast with loc's batch "
                f"shape {tuple(loc.shape[:-1])}; give scale the shape of loc without its last axis"
            ) from None
        event_shape = loc.shape[-1:]
        self.loc = loc.expand(batch_shape + event_shape)
        self.scale = scale.expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if self._validate_args:
            norm = self.loc.detach().norm(dim=-1)
            if norm.numel() and ((norm - 1).abs() > _UNIT_NORM_TOL).any():
                raise ValueError(
                    "PowerSpherical loc must have unit norm along its last axis; got norms in "
                    f"[{norm.min().item():.4g}, {norm.max().item():.4g}]; divide loc by loc.norm(dim=-1, keepdim=True)"
                )

    @property
    def dim(self) -> int:
        """d, the dimension of the ambient space R^d (the sphere is S^{d-1})."""
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PowerSpherical, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape)
        super(PowerSpherical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _alpha_beta(self) -> tuple[torch.Tensor, float]:
        """alpha = (d-1)/2 + kappa (float64 where available), beta = (d-1)/2."""
        beta = 0.5 * (self.dim - 1)
        return _wide(self.scale) + beta, beta

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Points of shape sample_shape + batch_shape + (d,) on the unit sphere."""
        shape = self._extended_shape(sample_shape)
        alpha, beta = self._alpha_beta()
        # Beta(alpha, beta) as the two-component Dirichlet, which returns both u and 1 - u to full
        # relative precision: then 1 - w^2 = 4 u (1 - u) keeps its digits when w is near +-1.
        concentration = torch.stack([alpha, torch.full_like(alpha, beta)], -1).to(self.scale.dtype)
        u = Dirichlet(concentration, validate_args=False).rsample(sample_shape)  # (*S, *B, 2)
        u, one_minus_u = u[..., 0], u[..., 1]
        w = (u - one_minus_u).unsqueeze(-1)
        radius = 2 * (u * one_minus_u).clamp_min(torch.finfo(u.dtype).tiny).sqrt().unsqueeze(-1)
        v = torch.randn(shape[:-1] + (self.dim - 1,), dtype=self.loc.dtype, device=self.loc.device)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
        y = torch.cat([w, radius * v], -1)  # mode at e1
        return rotate_north_to(self.loc, y)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(value) = scale log(1 + <loc, value>) + log_normalizer(); value: (..., d) -> (...).

        Evaluated as scale log(1 - |value - loc|^2 / 4) - (log N - scale log 2), equal on the
        sphere, so that neither 1 - <loc, value> nor the sum of two terms of size kappa cancels
        when kappa is large and value is near loc.
        """
        if self._validate_args:
            self._validate_sample(value)
        # (1 + <loc, value>)/2 is floored at eps/2: a draw that rounds onto the antipode gets the
        # density of the nearest resolvable point, not log 0 (which happens in float32 at small kappa)
        eps = torch.finfo(value.dtype).eps
        quarter_sq_dist = ((value - self.loc) ** 2).sum(-1).div(4).clamp(max=1.0 - eps / 2)
        log_n_over_2_to_kappa = self._log_n_over_2_to_kappa().to(self.scale.dtype)
        return self.scale * torch.log1p(-quarter_sq_dist) - log_n_over_2_to_kappa

    def _log_n_over_2_to_kappa(self) -> torch.Tensor:
        """log N - kappa log 2 = 2 beta log 2 + beta log pi + lgamma(alpha) - lgamma(alpha + beta), wide."""
        alpha, beta = self._alpha_beta()
        constant = 2 * beta * math.log(2) + beta * math.log(math.pi)
        return constant + torch.lgamma(alpha) - torch.lgamma(alpha + beta)

    def log_normalizer(self) -> torch.Tensor:
        """-log N = -[(alpha+beta) log 2 + beta log pi + lgamma(alpha) - lgamma(alpha+beta)]: batch_shape."""
        log_n = self._log_n_over_2_to_kappa() + _wide(self.scale) * math.log(2)
        return (-log_n).to(self.scale.dtype)

    def entropy(self) -> torch.Tensor:
        """H = -log_normalizer - kappa (log 2 + digamma(alpha) - digamma(alpha + beta)); shape batch_shape.

        E[log(1 + <loc, x>)] = log 2 + E[log u] with u ~ Beta(alpha, beta). The sum is formed in
        float64 where available, as its two parts grow like kappa.
        """
        alpha, beta = self._alpha_beta()
        kappa = _wide(self.scale)
        entropy = self._log_n_over_2_to_kappa() - kappa * (torch.digamma(alpha) - torch.digamma(alpha + beta))
        return entropy.to(self.scale.dtype)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = kappa / (kappa + d - 1) loc: (*batch_shape, d)."""
        mean_cos = self.scale / (self.scale + (self.dim - 1))
        return mean_cos.unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        """loc: (*batch_shape, d)."""
        return self.loc


# KL(q || Uniform(S^{d-1})) = E_q[log q] - log(1 / |S^{d-1}|) = -H(q) + log |S^{d-1}| (De Cao & Aziz 2020),
# H(q) = log N - kappa (log 2 + digamma(alpha) - digamma(alpha + beta)) as in ``PowerSpherical.entropy``.
@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_spherical_uniform(q: PowerSpherical, p: HypersphericalUniform) -> torch.Tensor:
    if q.dim != p.dim:
        raise KlvaeError(
            f"KL(PowerSpherical || HypersphericalUniform) needs the same dim; got {q.dim} and {p.dim}"
        )
    kl = log_sphere_area(q.dim) - q.entropy()
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
