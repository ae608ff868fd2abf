"""VonMisesFisher: normalisation, KL to the uniform (closed form, quadrature, Monte Carlo), the
sampler's law and moments, implicit-reparameterisation gradients, and extreme parameters.

Seed policy: every statistical test calls torch.manual_seed at its top and allows Z standard errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from torch.distributions import kl_divergence

from klvae.distributions.bessel import mean_resultant_length
from klvae.distributions.uniform import HypersphericalUniform, log_sphere_area
from klvae.distributions.von_mises_fisher import VonMisesFisher
from klvae.kl import kl

SHAPES = [(), (4,), (2, 3)]
Z = 5.0  # standard errors allowed by the statistical tests
F64 = torch.float64


def unit(shape: tuple[int, ...], d: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    x = torch.randn(*shape, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def vmf(d: int, kappa: float, shape: tuple[int, ...] = (), seed: int = 0) -> VonMisesFisher:
    return VonMisesFisher(unit(shape, d, seed), torch.full(shape, kappa, dtype=F64))


def reference_kl(d: int, kappa: float) -> float:
    """kappa A_d + log C_d + log|S^{d-1}| straight from scipy's ive (REFERENCES.md)."""
    v = d / 2 - 1
    log_c = v * math.log(kappa) - d / 2 * math.log(2 * math.pi) - (math.log(scipy.special.ive(v, kappa)) + kappa)
    a = scipy.special.ive(v + 1, kappa) / scipy.special.ive(v, kappa)
    return kappa * a + log_c + log_sphere_area(d)


def tangent(loc: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to loc."""
    t = torch.randn(loc.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    t = t - (t @ loc) * loc
    return t / t.norm()


# ---- construction ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_support_mean_and_expand(shape):
    p = vmf(5, 3.0, shape)
    assert p.batch_shape == shape and p.event_shape == (5,) and p.dim == 5
    z = p.sample((7,))
    assert z.shape == (7, *shape, 5) and p.support.check(z).all()
    assert p.log_prob(z).shape == (7, *shape) and p.entropy().shape == shape
    a = mean_resultant_length(5, torch.tensor(3.0, dtype=F64))
    torch.testing.assert_close(p.mean, a * p.loc)
    big = p.expand((6, *shape))
    assert big.batch_shape == (6, *shape) and big.rsample().shape == (6, *shape, 5)
    torch.testing.assert_close(big.log_prob(z[:1]), p.log_prob(z[:1]).expand(6, *shape))
    assert VonMisesFisher(unit((), 3), 2.0).concentration.shape == ()


def test_invalid_arguments_are_value_errors_naming_the_fix():
    loc = unit((4,), 3)
    with pytest.raises(ValueError, match="loc must have unit norm"):
        VonMisesFisher(2 * loc, torch.ones(4), validate_args=True)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(loc, torch.zeros(4, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match=r"concentration must have shape loc.shape\[:-1\] = \(4,\)"):
        VonMisesFisher(loc, torch.ones(4, 1, dtype=F64))
    with pytest.raises(ValueError, match=r"loc must be a tensor of shape \(..., d\) with d >= 2"):
        VonMisesFisher(torch.ones(4, 1), torch.ones(4))
    with pytest.raises(ValueError, match="same sphere"):
        kl_divergence(vmf(3, 1.0), HypersphericalUniform(4, dtype=F64))
    VonMisesFisher(2 * loc, torch.ones(4, dtype=F64), validate_args=False)  # no check when asked not to


# ---- density and KL --------------------------------------------------------------------------------

@pytest.mark.parametrize("kappa", [1e-3, 1.0, 20.0, 500.0])
def test_density_integrates_to_one_on_the_circle_and_the_sphere(kappa):
    theta = torch.linspace(-math.pi, math.pi, 20001, dtype=F64)
    circle = VonMisesFisher(unit((), 2), kappa)
    density = circle.log_prob(torch.stack([theta.cos(), theta.sin()], -1)).exp()
    assert torch.trapezoid(density, theta).item() == pytest.approx(1.0, abs=1e-9)
    loc = unit((), 3)
    u = torch.linspace(0, 1, 20001, dtype=F64)
    w = 1 - 2 * u**2  # a w grid from 1 to -1, dense near the mode
    z = w[:, None] * loc + (1 - w**2).clamp_min(0).sqrt()[:, None] * tangent(loc)
    density = 2 * math.pi * VonMisesFisher(loc, kappa).log_prob(z).exp()  # |S^1| = 2 pi per w
    assert -scipy.integrate.simpson(density.numpy(), x=w.numpy()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("d", [2, 3, 5, 10, 64, 256])
def test_kl_to_uniform_equals_the_reference_formula(d):
    for kappa in [0.01, 1.0, 10.0, 100.0, 1e3, 1e5]:
        if scipy.special.ive(d / 2 - 1, kappa) < 1e-290:
            continue  # the plain formula underflows here; the extreme tests cover it
        value = kl_divergence(vmf(d, kappa), HypersphericalUniform(d, dtype=F64)).item()
        assert value == pytest.approx(reference_kl(d, kappa), rel=1e-9, abs=1e-12), (d, kappa)


@pytest.mark.parametrize("kappa", [0.1, 2.0, 50.0])
def test_kl_equals_numerical_integration_on_the_circle_and_the_sphere(kappa):
    circle = kl_divergence(vmf(2, kappa), HypersphericalUniform(2, dtype=F64)).item()
    log_p = lambda t: kappa * math.cos(t) - math.log(2 * math.pi * scipy.special.ive(0, kappa)) - kappa
    integral = scipy.integrate.quad(lambda t: math.exp(log_p(t)) * (log_p(t) + math.log(2 * math.pi)),
                                    -math.pi, math.pi, epsabs=1e-13, epsrel=1e-12, points=[0.0])[0]
    assert circle == pytest.approx(integral, rel=1e-8, abs=1e-12)
    sphere = kl_divergence(vmf(3, kappa), HypersphericalUniform(3, dtype=F64)).item()
    log_f = lambda w: kappa * (w - 1) + math.log(kappa / (2 * math.pi * -math.expm1(-2 * kappa)))  # density on S^2
    integral = scipy.integrate.quad(lambda w: 2 * math.pi * math.exp(log_f(w)) * (log_f(w) + math.log(4 * math.pi)),
                                    -1, 1, epsabs=1e-13, epsrel=1e-12, points=[1 - 1 / kappa])[0]
    assert sphere == pytest.approx(integral, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize(("shape", "d"), [((), 2), ((), 64), ((4,), 3), ((4,), 10), ((2, 3), 2), ((2, 3), 20)])
def test_kl_matches_monte_carlo_with_1e5_samples(shape, d):
    torch.manual_seed(0)
    kappa = torch.exp(torch.empty(shape, dtype=F64).uniform_(math.log(0.1), math.log(300.0)))
    p, q = VonMisesFisher(unit(shape, d), kappa), HypersphericalUniform(d, shape, dtype=F64)
    z = p.sample((100_000,))
    log_ratio = p.log_prob(z) - q.log_prob(z)  # (S, *shape)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(100_000)
    exact = kl_divergence(p, q)
    assert exact.shape == shape
    assert ((estimate - exact).abs() <= Z * stderr + 1e-12).all(), (estimate, exact, stderr)
    torch.testing.assert_close(p.entropy(), log_sphere_area(d) - exact)  # H(p) = log|S^{d-1}| - KL(p || uniform)
    result = kl(p, q)
    assert result.method == "analytic" and torch.equal(result.value, exact)


@pytest.mark.parametrize("d", [2, 3, 10, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_parameters_give_finite_values_samples_and_gradients(d, dtype):
    torch.manual_seed(0)
    raw = unit((2,), d, dtype=dtype).requires_grad_()
    kappa = torch.tensor([1e-6, 1e5], dtype=dtype, requires_grad=True)
    p = VonMisesFisher(raw / raw.norm(dim=-1, keepdim=True), kappa)
    z = p.rsample((50,))
    value = kl_divergence(p, HypersphericalUniform(d, (2,), dtype=dtype))
    terms = [z, p.log_prob(z), p.entropy(), value, p.mean]
    assert all(t.dtype == dtype and torch.isfinite(t).all() for t in terms)
    assert ((z.norm(dim=-1) - 1).abs() < 1e-5).all() and (value >= 0).all()
    assert value[0].item() == pytest.approx(1e-12 / (2 * d), rel=1e-5)  # KL ~ kappa^2 / 2d as kappa -> 0
    assert p.entropy()[0].item() == pytest.approx(log_sphere_area(d), rel=1e-6)
    sum(t.sum() for t in terms).backward()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(kappa.grad).all()


def test_kl_gradient_matches_finite_differences_and_the_bessel_identity():
    # d KL / d kappa = kappa A_d'(kappa), with A_d' = 1 - A_d^2 - (d-1) A_d / kappa (that identity itself
    # cancels in float64 for kappa >> d^2, so it is used below 1e3 only; central differences everywhere)
    kappa = torch.tensor([1e-3, 0.5, 7.0, 300.0, 1e5], dtype=F64, requires_grad=True)
    for d in (2, 10, 256):
        value = lambda k: kl_divergence(VonMisesFisher(unit((5,), d), k), HypersphericalUniform(d, (5,), dtype=F64))
        (grad,) = torch.autograd.grad(value(kappa).sum(), kappa)
        k = kappa.detach()
        h = 1e-4 * k
        torch.testing.assert_close(grad, (value(k + h) - value(k - h)) / (2 * h), rtol=1e-6, atol=1e-15)
        a = mean_resultant_length(d, k)
        identity = k * (1 - a**2 - (d - 1) * a / k)
        torch.testing.assert_close(grad[:4], identity[:4], rtol=1e-9, atol=1e-15)


# ---- sampler ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("d", "kappa", "n"), [(2, 0.5, 100_000), (3, 5.0, 100_000), (10, 50.0, 100_000),
                                                (3, 1e4, 100_000), (64, 1e4, 50_000), (256, 30.0, 20_000)])
def test_samples_have_unit_norm_and_the_right_moments(d, kappa, n):
    torch.manual_seed(0)
    p = vmf(d, kappa, seed=d)
    z = p.sample((n,))
    assert ((z.norm(dim=-1) - 1).abs() < 1e-12).all()
    w = z @ p.loc
    a = mean_resultant_length(d, torch.tensor(kappa, dtype=F64)).item()
    assert abs(w.mean().item() - a) <= Z * w.std().item() / math.sqrt(n)
    variance = 1 - a * a - (d - 1) * a / kappa  # Var(w) = A_d'(kappa)
    sq = (w - a) ** 2
    assert abs(sq.mean().item() - variance) <= Z * sq.std().item() / math.sqrt(n)
    assert ((z.mean(0) - a * p.loc).abs() <= Z * z.std(0) / math.sqrt(n) + 1e-15).all()


@pytest.mark.parametrize("kappa", [0.5, 30.0, 1e4])
def test_cosine_follows_the_exact_law_on_the_circle_and_the_sphere(kappa):
    torch.manual_seed(0)
    n = 20_000
    for d in (2, 3):
        p = vmf(d, kappa)
        one_minus_w = (1 - p.sample((n,)) @ p.loc).clamp_min(0).numpy()
        if d == 3:  # F(w) = 1 - (1 - e^{-kappa (1-w)}) / (1 - e^{-2 kappa})
            cdf = lambda om: 1 - np.expm1(-kappa * om) / np.expm1(-2 * kappa)
            survival = cdf(one_minus_w)  # P(1 - W <= om) = 1 - F(w)
        else:  # the angle is von Mises: P(1 - W <= om) = P(|theta| <= arccos(1 - om))
            angle = 2 * np.arcsin(np.sqrt(one_minus_w / 2))
            survival = 2 * scipy.stats.vonmises.cdf(angle, kappa) - 1
        assert scipy.stats.kstest(survival, "uniform").pvalue > 1e-3, (d, kappa)


# ---- gradients --------------------------------------------------------------------------------------

def per_sample_cosine_gradient(d: int, kappa: float, n: int, seed: int = 0):
    """w_i = <z_i, loc> for z_i ~ vMF(loc, kappa_i) with kappa_i = kappa; returns (w, dw_i/dkappa_i)."""
    kappas = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    loc = unit((), d, seed)
    w = VonMisesFisher(loc.expand(n, d), kappas).rsample() @ loc
    (grad,) = torch.autograd.grad(w.sum(), kappas)
    return w.detach(), grad


def test_implicit_cosine_gradient_is_exact_on_the_sphere():
    torch.manual_seed(0)
    for kappa in [0.05, 1.0, 30.0, 1e3, 1e5]:  # d = 3: w = 1 + log(u + (1-u) e^{-2 kappa}) / kappa
        w, grad = per_sample_cosine_gradient(3, kappa, 200)
        om = 1 - w
        tail = torch.exp(-kappa * (2 - om)) * torch.expm1(-kappa * om) / math.expm1(-2 * kappa)
        exact = (om - 2 * tail) / kappa
        torch.testing.assert_close(grad, exact, rtol=1e-7, atol=1e-14)


def test_implicit_cosine_gradient_matches_the_von_mises_cdf_on_the_circle():
    torch.manual_seed(0)
    # dw/dkappa = -(dF/dkappa) / f at fixed F; scipy's von Mises CDF is a series below kappa = 50 (a
    # normal approximation, good to ~1e-4 only, above)
    for kappa in [0.5, 10.0, 45.0]:
        w, grad = per_sample_cosine_gradient(2, kappa, 20)
        angle = np.arccos(w.numpy())
        h = 1e-5 * kappa
        cdf = lambda k: 2 * (1 - scipy.stats.vonmises.cdf(angle, k))  # P(W <= w) = P(|theta| >= angle)
        density = 2 * scipy.stats.vonmises.pdf(angle, kappa) / np.sin(angle)  # of W at w
        expected = -(cdf(kappa + h) - cdf(kappa - h)) / (2 * h) / density
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("d", [5, 64, 256])
def test_implicit_cosine_gradient_matches_adaptive_quadrature(d):
    torch.manual_seed(0)
    for kappa in [0.2, 40.0, 1e5]:
        w, grad = per_sample_cosine_gradient(d, kappa, 5)
        a = mean_resultant_length(d, torch.tensor(kappa, dtype=F64)).item()
        for wi, gi in zip(w.tolist(), grad.tolist()):
            # dw/dkappa = int_{-1}^{w} (A - t) g(t) dt / g(w), g(t) = e^{kappa t} (1 - t^2)^{(d-3)/2},
            # written in the angle t = cos(theta) and integrated by scipy's adaptive quad on a few pieces
            tw = math.acos(wi)
            log_g = lambda t: (kappa * (math.cos(t) - wi) + (d - 2) * math.log(math.sin(t))
                               - (d - 3) * math.log(math.sin(tw)))
            scale = 1 / math.sqrt(kappa + d)
            pieces = [tw] + [x for x in (tw + scale * j for j in (1, 3, 10, 30)) if x < math.pi] + [math.pi]
            integrand = lambda t: (a - math.cos(t)) * math.exp(log_g(t))
            integral = sum(scipy.integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
                           for lo, hi in zip(pieces, pieces[1:]))
            assert gi == pytest.approx(integral, rel=1e-7), (d, kappa, wi)


@pytest.mark.parametrize(("d", "kappa"), [(2, 0.3), (3, 5.0), (10, 100.0), (64, 2.0), (3, 1e4)])
def test_reparameterised_gradients_match_analytic_and_score_function_estimates(d, kappa):
    torch.manual_seed(0)
    n = 40_000
    c = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=F64)
    raw0 = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=F64)
    raw = raw0.repeat(n, 1).requires_grad_()  # one copy per sample: per-sample gradients give standard errors
    kappas = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    loc = raw / raw.norm(dim=-1, keepdim=True)
    z = VonMisesFisher(loc, kappas).rsample()
    f = z @ c
    grad_kappa, grad_raw = torch.autograd.grad(f.sum(), (kappas, raw))
    # analytic: E[<z, c>] = A_d(kappa) <loc, c>, so d/dkappa = A_d'(kappa) <loc, c>
    k0, r0 = torch.tensor(kappa, dtype=F64, requires_grad=True), raw0.clone().requires_grad_()
    exact_kappa, exact_raw = torch.autograd.grad(mean_resultant_length(d, k0) * (r0 / r0.norm()) @ c, (k0, r0))
    se = grad_kappa.std() / math.sqrt(n)
    assert abs(grad_kappa.mean() - exact_kappa) <= Z * se + 1e-15
    assert ((grad_raw.mean(0) - exact_raw).abs() <= Z * grad_raw.std(0) / math.sqrt(n) + 1e-12).all()
    w = z.detach() @ loc[0].detach()
    score = f.detach() * (w - mean_resultant_length(d, k0.detach()))  # d/dkappa log p(z) = w - A_d(kappa)
    score_se = score.std() / math.sqrt(n)
    assert abs(score.mean() - grad_kappa.mean()) <= Z * math.hypot(score_se, se)
    if d <= 3 and kappa < 1e3:  # here the score-function estimate is sharp enough to pin the pathwise one
        assert score_se < 0.05 * abs(exact_kappa)
