"""PowerSpherical and its KL to the uniform distribution on the sphere, checked against a published
value, quadrature on S^1 and S^2, Monte Carlo and the closed-form moments of the Beta marginal.

Seed policy: every statistical test calls ``torch.manual_seed`` at its top and allows several
(5) standard errors, so it neither flakes nor passes by luck.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import special, stats
from torch.distributions import kl_divergence

from klvae.distributions.power_spherical import PowerSpherical
from klvae.distributions.uniform import HypersphericalUniform, log_sphere_area
from klvae.errors import KlvaeError
from klvae.kl import kl

F64 = torch.float64
N_SIGMA = 5.0


def unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=F64)
    return v / v.norm(dim=-1, keepdim=True)


def random_power_spherical(shape: tuple, dim: int, dtype=F64) -> PowerSpherical:
    loc = unit(torch.randn(shape + (dim,), dtype=F64)).to(dtype)
    scale = torch.exp(torch.empty(shape, dtype=dtype).uniform_(math.log(0.3), math.log(80.0)))
    return PowerSpherical(loc, scale)


def circle_quadrature(q: PowerSpherical, n: int = 2**16):
    """Points on S^1 at the midpoints of n equal angle cells, and the cell width."""
    h = 2 * math.pi / n
    angle = -math.pi + h * (torch.arange(n, dtype=F64) + 0.5)
    return torch.stack([torch.cos(angle), torch.sin(angle)], -1), h


def sphere_quadrature(loc: torch.Tensor, n: int = 2000):
    """Points on S^2 at Gauss-Legendre nodes of w = <x, loc> and weights 2 pi dw (the density
    depends on x through w only, and the circle of points at height w has length 2 pi sqrt(1-w^2),
    which the change of variables cancels)."""
    w, weight = (torch.tensor(a, dtype=F64) for a in special.roots_legendre(n))
    perp = unit(torch.linalg.cross(loc, torch.tensor([0.3, -0.5, 0.8], dtype=F64)))
    x = w[:, None] * loc + torch.sqrt(1 - w**2)[:, None] * perp
    return x, 2 * math.pi * weight


# --- the published value and the closed forms ---------------------------------------------------

def test_kl_to_uniform_matches_the_authors_value():
    """De Cao & Aziz's README prints tensor(1.2486) for KL(PowerSpherical([0, 1], 4) || Uniform(S^1));
    that figure is the KL at scale 10. At scale 4 their code, quadrature (below) and Monte Carlo
    all give 0.8277."""
    loc = torch.tensor([0.0, 1.0], requires_grad=True)
    uniform = HypersphericalUniform(dim=2)
    assert round(kl_divergence(PowerSpherical(loc, torch.tensor(10.0)), uniform).item(), 4) == 1.2486
    at4 = kl_divergence(PowerSpherical(loc, torch.tensor(4.0, requires_grad=True)), uniform)
    assert round(at4.item(), 4) == 0.8277
    at4.backward()


@pytest.mark.parametrize("scale", [1e-6, 0.5, 4.0, 10.0, 300.0])
def test_density_on_the_circle_integrates_to_one_and_kl_matches_quadrature(scale):
    q = PowerSpherical(unit([0.6, -0.8]), torch.tensor(scale, dtype=F64))
    x, h = circle_quadrature(q)
    log_q = q.log_prob(x)
    p = log_q.exp()
    assert abs((p.sum() * h).item() - 1) < 1e-10
    kl_quad = (torch.xlogy(p, p).sum() + p.sum() * log_sphere_area(2)) * h
    # the midpoint rule converges like h^(2 scale + 1) at the antipode, where (1 + cos)^scale is not smooth
    assert abs(kl_divergence(q, HypersphericalUniform(2, dtype=F64)).item() - kl_quad.item()) < 1e-8


@pytest.mark.parametrize("scale", [1e-6, 0.5, 4.0, 50.0, 1e3])
def test_density_on_the_sphere_integrates_to_one_and_kl_matches_quadrature(scale):
    loc = unit([1.0, 2.0, -2.0])
    q = PowerSpherical(loc, torch.tensor(scale, dtype=F64))
    x, weight = sphere_quadrature(loc)
    log_q = q.log_prob(x)
    p = log_q.exp()
    assert abs((p * weight).sum().item() - 1) < 1e-8
    kl_quad = (weight * (torch.xlogy(p, p) + p * log_sphere_area(3))).sum()
    assert abs(kl_divergence(q, HypersphericalUniform(3, dtype=F64)).item() - kl_quad.item()) < 1e-8


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
@pytest.mark.parametrize("dim", [2, 3, 10])
def test_kl_to_uniform_matches_monte_carlo(shape, dim):
    torch.manual_seed(dim)
    q = random_power_spherical(shape, dim)
    uniform = HypersphericalUniform(dim, batch_shape=shape, dtype=F64)
    analytic = kl_divergence(q, uniform)
    assert analytic.shape == shape
    z = q.rsample((100000,))
    diff = q.log_prob(z) - uniform.log_prob(z)
    se = diff.std(0) / math.sqrt(z.shape[0])
    assert ((diff.mean(0) - analytic).abs() <= N_SIGMA * se).all()
    assert torch.allclose(kl(q, uniform).value, analytic) and kl(q, uniform).method == "analytic"


# --- samples ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dim", "scale"), [(2, 0.5), (3, 5.0), (10, 100.0), (64, 2.0)])
def test_samples_lie_on_the_sphere_with_the_beta_marginal_and_the_stated_mean(dim, scale):
    torch.manual_seed(11)
    loc = unit(torch.randn(dim, dtype=F64))
    q = PowerSpherical(loc, torch.tensor(scale, dtype=F64))
    z = q.rsample((40000,))
    assert z.shape == (40000, dim)
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-12
    w = z @ loc
    alpha, beta = (dim - 1) / 2 + scale, (dim - 1) / 2
    assert stats.kstest(((w + 1) / 2).numpy(), stats.beta(alpha, beta).cdf).pvalue > 1e-3
    se = w.std() / math.sqrt(len(w))
    assert abs(w.mean() - (alpha - beta) / (alpha + beta)) <= N_SIGMA * se
    se = z.std(0) / math.sqrt(len(z))
    assert ((z.mean(0) - q.mean).abs() <= N_SIGMA * se).all()  # the tangent part averages to 0


POLES = [[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [1.0, 3e-4, -2e-4, 0.0], [0.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize("loc", POLES)
def test_samples_follow_loc_including_at_and_near_the_poles(loc):
    """The orthogonal map e1 -> loc stays exact at loc = +-e1 and next to them, in float32."""
    torch.manual_seed(12)
    loc = unit(loc).float()
    q = PowerSpherical(loc, torch.tensor(1e5))
    z = q.rsample((20000,))
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-6
    mean_dir = z.double().mean(0)
    expected = q.mean.double()
    se = z.double().std(0) / math.sqrt(len(z))
    assert ((mean_dir - expected).abs() <= N_SIGMA * se + 1e-7).all()


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("dim", "scale"), [(2, 1.0), (3, 10.0), (16, 50.0)])
def test_scale_gradient_of_mean_projection_matches_closed_form(dim, scale):
    torch.manual_seed(13)
    n = 50000
    loc = unit(torch.randn(dim, dtype=F64))
    c = torch.randn(dim, dtype=F64)
    scales = torch.full((n,), scale, dtype=F64, requires_grad=True)  # one leaf per draw
    z = PowerSpherical(loc, scales).rsample()
    (z @ c).sum().backward()
    exact = (c @ loc).item() * (dim - 1) / (scale + dim - 1) ** 2  # d/dk [k/(k+d-1)] <c, loc>
    se = scales.grad.std() / math.sqrt(n)
    assert abs(scales.grad.mean() - exact) <= N_SIGMA * se


@pytest.mark.parametrize(("dim", "scale"), [(2, 3.0), (5, 20.0)])
def test_loc_gradient_of_mean_projection_matches_closed_form(dim, scale):
    torch.manual_seed(14)
    n = 50000
    raw = 1.7 * unit(torch.randn(dim, dtype=F64))  # loc = raw / |raw|, as an encoder produces it
    c = torch.randn(dim, dtype=F64)
    raws = raw.repeat(n, 1).requires_grad_()
    z = PowerSpherical(raws / raws.norm(dim=-1, keepdim=True), torch.tensor(scale, dtype=F64)).rsample()
    (z @ c).sum().backward()
    loc = raw / raw.norm()
    exact = scale / (scale + dim - 1) * (c - (c @ loc) * loc) / raw.norm()
    se = raws.grad.std(0) / math.sqrt(n)
    assert ((raws.grad.mean(0) - exact).abs() <= N_SIGMA * se).all()


# --- extremes, shapes, errors -------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 256])
@pytest.mark.parametrize("scale", [1e-6, 1e5])
def test_extreme_parameters_give_finite_accurate_values(dim, scale):
    torch.manual_seed(15)
    loc = unit(torch.randn(dim, dtype=F64)).float().requires_grad_()
    kappa = torch.tensor(scale, requires_grad=True)
    q = PowerSpherical(loc, kappa)
    z = q.rsample((1000,))
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-5
    kl32 = kl_divergence(q, HypersphericalUniform(dim))
    (q.log_prob(z).mean() + kl32 + z.sum()).backward()
    assert torch.isfinite(q.log_prob(z)).all() and torch.isfinite(q.entropy())
    assert torch.isfinite(loc.grad).all() and torch.isfinite(kappa.grad)
    q64 = PowerSpherical(loc.detach().double(), torch.tensor(scale, dtype=F64))
    kl64 = kl_divergence(q64, HypersphericalUniform(dim, dtype=F64))
    assert kl64 >= 0 and math.isclose(kl32.item(), kl64.item(), rel_tol=1e-6, abs_tol=1e-7)
    assert torch.allclose(q.log_prob(z).double(), q64.log_prob(z.double()), rtol=1e-5, atol=1e-3)
    w = z.detach().double() @ q64.loc
    assert abs(w.mean() - scale / (scale + dim - 1)) <= N_SIGMA * w.std() / math.sqrt(len(w)) + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_log_prob_stays_finite_at_the_antipode(dtype):
    """Draws at small scale land within rounding of -loc; their log density must not be log 0."""
    loc = unit([0.6, 0.0, -0.8]).to(dtype)
    q = PowerSpherical(loc, torch.tensor(1e-6, dtype=dtype))
    lp = q.log_prob(-loc)
    assert torch.isfinite(lp) and abs(lp.item() + log_sphere_area(3)) < 1e-4


def test_batch_shapes_broadcast_and_expand():
    torch.manual_seed(16)
    loc = unit(torch.randn(3, 4, dtype=F64))
    q = PowerSpherical(loc, torch.tensor([[1.0], [2.0]], dtype=F64))  # scale (2, 1) with loc batch (3,)
    assert q.batch_shape == (2, 3) and q.event_shape == (4,) and q.has_rsample
    assert q.rsample((5,)).shape == (5, 2, 3, 4) and q.mean.shape == (2, 3, 4)
    big = q.expand((7, 2, 3))
    assert type(big) is PowerSpherical and big.batch_shape == (7, 2, 3)
    x = unit(torch.randn(4, dtype=F64))
    assert torch.allclose(big.log_prob(x), q.log_prob(x).expand(7, 2, 3))
    assert torch.allclose(big.entropy(), q.entropy().expand(7, 2, 3))
    assert kl_divergence(q, HypersphericalUniform(4, batch_shape=(3,), dtype=F64)).shape == (2, 3)


def test_bad_arguments_are_rejected_with_a_fix():
    with pytest.raises(ValueError, match="unit norm"):
        PowerSpherical(torch.tensor([1.0, 1.0]), 2.0)
    with pytest.raises(ValueError, match="scale"):
        PowerSpherical(torch.tensor([1.0, 0.0]), 0.0)
    with pytest.raises(KlvaeError, match="d >= 2"):
        PowerSpherical(torch.tensor([1.0]), 2.0)
    with pytest.raises(KlvaeError, match="does not broadcast"):
        PowerSpherical(torch.eye(3), torch.ones(2))
    with pytest.raises(KlvaeError, match="same dim"):
        kl_divergence(PowerSpherical(torch.tensor([1.0, 0.0]), 2.0), HypersphericalUniform(3))
