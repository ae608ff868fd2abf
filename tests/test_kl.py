"""The KL entry point: analytic Gaussian KL against torch.distributions and Monte Carlo, the MC
fallback, and extreme parameters. Seeds are set at the top of each statistical test."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from klvae import KlvaeError, kl
from klvae.distributions import diagonal_normal, standard_normal
from klvae.kl import mc_kl

SHAPES = [(), (4,), (2, 3)]


def gaussian_pair(batch: tuple[int, ...], dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, dim)
    q = diagonal_normal(torch.randn(shape, generator=g, dtype=torch.float64),
                        torch.rand(shape, generator=g, dtype=torch.float64) + 0.2)
    p = diagonal_normal(torch.randn(shape, generator=g, dtype=torch.float64) * 0.5,
                        torch.rand(shape, generator=g, dtype=torch.float64) + 0.5)
    return q, p


def closed_form(q, p) -> torch.Tensor:
    """log(t/s) + (s^2 + (mu - m)^2) / (2 t^2) - 1/2, summed over the latent axis."""
    mu, s, m, t = q.base_dist.loc, q.base_dist.scale, p.base_dist.loc, p.base_dist.scale
    return (torch.log(t / s) + (s**2 + (mu - m) ** 2) / (2 * t**2) - 0.5).sum(-1)


@pytest.mark.parametrize("batch", SHAPES)
def test_analytic_gaussian_kl_equals_closed_form_and_torch(batch):
    q, p = gaussian_pair(batch)
    result = kl(q, p)
    assert result.method == "analytic"
    assert result.value.shape == batch
    torch.testing.assert_close(result.value, closed_form(q, p))
    torch.testing.assert_close(result.value, kl_divergence(q, p))
    torch.testing.assert_close(result.per_dim.sum(-1), result.value)
    assert result.per_dim.shape == (*batch, 5)


@pytest.mark.parametrize("batch", SHAPES)
def test_analytic_gaussian_kl_matches_monte_carlo_with_1e6_samples(batch):
    torch.manual_seed(0)
    q, p = gaussian_pair(batch, dim=3)
    z = q.sample((1_000_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (S, *batch)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / 1000.0
    exact = kl(q, p).value
    assert ((estimate - exact).abs() < 5 * stderr + 1e-6).all(), (estimate, exact, stderr)


def test_kl_to_the_standard_normal_prior_is_zero_only_at_the_prior():
    prior = standard_normal(4, torch.zeros(1))
    same = diagonal_normal(torch.zeros(4), torch.ones(4))
    assert kl(same, prior).value.abs().item() < 1e-7
    moved = diagonal_normal(torch.full((4,), 0.1), torch.ones(4))
    assert kl(moved, prior).value.item() == pytest.approx(4 * 0.5 * 0.01, rel=1e-5)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3])
def test_gaussian_kl_is_finite_and_exact_for_extreme_scales(scale):
    q = diagonal_normal(torch.full((3,), 50.0, dtype=torch.float64), torch.full((3,), scale, dtype=torch.float64))
    p = diagonal_normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    value = kl(q, p).value
    assert torch.isfinite(value)
    expected = 3 * (-torch.log(torch.tensor(scale, dtype=torch.float64)) + (scale**2 + 2500) / 2 - 0.5)
    torch.testing.assert_close(value, expected)


def test_float32_kl_stays_finite_at_the_encoder_scale_floor():
    q = diagonal_normal(torch.randn(8, 32) * 30, torch.full((8, 32), 1e-4))
    value = kl(q, standard_normal(32, q.mean)).value
    assert torch.isfinite(value).all() and (value > 0).all()


def mixture_prior(dim: int) -> MixtureSameFamily:
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(3, dim, generator=g, dtype=torch.float64)
    comps = Independent(Normal(loc, torch.rand(3, dim, generator=g, dtype=torch.float64) + 0.5), 1)
    return MixtureSameFamily(Categorical(logits=torch.zeros(3, dtype=torch.float64)), comps)


def test_auto_falls_back_to_monte_carlo_and_matches_numerical_integration():
    torch.manual_seed(0)
    q = diagonal_normal(torch.tensor([[0.0], [1.5]], dtype=torch.float64), torch.tensor([[1.0], [0.3]], dtype=torch.float64))
    p = mixture_prior(1)
    result = kl(q, p, estimator="auto", samples=200_000)
    assert result.method == "mc" and result.per_dim is None
    assert result.value.shape == (2,)
    # KL = integral of q(z) (log q(z) - log p(z)) dz on a fine grid, for each batch element
    z = torch.linspace(-12, 12, 48_001, dtype=torch.float64)[:, None, None]  # (G, 1, 1)
    log_q, log_p = q.log_prob(z), p.log_prob(z).to(torch.float64)  # (G, 2)
    reference = torch.trapezoid(log_q.exp() * (log_q - log_p), z[:, 0, 0], dim=0)
    torch.testing.assert_close(result.value.double(), reference, atol=0.02, rtol=0)


def test_mc_estimate_converges_to_the_analytic_value():
    torch.manual_seed(0)
    q, p = gaussian_pair((4,), dim=3)
    torch.testing.assert_close(mc_kl(q, p, samples=400_000), kl(q, p).value, atol=0.01, rtol=0)
    assert kl(q, p, estimator="mc").method == "mc"


def test_mc_kl_is_differentiable_through_rsample():
    loc = torch.zeros(3, requires_grad=True)
    q = diagonal_normal(loc + 1.0, torch.ones(3))
    mc_kl(q, standard_normal(3, loc), samples=1000).backward()
    assert loc.grad is not None and (loc.grad > 0).all()  # d/dmu of mu^2/2 at mu = 1 is 1


def test_analytic_request_without_a_registered_kl_is_a_clear_error():
    q = diagonal_normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(KlvaeError, match="no analytic KL is registered.*use kl_estimator 'mc'"):
        kl(q, mixture_prior(3), estimator="analytic")


def test_unknown_estimator_and_bad_sample_count_are_errors():
    q, p = gaussian_pair(())
    with pytest.raises(KlvaeError, match="kl estimator must be one of"):
        kl(q, p, estimator="exact")
    with pytest.raises(KlvaeError, match="positive integer"):
        kl(q, p, estimator="mc", samples=0)


@pytest.mark.parametrize("loc_scale", [(0.0, 1.0), (3.0, 0.2), (-40.0, 1e-4), (1e-3, 60.0)])
def test_kl_from_the_standard_prior_matches_the_general_gaussian_form_and_monte_carlo(loc_scale):
    """The standard prior's shorter closed form against torch's Normal || Normal (a prior built
    as a plain Normal), at extreme parameters, and against a Monte Carlo estimate."""
    torch.manual_seed(0)
    loc, scale = loc_scale
    q = diagonal_normal(torch.full((3, 4), loc, dtype=torch.float64) + torch.randn(3, 4, dtype=torch.float64),
                        torch.full((3, 4), scale, dtype=torch.float64))
    prior = standard_normal(4, q.mean)
    general = diagonal_normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    result = kl(q, prior)
    assert type(prior.base_dist).__name__ == "StandardNormal" and result.method == "analytic"
    torch.testing.assert_close(result.per_dim, kl_divergence(q.base_dist, general.base_dist))
    torch.testing.assert_close(result.value, closed_form(q, general))
    assert torch.isfinite(result.value).all()
    mc = mc_kl(q, prior, samples=200_000)
    torch.testing.assert_close(mc, result.value, rtol=0.02, atol=0.02 + 0.01 * float(result.value.abs().max()) ** 0.5)
    assert standard_normal(4, q.mean) is prior  # made once per (dim, dtype, device)
