"""Every latent family and prior end to end: train briefly on the generated pendulum images, then
evaluate (ELBO and IWAE from the family's log_prob), sample, interpolate, and check the angle is
recovered; bad combinations are one-line errors."""
from __future__ import annotations

import math

import pytest
import torch

import klvae
from klvae import KlvaeError, TrainConfig
from klvae.evaluation.likelihood import split_with_labels
from klvae.generation import interpolate, reconstruct, sample
from klvae.run import load_config, read_metrics

CASES = [
    ("gaussian", "standard", 2),
    ("vmf", "standard", 2),
    ("power-spherical", "standard", 3),
    ("von-mises", "standard", 1),
    ("spike-slab", "standard", 4),
    ("gaussian", "mog", 2),
    ("gaussian", "vamp", 2),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{b}" for a, b, _ in CASES])
def trained(request, tmp_path_factory):
    latent, prior, dim = request.param
    config = {"data": "pendulum", "latent": latent, "prior": prior, "latent_dim": dim, "net": "mlp",
              "hidden": [128], "epochs": 3, "prior_components": 5, "progress": False,
              "out": str(tmp_path_factory.mktemp(f"{latent}-{prior}"))}
    run = klvae.fit(config)
    model = klvae.load(run)
    x, angles = split_with_labels(load_config(run), "test")
    return run, model, x[:300], angles[:300], request.param


def test_training_writes_finite_metrics_for_every_family(trained):
    run, _, _, _, (latent, _, dim) = trained
    rows = read_metrics(run)
    assert len(rows) == 3
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_elbo", "val_elbo", "val_kl"))
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"] - 1.0
    assert rows[-1]["val_kl"] >= 0


def test_iwae_bound_is_finite_and_at_least_the_elbo(trained):
    _, model, x, _, _ = trained
    result = klvae.evaluation.evaluate_model(model, x, iwae_k=64, seed=0)
    assert math.isfinite(result["nll_iwae"]) and result["nll_iwae"] > 0
    assert -result["nll_iwae"] >= result["elbo"] - 0.5  # a tighter bound, up to sampling noise


def test_samples_reconstructions_and_interpolations_are_images(trained):
    _, model, x, _, _ = trained
    for images in (sample(model, 8, seed=1), reconstruct(model, x[:4]),
                   interpolate(model, x[0], x[1], 5), interpolate(model, x[0], x[1], 5, spherical=True)):
        assert images.shape[1:] == (1, 28, 28)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_samples_follow_the_seed(trained):
    _, model, _, _, _ = trained
    assert torch.equal(sample(model, 4, seed=3), sample(model, 4, seed=3))
    assert not torch.equal(sample(model, 4, seed=3), sample(model, 4, seed=4))


def test_kl_method_is_analytic_where_registered_and_mc_for_learned_priors(trained):
    _, model, x, _, (latent, prior, _) = trained
    result = klvae.kl(model.encode(x[:10]), model.prior(), samples=16)
    assert result.method == ("mc" if prior != "standard" else "analytic")
    assert torch.isfinite(result.value).all() and result.value.shape == (10,)


@pytest.mark.parametrize(("latent", "prior"), [("vmf", "mog"), ("von-mises", "vamp"), ("spike-slab", "mog")])
def test_a_prior_that_does_not_fit_the_latent_is_a_one_line_error(latent, prior):
    with pytest.raises(KlvaeError, match=f"prior '{prior}' does not fit latent '{latent}'"):
        TrainConfig(latent=latent, prior=prior)


def test_a_spherical_latent_needs_two_dimensions():
    with pytest.raises(KlvaeError, match="latent_dim >= 2"):
        klvae.fit({"data": "digits", "latent": "vmf", "latent_dim": 1, "epochs": 1, "progress": False,
                   "out": "/nonexistent/never-written"})


def test_spike_and_slab_reports_the_fraction_of_dimensions_switched_off(trained):
    run, model, x, _, (latent, _, _) = trained
    result = klvae.evaluation.evaluate_model(model, x, iwae_k=4)
    rows = read_metrics(run)
    if latent != "spike-slab":
        assert "off_fraction" not in result and "val_off_fraction" not in rows[-1]
        return
    assert 0 < result["off_fraction"] < 1 and 0 < rows[-1]["val_off_fraction"] < 1
    gamma = model.encode(x).base_dist.spike
    assert result["off_fraction"] == pytest.approx((1 - gamma).mean().item(), abs=1e-5)
