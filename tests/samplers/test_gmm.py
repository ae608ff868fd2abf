"""The Gaussian-mixture sampler and the base class every fitted sampler shares: standardisation
with its Jacobian, the Distribution view, and bad input."""
from __future__ import annotations

import pytest
import torch

from sampler_toys import moments_close
from klvae.errors import KlvaeError
from klvae.samplers import SAMPLERS, GMMConfig, GMMDensity


def test_a_mixture_of_three_fits_the_toy_to_its_true_held_out_nll(toy):
    density = GMMDensity(2, GMMConfig(components=3))
    report = density.fit(toy.train)
    assert report["converged"] and report["seconds"] > 0
    nll = -density.log_prob(toy.test).mean().item()
    assert abs(nll - toy.true_nll(toy.test)) < 0.05, (nll, toy.true_nll(toy.test))
    torch.manual_seed(0)
    moments_close(density.sample(4000), toy.test)


def test_log_prob_of_the_standardised_codes_carries_the_jacobian():
    """Codes scaled by 10 are the same mixture in other units: log p drops by D log 10."""
    torch.manual_seed(0)
    z = torch.randn(500, 3) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    a, b = GMMDensity(3, GMMConfig(components=2)), GMMDensity(3, GMMConfig(components=2))
    a.fit(z), b.fit(10 * z)
    torch.testing.assert_close(b.log_prob(10 * z), a.log_prob(z) - 3 * torch.log(torch.tensor(10.0)), atol=1e-3,
                               rtol=1e-4)


def test_the_distribution_view_draws_from_the_current_seed_and_scores_like_the_density(toy):
    density = GMMDensity(2, GMMConfig(components=3))
    density.fit(toy.train)
    dist = density.distribution()
    assert dist.event_shape == (2,) and dist.batch_shape == ()
    torch.manual_seed(5)
    a = dist.sample((3, 4))
    torch.manual_seed(5)
    assert torch.equal(a.reshape(12, 2), dist.sample((12,)))
    torch.testing.assert_close(dist.log_prob(a), density.log_prob(a.reshape(12, 2)).reshape(3, 4))


def test_the_fit_is_seeded_and_leaves_the_global_random_state_alone(toy):
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    one = GMMDensity(2, GMMConfig(components=3, seed=7))
    one.fit(toy.train)
    assert torch.equal(torch.rand(1), before)
    two = GMMDensity(2, GMMConfig(components=3, seed=7))
    two.fit(toy.train)
    assert torch.equal(one.means, two.means)


@pytest.mark.parametrize("codes, words", [(torch.randn(10, 3), "(N, 2)"), (torch.full((10, 2), float("nan")), "NaN"),
                                          (torch.randn(1, 2), "at least 2")])
def test_bad_codes_are_one_line_errors(codes, words):
    with pytest.raises(KlvaeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        GMMDensity(2, GMMConfig(components=1)).fit(codes)


def test_more_components_than_codes_and_bad_options_are_errors():
    with pytest.raises(KlvaeError, match="lower --components"):
        GMMDensity(2, GMMConfig(components=10)).fit(torch.randn(5, 2))
    with pytest.raises(KlvaeError, match="components"):
        GMMConfig(components=0)
    with pytest.raises(KlvaeError, match="codes must be one of"):
        GMMConfig(codes="median")


def test_the_registry_lists_the_prior_and_the_fitted_samplers():
    assert not SAMPLERS["prior"].fitted and SAMPLERS["gmm"].fitted
    assert SAMPLERS["gmm"].builder is GMMDensity and SAMPLERS["prior"].builder() is None


def test_an_option_shared_by_samplers_has_one_type_so_one_flag_carries_it():
    from klvae.samplers import sampler_options

    for name, owners in sampler_options().items():
        assert len({str(f.type) for f in owners.values()}) == 1, (name, {k: f.type for k, f in owners.items()})
