"""ELBO and IWAE on real (digits) models: gradients, bound ordering, and the IWAE estimate against
log p(x) by numerical integration for a 1-D latent. Statistical checks seed torch first."""
from __future__ import annotations

import math

import pytest
import torch

import klvae
from klvae.evaluation import evaluate_model
from klvae.evaluation.likelihood import split_data
from klvae.models import ModelSpec, build_model
from klvae.objectives import elbo, iwae_bound
from klvae.run import load_config


def train(tmp_path_factory, name: str, **options) -> str:
    out = tmp_path_factory.mktemp(name)
    config = {"data": "digits", "epochs": 25, "batch_size": 32, "latent_dim": 4, "hidden": [128], "progress": False,
              "out": str(out), **options}
    return str(klvae.fit(config, overwrite=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = train(tmp_path_factory, "vae4")
    return klvae.load(run), split_data(load_config(run), "test")


@pytest.fixture(scope="module")
def trained_1d(tmp_path_factory):
    run = train(tmp_path_factory, "vae1", latent_dim=1, epochs=20)
    return klvae.load(run), split_data(load_config(run), "test")


def test_gradients_reach_the_encoder_through_rsample():
    torch.manual_seed(0)
    model = build_model(ModelSpec(event_shape=[1, 8, 8], latent_dim=3, hidden=[16]))
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
    terms = elbo(model, x)
    terms.recon.mean().backward()  # the KL is excluded: only the path through z ~ q can carry gradient
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_elbo_terms_have_per_point_shapes_and_elbo_is_recon_minus_kl():
    torch.manual_seed(0)
    model = build_model(ModelSpec(event_shape=[1, 8, 8], latent_dim=3, hidden=[16]))
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
    terms = elbo(model, x)
    assert terms.recon.shape == terms.kl.shape == (5,) and terms.kl_per_dim.shape == (5, 3)
    torch.testing.assert_close(terms.elbo, terms.recon - terms.kl)
    torch.testing.assert_close(terms.loss(beta=2.0), -(terms.recon - 2.0 * terms.kl).mean())
    assert terms.kl_method == "analytic" and (terms.kl >= 0).all()


def test_iwae_bound_is_at_least_the_elbo_and_grows_with_k(trained):
    model, x = trained
    results = {k: evaluate_model(model, x, iwae_k=k, seed=1) for k in (1, 10, 100, 1000)}
    elbo_value = results[1]["elbo"]
    log_px = {k: -r["nll_iwae"] for k, r in results.items()}
    assert log_px[1] == pytest.approx(elbo_value, abs=0.3)  # K = 1 is the ELBO, up to sampling noise
    assert log_px[1000] > elbo_value + 0.1
    slack = 0.01  # a few standard errors of the mean over 297 points at these K
    assert log_px[1] - slack <= log_px[10] <= log_px[100] + slack <= log_px[1000] + 2 * slack
    assert log_px[1000] - log_px[100] < log_px[10] - log_px[1]  # diminishing returns


def test_iwae_estimate_matches_numerical_integration_for_a_1d_latent(trained_1d):
    model, x = trained_1d
    x = x[:12]
    with torch.no_grad():
        z = torch.linspace(-10, 10, 8001)[:, None]  # (G, 1)
        log_joint = model.decode(z[:, None, :]).log_prob(x) + model.prior().log_prob(z)[:, None]  # (G, N)
        exact = torch.logsumexp(log_joint.double(), 0) + math.log(20 / 8000)
    torch.manual_seed(0)
    estimate = iwae_bound(model, x, k=20_000, chunk=5000).double()
    assert torch.isfinite(estimate).all()
    torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0)


def test_chunked_iwae_agrees_with_one_pass(trained):
    model, x = trained
    x = x[:50]
    torch.manual_seed(3)
    one_pass = iwae_bound(model, x, k=3000)
    chunked = iwae_bound(model, x, k=3000, chunk=7)  # 428 chunks of 7 and one of 4
    assert chunked.shape == (50,)
    assert (chunked - one_pass).mean().abs() < 0.02
