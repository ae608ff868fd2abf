"""VonMises with reparameterised samples, and its KLs, checked against quadrature, closed forms,
score-function estimates and torch's own sampler.

Seed policy: every statistical test calls ``torch.manual_seed`` at its top and allows several
(5) standard errors, so it neither flakes nor passes by luck.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, special, stats
from torch.distributions import VonMises as TorchVonMises
from torch.distributions import kl_divergence

from klvae.distributions.uniform import CircularUniform
from klvae.distributions.von_mises import VonMises

KAPPAS = [0.1, 1.0, 10.0, 100.0]
F64 = torch.float64
N_SIGMA = 5.0


def bessel_ratio(kappa: float) -> float:
    """A(kappa) = I1(kappa) / I0(kappa)."""
    return float(special.i1e(kappa) / special.i0e(kappa))


def bessel_ratio_derivative(kappa: float) -> float:
    """A'(kappa) = 1 - A/kappa - A^2 = d/dkappa E[cos(theta - loc)]."""
    a = bessel_ratio(kappa)
    return 1.0 - a / kappa - a * a


def exact_sample_grad(x: float, kappa: float) -> float:
    """d eps / d kappa = -(dF/dkappa)(x) / p(x) by adaptive quadrature; odd in x.

    2 pi i0e(k) dF/dk (x) = int_{-pi}^x f(t) dt with f(t) = e^{k(cos t - 1)} (cos t - A), and the
    integral of f over the circle is 0: use int_0^x near the mode, -int_x^pi in the tail.
    """
    a, sign = abs(x), math.copysign(1.0, x)
    one_minus_ratio = float((special.i0e(kappa) - special.i1e(kappa)) / special.i0e(kappa))

    def f(t):  # cos t - A written as (1 - A) - 2 sin^2(t/2): no cancellation at large kappa
        half = 2.0 * math.sin(0.5 * t) ** 2
        return math.exp(-kappa * half) * (one_minus_ratio - half)

    if a * math.sqrt(max(kappa, 1.0)) < 1.0:
        integral = integrate.quad(f, 0.0, a, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    else:
        integral = -integrate.quad(f, a, math.pi, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return -sign * integral / math.exp(-2.0 * kappa * math.sin(0.5 * a) ** 2)


def angle_grid(n: int = 2**16) -> tuple[torch.Tensor, float]:
    """Midpoints of n equal cells on [-pi, pi) (periodic trapezoid rule) and the cell width."""
    h = 2 * math.pi / n
    return -math.pi + h * (torch.arange(n, dtype=F64) + 0.5), h


def per_draw_grads(loc: float, kappa: float, n: int, f) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n draws, each with its own (loc, kappa) leaf: theta and the per-draw d f(theta)/d loc, d/d kappa."""
    locs = torch.full((n,), loc, dtype=F64, requires_grad=True)
    kappas = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    theta = VonMises(locs, kappas).rsample()
    f(theta).sum().backward()
    return theta.detach(), locs.grad, kappas.grad


def within(estimates: torch.Tensor, target: float, extra_se: float = 0.0) -> tuple[bool, str]:
    mean = estimates.mean().item()
    se = math.sqrt(estimates.var().item() / estimates.numel() + extra_se**2)
    return abs(mean - target) <= N_SIGMA * se + 1e-12, f"estimate {mean:.6g} vs {target:.6g} (se {se:.2g})"


# --- samples ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kappa", KAPPAS)
def test_rsample_draws_follow_von_mises_law(kappa):
    torch.manual_seed(0)
    loc = 2.9  # near pi, so wrapping matters
    theta = VonMises(torch.tensor(loc, dtype=F64), torch.tensor(kappa, dtype=F64)).rsample((20000,))
    assert theta.min() >= -math.pi and theta.max() < math.pi
    eps = torch.remainder(theta - loc + math.pi, 2 * math.pi) - math.pi
    ok, msg = within(torch.cos(eps), bessel_ratio(kappa))
    assert ok, msg
    ok, msg = within(torch.sin(eps), 0.0)
    assert ok, msg
    assert stats.kstest(eps.numpy(), stats.vonmises(kappa).cdf).pvalue > 1e-3


def test_rsample_has_the_law_of_torchs_sampler():
    torch.manual_seed(1)
    loc, kappa = torch.tensor([-1.0, 0.5]), torch.tensor([0.7, 30.0])
    ours = VonMises(loc, kappa).rsample((20000,))
    theirs = TorchVonMises(loc, kappa).sample((20000,))
    assert ours.shape == theirs.shape == (20000, 2) and ours.dtype == torch.float32
    for j in range(2):
        assert stats.ks_2samp(ours[:, j].numpy(), theirs[:, j].numpy()).pvalue > 1e-3


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kappa", [1e-3, 0.1, 1.0, 10.0, 50.0, 79.9, 80.1, 100.0, 1e3, 1e5])
def test_concentration_gradient_of_each_draw_matches_quadrature(kappa):
    torch.manual_seed(2)
    theta, _, grad = per_draw_grads(0.0, kappa, 40, lambda t: t)
    exact = torch.tensor([exact_sample_grad(float(x), kappa) for x in theta], dtype=F64)
    rel = ((grad - exact).abs() / exact.abs().clamp_min(1e-300)).max().item()
    assert rel < 1e-6, f"max relative error {rel:.2e}"


@pytest.mark.parametrize("kappa", KAPPAS)
def test_concentration_gradient_of_mean_cos_is_bessel_ratio_derivative(kappa):
    torch.manual_seed(3)
    loc = 0.4
    _, _, grad = per_draw_grads(loc, kappa, 50000, lambda t: torch.cos(t - loc))
    ok, msg = within(grad, bessel_ratio_derivative(kappa))
    assert ok, msg


@pytest.mark.parametrize("kappa", KAPPAS)
def test_concentration_gradient_of_squared_angle_matches_score_function_and_quadrature(kappa):
    torch.manual_seed(4)
    loc, n = 1.0, 100000
    theta, _, grad = per_draw_grads(loc, kappa, n, lambda t: t**2)
    # score function: d/dk E[f] = E[(f - E f) d log p/dk], d log p/dk = cos(theta - loc) - A
    f = theta**2
    score = (f - f.mean()) * (torch.cos(theta - loc) - bessel_ratio(kappa))
    score_se = math.sqrt(score.var().item() / n)
    ok, msg = within(grad, score.mean().item(), extra_se=score_se)
    assert ok, "pathwise vs score function: " + msg
    ratio = bessel_ratio(kappa)
    exact = integrate.quad(
        lambda t: t * t * math.exp(kappa * (math.cos(t - loc) - 1)) * (math.cos(t - loc) - ratio),
        -math.pi, math.pi, points=[loc], epsabs=0, epsrel=1e-12, limit=400,
    )[0] / (2 * math.pi * special.i0e(kappa))
    ok, msg = within(grad, exact)
    assert ok, "pathwise vs quadrature: " + msg


@pytest.mark.parametrize("kappa", [0.5, 20.0])
def test_loc_gradient_of_mean_sin(kappa):
    torch.manual_seed(5)
    loc = 0.8
    theta, grad_loc, _ = per_draw_grads(loc, kappa, 50000, torch.sin)
    assert torch.allclose(grad_loc, torch.cos(theta))  # d theta / d loc = 1
    ok, msg = within(grad_loc, bessel_ratio(kappa) * math.cos(loc))  # d/dloc A sin(loc)
    assert ok, msg


def test_no_gradient_work_without_a_concentration_that_requires_it():
    torch.manual_seed(6)
    d = VonMises(torch.tensor(0.3, requires_grad=True), torch.tensor(2.0))
    theta = d.rsample((5,))
    theta.sum().backward()
    assert torch.equal(d.loc.grad, torch.tensor(5.0))


# --- densities, entropy, KL ---------------------------------------------------------------------

@pytest.mark.parametrize("kappa", [1e-6, 0.1, 1.0, 10.0, 100.0, 1e3, 1e5])
def test_log_prob_integrates_to_one_and_entropy_matches_quadrature(kappa):
    x, h = angle_grid()
    d = VonMises(torch.tensor(0.5, dtype=F64), torch.tensor(kappa, dtype=F64))
    log_p = d.log_prob(x)
    p = log_p.exp()
    assert abs((p.sum() * h).item() - 1) < 1e-10
    assert abs((-(p * log_p).sum() * h).item() - d.entropy().item()) < 1e-8


def test_log_prob_agrees_with_torch_and_float32_stays_accurate_at_large_concentration():
    x = torch.linspace(-3.0, 3.0, 13, dtype=F64)
    ours = VonMises(torch.tensor(0.2, dtype=F64), torch.tensor(3.0, dtype=F64)).log_prob(x)
    theirs = TorchVonMises(torch.tensor(0.2, dtype=F64), torch.tensor(3.0, dtype=F64)).log_prob(x)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6)  # torch's I0 is a 1e-7 polynomial fit
    near = torch.tensor([0.0, 1e-3, -4e-3])
    lp32 = VonMises(torch.tensor(0.0), torch.tensor(1e5)).log_prob(near)
    lp64 = VonMises(torch.tensor(0.0, dtype=F64), torch.tensor(1e5, dtype=F64)).log_prob(near.double())
    assert torch.allclose(lp32.double(), lp64, rtol=1e-6, atol=1e-5)


def quadrature_kl(q: VonMises, p) -> torch.Tensor:
    """KL(q || p) on the angle grid, per batch element."""
    x, h = angle_grid(2**14)
    x = x.reshape((-1,) + (1,) * len(q.batch_shape))
    log_q = q.log_prob(x)
    return (log_q.exp() * (log_q - p.log_prob(x))).sum(0) * h


def random_von_mises(shape: tuple, dtype=F64) -> VonMises:
    loc = (torch.rand(shape, dtype=dtype) * 2 - 1) * math.pi
    kappa = torch.exp(torch.empty(shape, dtype=dtype).uniform_(math.log(0.05), math.log(60.0)))
    return VonMises(loc, kappa)


def assert_kl_matches_quadrature_and_monte_carlo(q, p, shape) -> None:
    """KL(q || p) has the batch shape, equals quadrature to 1e-9 and a 1e5-sample mean within N_SIGMA SEs."""
    kl = kl_divergence(q, p)
    assert kl.shape == shape
    assert torch.allclose(kl, quadrature_kl(q, p), rtol=1e-9, atol=1e-10)
    theta = q.rsample((100000,))
    diff = q.log_prob(theta) - p.log_prob(theta)
    se = diff.std(0) / math.sqrt(diff.shape[0])
    assert ((diff.mean(0) - kl).abs() <= N_SIGMA * se + 1e-9).all()


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_kl_von_mises_von_mises_matches_quadrature_and_monte_carlo(shape):
    torch.manual_seed(7)
    q, p = random_von_mises(shape), random_von_mises(shape)
    assert_kl_matches_quadrature_and_monte_carlo(q, p, shape)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_kl_von_mises_uniform_matches_quadrature_and_monte_carlo(shape):
    torch.manual_seed(8)
    q = random_von_mises(shape)
    uniform = CircularUniform(shape, dtype=F64)
    assert_kl_matches_quadrature_and_monte_carlo(q, uniform, shape)


def test_kl_of_equal_distributions_is_zero_and_broadcasts_with_the_prior_batch():
    q = VonMises(torch.tensor([0.3, -2.0]), torch.tensor([1e-6, 1e5]))
    assert torch.allclose(kl_divergence(q, q), torch.zeros(2), atol=1e-6)
    assert kl_divergence(q, CircularUniform((3, 2))).shape == (3, 2)


def test_kl_registered_for_torchs_von_mises_on_either_side():
    q = VonMises(torch.tensor([0.1, 1.0]), torch.tensor([2.0, 0.5]))
    p = VonMises(torch.tensor(-0.4), torch.tensor(3.0))
    tq = TorchVonMises(q.loc, q.concentration)
    tp = TorchVonMises(p.loc, p.concentration)
    expected = kl_divergence(q, p)
    assert torch.equal(kl_divergence(tq, p), expected)
    assert torch.equal(kl_divergence(q, tp), expected)
    assert torch.equal(kl_divergence(tq, CircularUniform()), kl_divergence(q, CircularUniform()))


# --- extremes, shapes, errors -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("kappa", [1e-6, 1e5])
def test_extreme_concentrations_give_finite_accurate_values(kappa, dtype):
    torch.manual_seed(9)
    loc = torch.tensor(3.0, dtype=dtype, requires_grad=True)
    conc = torch.tensor(kappa, dtype=dtype, requires_grad=True)
    q = VonMises(loc, conc)
    theta = q.rsample((2000,))
    assert theta.dtype == dtype and torch.isfinite(theta).all()
    assert theta.min() >= -math.pi and theta.max() <= math.pi
    (q.log_prob(theta).sum() + torch.cos(theta).sum()).backward()
    assert torch.isfinite(loc.grad) and torch.isfinite(conc.grad)
    kl_uniform = kl_divergence(q, CircularUniform(dtype=dtype))
    exact = -math.log(special.i0e(kappa)) - kappa * (1 - bessel_ratio(kappa))
    assert math.isclose(kl_uniform.item(), exact, rel_tol=1e-5, abs_tol=1e-9)
    kl_other = kl_divergence(q, VonMises(torch.tensor(2.9, dtype=dtype), torch.tensor(1.0, dtype=dtype)))
    assert torch.isfinite(kl_other) and kl_other >= 0
    assert torch.isfinite(q.entropy()) and torch.isfinite(q.log_prob(theta)).all()


def test_expand_and_shapes():
    torch.manual_seed(10)
    q = VonMises(torch.tensor([0.0, 1.0]), torch.tensor(2.0))
    assert q.has_rsample and q.batch_shape == (2,) and q.event_shape == ()
    big = q.expand((3, 2))
    assert type(big) is VonMises and big.batch_shape == (3, 2)
    assert big.rsample((5,)).shape == (5, 3, 2)
    assert torch.allclose(big.log_prob(torch.tensor(0.5)), q.log_prob(torch.tensor(0.5)).expand(3, 2))
    assert torch.allclose(q.variance, 1 - torch.tensor(bessel_ratio(2.0)))


def test_nonpositive_concentration_is_rejected():
    with pytest.raises(ValueError, match="concentration"):
        VonMises(torch.tensor(0.0), torch.tensor(0.0))
