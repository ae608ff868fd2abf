"""Learned priors: MixturePrior and VampPrior are normalised densities over R^D whose samples match
their components, whose parameters learn through log_prob, and whose KL with a Gaussian posterior
goes through the Monte Carlo fallback of ``klvae.kl``.

Seed policy: every statistical test calls ``torch.manual_seed`` at its top and compares estimates
with a tolerance of 5 standard errors, so the tests neither flake nor pass by luck. Statistics run
in float64 (modules are converted with ``.double()``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MixtureSameFamily, Normal

from klvae import KlvaeError, kl
from klvae.distributions import diagonal_normal
from klvae.kl import mc_kl
from klvae.models.vae import VAE
from klvae.models import ModelSpec
from klvae.priors import MixturePrior, VampPrior

F64 = torch.float64
EVENT = (2, 3)  # a small data event shape: pseudo-inputs are (K, 2, 3)


def mixture(dim: int, components: int = 4) -> MixturePrior:
    prior = MixturePrior(dim, components).double()
    with torch.no_grad():  # unequal weights and scales, so the tests see them
        prior.logits.copy_(torch.randn(components, dtype=F64))
        prior.raw_scale.add_(0.5 * torch.randn(components, dim, dtype=F64))
    return prior


def vamp(dim: int, components: int = 4) -> tuple[VampPrior, VAE]:
    model = VAE(ModelSpec(event_shape=list(EVENT), latent_dim=dim, hidden=[8])).double()
    return VampPrior(dim, components, EVENT, model.encode).double(), model


def build(kind: str, dim: int, components: int = 4) -> tuple[MixturePrior | VampPrior, MixtureSameFamily]:
    prior = mixture(dim, components) if kind == "mixture" else vamp(dim, components)[0]
    return prior, prior()


def mixture_moments(p: MixtureSameFamily) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and variance (D,) of a mixture of Independent Normals, from its components."""
    w = p.mixture_distribution.probs[:, None]  # (K, 1)
    mu, var = p.component_distribution.mean, p.component_distribution.variance  # (K, D)
    mean = (w * mu).sum(0)
    return mean, (w * (var + mu**2)).sum(0) - mean**2


KINDS = ["mixture", "vamp"]


@pytest.mark.parametrize("kind", KINDS)
def test_prior_is_a_distribution_over_latent_vectors(kind):
    torch.manual_seed(0)
    _, p = build(kind, dim=3)
    assert isinstance(p, MixtureSameFamily)
    assert p.batch_shape == () and p.event_shape == (3,)
    assert p.sample((7,)).shape == (7, 3)
    assert p.log_prob(torch.randn(5, 2, 3, dtype=F64)).shape == (5, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_integrates_to_one_in_one_dimension(kind):
    torch.manual_seed(0)
    _, p = build(kind, dim=1)
    z = torch.linspace(-25, 25, 100_001, dtype=F64)[:, None]  # (G, 1)
    with torch.no_grad():
        mass = torch.trapezoid(p.log_prob(z).exp(), z[:, 0])
    assert mass.item() == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_match_the_moments_of_the_components(kind):
    torch.manual_seed(0)
    _, p = build(kind, dim=2)
    n = 200_000
    with torch.no_grad():
        z = p.sample((n,))
        mean, var = mixture_moments(p)
    assert ((z.mean(0) - mean).abs() < 5 * var.sqrt() / math.sqrt(n)).all(), (z.mean(0), mean)
    # SE of a sample variance <= sqrt(E[(z - m)^4] / n); the empirical fourth moment bounds it
    se = ((z - mean) ** 4).mean(0).sqrt() / math.sqrt(n)
    assert ((z.var(0) - var).abs() < 5 * se).all(), (z.var(0), var)


def test_mixture_prior_starts_with_unit_scales_equal_weights_and_distinct_means():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=3)
    assert prior.components == 10
    torch.testing.assert_close(prior.scales, torch.ones(10, 3))
    torch.testing.assert_close(prior().mixture_distribution.probs, torch.full((10,), 0.1))
    assert torch.cdist(prior.means, prior.means).add(torch.eye(10)).min() > 0


def test_gradients_reach_the_mixture_parameters_through_log_prob():
    torch.manual_seed(0)
    prior, p = build("mixture", dim=3)
    p.log_prob(torch.randn(16, 3, dtype=F64)).mean().backward()
    for name in ("logits", "means", "raw_scale"):
        grad = getattr(prior, name).grad
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all(), name


def test_gradients_reach_the_pseudo_inputs_and_the_encoder_through_log_prob():
    torch.manual_seed(0)
    prior, model = vamp(dim=3)
    prior().log_prob(torch.randn(16, 3, dtype=F64)).mean().backward()
    grad = prior.raw_inputs.grad
    assert grad is not None and grad.shape == (4, *EVENT) and torch.isfinite(grad).all() and (grad != 0).all()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.encoder.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_kl_to_a_learned_prior_falls_back_to_monte_carlo_and_agrees_with_a_larger_sample(kind):
    torch.manual_seed(0)
    _, p = build(kind, dim=2)
    q = diagonal_normal(torch.randn(3, 2, dtype=F64), torch.rand(3, 2, dtype=F64) + 0.3)  # batch (3,)
    small = 4000
    with torch.no_grad():
        result = kl(q, p, estimator="auto", samples=small)
        assert result.method == "mc" and result.per_dim is None and result.value.shape == (3,)
        z = q.sample((400_000,))
        log_ratio = q.log_prob(z) - p.log_prob(z)  # (S, 3)
    reference, sd = log_ratio.mean(0), log_ratio.std(0)
    se = sd * math.sqrt(1 / small + 1 / z.shape[0])  # SE of the difference of the two estimates
    assert ((result.value - reference).abs() < 5 * se).all(), (result.value, reference, se)
    assert (reference > 0).all()
    with pytest.raises(KlvaeError, match="no analytic KL is registered"):
        kl(q, p, estimator="analytic")


def test_mc_kl_to_a_learned_prior_is_differentiable_in_the_prior():
    torch.manual_seed(0)
    prior, p = build("mixture", dim=2)
    q = diagonal_normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    mc_kl(q, p, samples=64).sum().backward()
    assert torch.isfinite(prior.means.grad).all() and prior.means.grad.abs().sum() > 0


def test_vamp_prior_with_one_pseudo_input_is_the_posterior_of_that_input():
    torch.manual_seed(0)
    prior, model = vamp(dim=3, components=1)
    q = model.encode(prior.pseudo_inputs)  # batch (1,)
    z = torch.randn(10, 3, dtype=F64)
    torch.testing.assert_close(prior().log_prob(z), q.log_prob(z[:, None]).squeeze(-1))


def test_pseudo_inputs_stay_in_the_data_range_and_can_start_from_data():
    torch.manual_seed(0)
    prior, _ = vamp(dim=2, components=3)
    assert ((prior.pseudo_inputs > 0) & (prior.pseudo_inputs < 1)).all()
    with torch.no_grad():
        prior.raw_inputs.add_(100 * torch.randn_like(prior.raw_inputs))  # any raw value stays in range
    assert ((prior.pseudo_inputs >= 0) & (prior.pseudo_inputs <= 1)).all()
    x = torch.rand(5, *EVENT, dtype=F64)
    x[0, 0, 0], x[1, 0, 0] = 0.0, 1.0
    prior.init_from(x)
    torch.testing.assert_close(prior.pseudo_inputs, x[:3].clamp(1e-3, 1 - 1e-3))
    free = VampPrior(2, 3, EVENT, prior._encode, bounded=False).double().init_from(3 * x - 1)
    torch.testing.assert_close(free.pseudo_inputs, (3 * x - 1)[:3])
    assert list(dict(prior.state_dict())) == ["raw_inputs"]  # the encoder is the model's, not saved twice


def test_bad_prior_arguments_are_errors_naming_the_parameter():
    encode = vamp(dim=2)[1].encode
    with pytest.raises(ValueError, match="components must be a positive integer; got 0"):
        MixturePrior(2, components=0)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        MixturePrior(2.5)
    with pytest.raises(ValueError, match="pseudo_inputs must be a positive integer"):
        VampPrior(2, 0, EVENT, encode)
    with pytest.raises(TypeError, match="encode must be a callable"):
        VampPrior(2, 3, EVENT, encode=None)
    with pytest.raises(ValueError, match=r"x must have shape \(N >= 3, 2, 3\)"):
        VampPrior(2, 3, EVENT, encode).init_from(torch.rand(2, *EVENT))
    wrong = VampPrior(5, 3, EVENT, encode).double()  # the encoder gives D = 2, not 5
    with pytest.raises(ValueError, match=r"encode\(u\) must be a distribution with batch_shape \(3,\) and event_shape \(5,\)"):
        wrong()
    flat = VampPrior(2, 3, EVENT, lambda x: Independent(Normal(x.flatten(1)[:, :2], 1.0), 1)).double()
    assert flat().event_shape == (2,)  # any encode returning q(z|x) of the right shapes works
