"""The von Mises-Fisher distribution on the unit sphere S^{d-1} in R^d, with its KL to the uniform.

Density w.r.t. the surface measure: p(z) = C_d(kappa) exp(kappa <loc, z>), with
log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log 2 pi - log I_{d/2-1}(kappa).

Sampling (Wood 1994): the cosine w = <z, loc> is drawn by rejection from a transformed Beta
proposal, a tangent direction uniformly, and the point (w, sqrt(1 - w^2) v) is carried from the
north pole e1 to loc by a Householder reflection, through which gradients w.r.t. loc flow exactly.
Gradients w.r.t. the concentration use implicit reparameterisation (Figurnov et al. 2018): at a
fixed CDF value F(w; kappa), dw/dkappa = -(dF/dkappa)(w) / f(w), where f(w) is proportional to
exp(kappa w) (1 - w^2)^{(d-3)/2} on [-1, 1] and dF/dkappa(w) = int_{-1}^{w} (t - A_d(kappa)) f(t) dt.
The integral is done by Gauss-Legendre quadrature in the polar angle over the window where the
integrand is not negligible, so it stays accurate from kappa ~ 0 to kappa ~ 1e5.

Everything is computed in float64 and returned in the parameters' dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Beta, Distribution, constraints
from torch.distributions.kl import register_kl

from klvae.distributions.bessel import log_iv_reduced, mean_resultant_length
from klvae.distributions.sphere import rotate_north_to
from klvae.distributions.uniform import HypersphericalUniform, log_sphere_area

__all__ = ["VonMisesFisher", "unit_sphere"]

_F64 = torch.float64
_NORM_TOL = 1e-4  # |‖x‖ - 1| accepted as unit norm: float32 rounding of a normalised vector, with margin
_MAX_ROUNDS = 100  # Wood's sampler accepts >= ~65% of proposals (d <= 1000, kappa <= 1e5): 100 rounds never run out
_GL_X, _GL_W = np.polynomial.legendre.leggauss(64)
_BELOW_TWO = math.nextafter(2.0, 0.0)  # largest float64 1 - w below 2
_DECAY = 36.0  # the quadrature window ends where the integrand has fallen by e^-36 ~ 2e-16 of its peak


class _UnitSphere(constraints.Constraint):
    """Vectors of unit Euclidean norm (within 1e-4) along the last axis."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.vector_norm(value, dim=-1) - 1.0).abs() <= _NORM_TOL

    def __repr__(self) -> str:
        return "unit_sphere()"


unit_sphere = _UnitSphere()


def _kl_to_uniform(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """KL(vMF_d(kappa) || Uniform(S^{d-1})) = kappa A_d(kappa) - log 0F1(; d/2; kappa^2 / 4), float64."""
    kappa = kappa.to(_F64)
    return kappa * mean_resultant_length(d, kappa) - log_iv_reduced(0.5 * d - 1.0, kappa)


class VonMisesFisher(Distribution):
    """vMF(loc, concentration) on S^{d-1}: batch_shape = loc.shape[:-1], event_shape = (d,).

    loc: (..., d) unit vectors (the mean direction), d >= 2; concentration: (...) kappa > 0, one
    value per direction (a tensor of shape loc.shape[:-1], broadcastable to it, or a number).
    ``rsample`` is reparameterised in both parameters. ``validate_args`` also checks ‖loc‖ = 1.
    """

    arg_constraints = {"loc": constraints.real_vector, "concentration": constraints.positive}
    support = unit_sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor | float,
                 validate_args: bool | None = None):
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1 or loc.shape[-1] < 2:
            shape = tuple(loc.shape) if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise ValueError(f"loc must be a tensor of shape (..., d) with d >= 2; got {shape}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        if loc.dim() > 1 and concentration.dim() > loc.dim() - 1:
            raise ValueError(f"concentration must have shape loc.shape[:-1] = {tuple(loc.shape[:-1])} (one "
                             f"value per direction); got {tuple(concentration.shape)}")
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError:
            raise ValueError(f"concentration must have shape loc.shape[:-1] = {tuple(loc.shape[:-1])}; "
                             f"got {tuple(concentration.shape)}") from None
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.concentration = concentration.expand(batch_shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)
        if self._validate_args and not unit_sphere.check(self.loc).all():
            norms = torch.linalg.vector_norm(self.loc, dim=-1)
            raise ValueError(f"loc must have unit norm along its last axis (normalise it); got norms from "
                             f"{norms.min().item():.6g} to {norms.max().item():.6g}")

    @property
    def dim(self) -> int:
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        """E[z] = A_d(kappa) loc."""
        return mean_resultant_length(self.dim, self.concentration).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def log_normalizer(self) -> torch.Tensor:
        """log C_d(kappa) = -log|S^{d-1}| - log 0F1(; d/2; kappa^2 / 4), shape batch_shape."""
        value = -log_sphere_area(self.dim) - log_iv_reduced(0.5 * self.dim - 1.0, self.concentration.to(_F64))
        return value.to(self.loc.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """kappa <loc, value> + log C_d(kappa); value: (..., *batch_shape, d) -> (..., *batch_shape)."""
        if self._validate_args:
            self._validate_sample(value)
        dtype = torch.promote_types(value.dtype, self.loc.dtype)
        cosine = (value.to(_F64) * self.loc.to(_F64)).sum(-1)
        return (self.concentration.to(_F64) * cosine + self.log_normalizer().to(_F64)).to(dtype)

    def entropy(self) -> torch.Tensor:
        """H = -kappa A_d(kappa) - log C_d(kappa) = log|S^{d-1}| - KL(vMF || uniform), shape batch_shape."""
        return (log_sphere_area(self.dim) - _kl_to_uniform(self.concentration, self.dim)).to(self.loc.dtype)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draws, shape sample_shape + batch_shape + (d,)."""
        shape = self._extended_shape(sample_shape)
        kappa = self.concentration.to(_F64).expand(shape[:-1])
        om = _ImplicitOneMinusW.apply(kappa, _sample_one_minus_w(kappa.detach(), self.dim), self.dim)
        om = om.clamp(1e-300, _BELOW_TWO)  # keeps d sqrt(1 - w^2) / dkappa finite even at w = +-1
        radial = torch.sqrt(om * (2.0 - om))  # sqrt(1 - w^2), accurate for w near +-1
        tangent = torch.randn(shape[:-1] + (self.dim - 1,), dtype=_F64, device=self.loc.device)
        tangent = tangent / torch.linalg.vector_norm(tangent, dim=-1, keepdim=True).clamp_min(1e-300)
        y = torch.cat([(1.0 - om).unsqueeze(-1), radial.unsqueeze(-1) * tangent], dim=-1)  # mode at e1
        z = rotate_north_to(self.loc.to(_F64), y)
        return z.to(self.loc.dtype)


def _sample_one_minus_w(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """1 - w for w = <z, loc> ~ f(w; kappa) by Wood's (1994) rejection sampler; kappa: float64, any shape.

    Candidates are drawn for every element still rejected, in rounds. 1 - w and the acceptance
    test are written without cancellation so that kappa up to ~1e5 keeps full relative precision.
    """
    flat = kappa.reshape(-1)
    out = torch.empty_like(flat)
    todo = torch.arange(flat.numel(), device=flat.device)
    m1 = float(d - 1)
    proposal = Beta(torch.tensor(0.5 * m1, dtype=_F64, device=flat.device),
                    torch.tensor(0.5 * m1, dtype=_F64, device=flat.device))
    for _ in range(_MAX_ROUNDS):
        if todo.numel() == 0:
            break
        k = flat[todo]
        b = m1 / (2.0 * k + torch.sqrt(4.0 * k * k + m1 * m1))
        eps = proposal.sample(todo.shape)
        om = 2.0 * b * eps / ((1.0 - eps) + b * eps)  # 1 - w, w = (1 - (1+b) eps) / (1 - (1-b) eps)
        one_minus_x0, x0 = 2.0 * b / (1.0 + b), (1.0 - b) / (1.0 + b)
        # kappa w + (d-1) log(1 - x0 w) - c with c = kappa x0 + (d-1) log(1 - x0^2)
        log_ratio = k * (one_minus_x0 - om) + m1 * (torch.log(one_minus_x0 + x0 * om)
                                                    - torch.log(4.0 * b / (1.0 + b) ** 2))
        accept = torch.log(torch.rand_like(k)) <= log_ratio
        out[todo[accept]] = om[accept]
        todo = todo[~accept]
    if todo.numel() > 0:
        raise RuntimeError(f"von Mises-Fisher sampler: {todo.numel()} draws still rejected after {_MAX_ROUNDS} rounds")
    return out.reshape(kappa.shape)


def _log_integrand(theta, theta_w, kappa, d: int) -> torch.Tensor:
    """log[exp(kappa cos t) sin^{d-2} t / (exp(kappa cos t_w) sin^{d-3} t_w)] at polar angles t = theta."""
    out = -2.0 * kappa * torch.sin(0.5 * (theta + theta_w)) * torch.sin(0.5 * (theta - theta_w))
    if d != 2:
        out = out + (d - 2) * torch.log(torch.sin(theta))
    if d != 3:
        out = out - (d - 3) * torch.log(torch.sin(theta_w))
    return out


def _window_end(start, direction, bound, theta_w, kappa, d: int):
    """Angle beyond which, going from the integrand's peak ``start`` in ``direction`` (+-1, towards
    ``bound``), it has fallen by more than e^-_DECAY (the log-integrand is unimodal in the angle)."""
    sin, cos = torch.sin(start), torch.cos(start)
    # first derivative and minus the second derivative of kappa cos(t) + (d-2) log sin(t) at start
    slope, curvature = -kappa * sin, kappa * cos
    if d != 2:
        slope, curvature = slope + (d - 2) * cos / sin, curvature + (d - 2) / (sin * sin)
    slope, curvature = direction * slope, curvature.clamp_min(1e-12)  # slope along direction
    # first guess: where the local quadratic model has fallen by _DECAY; then grow until it truly has
    fall = (-slope).clamp_min(0.0)
    step = 2.0 * _DECAY / (fall + torch.sqrt(fall * fall + 2.0 * _DECAY * curvature))
    peak = _log_integrand(start, theta_w, kappa, d)
    for _ in range(40):
        end = torch.clamp(start + direction * step, min=torch.minimum(start, bound), max=torch.maximum(start, bound))
        short = (_log_integrand(end, theta_w, kappa, d) > peak - _DECAY) & (end != bound)
        if not short.any():
            break
        step = torch.where(short, 1.5 * step, step)
    return end


def _dw_dkappa(om: torch.Tensor, kappa: torch.Tensor, d: int) -> torch.Tensor:
    """dw/dkappa at fixed F(w; kappa) for w = 1 - om (float64, same shapes).

    With g(t) = exp(kappa t) (1 - t^2)^{(d-3)/2}: dw/dkappa = int_w^1 (t - A) g dt / g(w) when
    w > A, else int_{-1}^w (A - t) g dt / g(w) (the same value; each integrand keeps one sign).
    In the polar angle t = cos(theta) both become integrals of |cos theta - A| e^{kappa cos theta}
    sin^{d-2}(theta) over [0, theta_w] or [theta_w, pi].
    """
    one_minus_a = 1.0 - mean_resultant_length(d, kappa)
    theta_w = 2.0 * torch.asin(torch.sqrt(0.5 * om.clamp(1e-300, 2.0)))
    upper = om < one_minus_a
    if d == 2:
        mode = torch.zeros_like(kappa)
    else:  # maximiser of kappa cos(t) + (d-2) log sin(t): cos(t) = 2 kappa / (d - 2 + sqrt((d-2)^2 + 4 kappa^2))
        root = torch.sqrt((d - 2.0) ** 2 + 4.0 * kappa * kappa)
        one_minus_cos = ((d - 2.0) + (d - 2.0) ** 2 / (root + 2.0 * kappa)) / ((d - 2.0) + root)
        mode = 2.0 * torch.asin(torch.sqrt(0.5 * one_minus_cos))
    peak = torch.where(upper, torch.minimum(mode, theta_w), torch.maximum(mode, theta_w))
    bound = torch.where(upper, torch.zeros_like(peak), torch.full_like(peak, math.pi))
    end = _window_end(peak, torch.where(upper, -1.0, 1.0).to(_F64), bound, theta_w, kappa, d)
    lo, hi = torch.where(upper, end, theta_w), torch.where(upper, theta_w, end)
    nodes = torch.as_tensor(_GL_X, dtype=_F64, device=om.device)
    weights = torch.as_tensor(_GL_W, dtype=_F64, device=om.device)
    half = (0.5 * (hi - lo)).unsqueeze(-1)
    theta = lo.unsqueeze(-1) + half * (nodes + 1.0)  # (..., nodes)
    factor = one_minus_a.unsqueeze(-1) - 2.0 * torch.sin(0.5 * theta) ** 2  # cos(theta) - A
    factor = torch.where(upper.unsqueeze(-1), factor, -factor).clamp_min(0.0)
    log_terms = _log_integrand(theta, theta_w.unsqueeze(-1), kappa.unsqueeze(-1), d) + torch.log(weights * factor)
    return (half.squeeze(-1) * torch.exp(torch.logsumexp(log_terms, dim=-1))).clamp_max(torch.finfo(_F64).max)


class _ImplicitOneMinusW(torch.autograd.Function):
    """Identity on a sample of 1 - w whose gradient w.r.t. kappa is -dw/dkappa (implicit reparameterisation)."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, om: torch.Tensor, d: int) -> torch.Tensor:
        ctx.save_for_backward(kappa, om)
        ctx.d = d
        return om.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kappa, om = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return -grad * _dw_dkappa(om, kappa, ctx.d), None, None


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_von_mises_fisher_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> torch.Tensor:
    # KL = E_p[log p(z)] + log|S^{d-1}| = kappa A_d(kappa) + log C_d(kappa) + log|S^{d-1}|, since
    # E_p[<loc, z>] = A_d(kappa) (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders",
    # appendix). With I_v(k) = (k/2)^v / Gamma(v+1) * 0F1(; v+1; k^2/4), v = d/2 - 1, the last two terms
    # sum to -log 0F1(; d/2; kappa^2/4): KL = kappa A_d - log 0F1 keeps full precision (~kappa^2/(2d))
    # as kappa -> 0, where the three-term form cancels to rounding noise.
    if q.dim != p.dim:
        raise ValueError(f"KL(vMF || uniform) needs the same sphere: vMF has d={p.dim}, uniform has dim={q.dim}")
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return _kl_to_uniform(p.concentration, p.dim).to(p.loc.dtype).expand(shape)
