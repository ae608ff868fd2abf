"""Sample quality (klvae.evaluation.sample_quality): the Fréchet distance against closed forms, the
classifier and its cache, class coverage; sampling from a Gaussian mixture fitted to the codes
(the gmm sampler) and `klvae fit-sampler` + `klvae sample --from gmm --quality`. On the
embedded 8x8 digits, whose classifier trains in seconds. Statistical checks seed torch and numpy
at their top and keep margins of several standard errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import QUICK, assert_user_error, cli
from klvae import KlvaeError
from klvae.data import load_dataset
from klvae.evaluation.likelihood import split_with_labels
from klvae.evaluation.sample_quality import (classifier_data, frechet_distance, gaussian_frechet, reference_classifier,
                                             reference_data, sample_quality)
from klvae.generation import sample
from klvae.samplers import GMMConfig, GMMDensity
from klvae.samplers.codes import encode_codes
from klvae.models import ModelSpec, build_model
from klvae.run import load, load_config

N = 1000  # samples per Fréchet distance: compare distances of equal sample sizes only


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The classifier cache of this module (never the user's own ~/.cache)."""
    return tmp_path_factory.mktemp("klvae-cache")


@pytest.fixture(scope="module")
def digits():
    return reference_data("digits")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A beta = 0.3 VAE of the digits: its aggregated posterior leaves holes in the N(0, I) prior.
    Measured on three training seeds: Fréchet distance of 1,000 prior samples 38-84, of 1,000
    aggregate samples 22-41 (a ratio of 0.5-0.67)."""
    out = tmp_path_factory.mktemp("beta") / "run"
    result = cli("train", "--data", "digits", "--beta", 0.3, "--latent-dim", 16, "--hidden", 128, "--epochs", 20,
                 "--batch-size", 32, "--no-progress", "--out", out)
    assert result.rc == 0, result.err
    return out


@pytest.fixture(scope="module")
def train_x(run) -> torch.Tensor:
    return split_with_labels(load_config(run), "train")[0]


# --- the Fréchet distance ------------------------------------------------------------------------


def _scipy_frechet(mu_a, cov_a, mu_b, cov_b) -> float:
    """The textbook form, with scipy's general matrix square root."""
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def _spd(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 6)), rng.normal(1, 2, size=(300, 6))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 5))
    shifts = [0.5, 1.0, 2.0]
    distances = [frechet_distance(a, a + s) for s in shifts]
    assert distances == pytest.approx([5 * s**2 for s in shifts], rel=1e-9)  # same covariance: ||shift||^2
    assert distances == sorted(distances)


@pytest.mark.parametrize("d", [1, 3, 16])
def test_gaussian_frechet_matches_scipy_on_random_covariances(d):
    rng = np.random.default_rng(d)
    mu_a, mu_b, cov_a, cov_b = rng.normal(size=d), rng.normal(size=d), _spd(rng, d), _spd(rng, d)
    assert gaussian_frechet(mu_a, cov_a, mu_b, cov_b) == pytest.approx(_scipy_frechet(mu_a, cov_a, mu_b, cov_b),
                                                                       rel=1e-7, abs=1e-9)


def test_frechet_distance_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    mu_a, mu_b, cov_a, cov_b = np.zeros(3), np.array([1.0, 0, -1]), _spd(rng, 3), _spd(rng, 3)
    a = rng.multivariate_normal(mu_a, cov_a, size=20_000)
    b = rng.multivariate_normal(mu_b, cov_b, size=20_000)
    exact = _scipy_frechet(mu_a, cov_a, mu_b, cov_b)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.05)


def test_frechet_distance_of_mismatched_features_is_an_error():
    with pytest.raises(KlvaeError, match=r"\(N, F\) and \(M, F\)"):
        frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))


# --- the classifier, coverage --------------------------------------------------------------------


def test_classifier_is_trained_once_reproducibly_and_cached(digits, cache, tmp_path):
    model, meta = reference_classifier(digits, cache)
    assert (cache / "classifier-digits-v1.safetensors").is_file()
    assert float(meta["test_accuracy"]) > 0.9  # measured 0.98
    again, _ = reference_classifier(digits, cache)  # from the cache
    other, _ = reference_classifier(digits, tmp_path)  # trained anew
    x = digits.test[:20]
    assert torch.equal(model.features(x), again.features(x)) and torch.equal(model.features(x), other.features(x))


def test_the_real_test_images_are_at_distance_zero_and_cover_every_class(cache):
    real = load_dataset("digits", binarize="none").test
    q = sample_quality(real, "digits", cache=cache)
    assert q.frechet == pytest.approx(0, abs=1e-6) and q.precision == q.recall == 1.0
    assert q.coverage == 1.0 and sum(q.classes) == pytest.approx(1.0)
    assert q.n == q.n_real == len(real) and q.classifier == "digits" and q.min_share == 0.05


def test_samples_of_one_class_cover_one_class(digits, cache):
    q = sample_quality(digits.test[digits.test_labels == 3], "digits", cache=cache)
    assert q.coverage == 0.1 and q.classes[3] > 0.9
    assert q.frechet > 10  # far from the ten-class test set
    assert q.precision == 1.0 and q.recall < 0.3  # real images of one class: on the manifold, covering a tenth


def test_data_without_a_classifier_is_an_error_naming_the_supported_data():
    with pytest.raises(KlvaeError, match="mnist, binarized-mnist, fashion-mnist, digits, colour-shapes only"):
        classifier_data("frey-face")
    assert classifier_data("binarized_mnist") == "mnist"
    assert classifier_data("colour-shapes") == "colour-shapes"


def test_samples_of_another_shape_are_an_error(cache):
    with pytest.raises(KlvaeError, match=r"\(1, 28, 28\) do not match the digits images \(1, 8, 8\)"):
        sample_quality(torch.rand(5, 1, 28, 28), "digits", cache=cache)


# --- sampling from the aggregated posterior ------------------------------------------------------


def aggregate_posterior(model, x: torch.Tensor) -> GMMDensity:
    density = GMMDensity(model.spec.latent_dim, GMMConfig(components=10))
    density.fit(encode_codes(model, x))
    return density


def test_aggregate_mixture_keeps_the_mean_and_covariance_of_the_posterior_means(run, train_x):
    """At EM's fixed point a mixture's overall mean and covariance are those of the points it fits."""
    model = load(run)
    mixture = aggregate_posterior(model, train_x).distribution()
    assert mixture.event_shape == (16,) and mixture.batch_shape == ()
    means = model.encode(train_x).mean.detach().double()
    torch.manual_seed(0)
    draws = mixture.sample((200_000,)).double()
    assert torch.allclose(draws.mean(0), means.mean(0), atol=0.01)
    assert torch.allclose(draws.var(0), means.var(0, unbiased=False), rtol=0.02, atol=1e-3)


def test_aggregate_samples_reencode_where_the_mixture_is_dense(run, train_x):
    """Decoded aggregate samples, encoded again, lie where the mixture has its mass; decoded prior
    samples much less so (measured: mean log density -3.2 against -6.1)."""
    model = load(run)
    mixture = aggregate_posterior(model, train_x).distribution()
    from_aggregate, from_prior = sample(model, N, 1, latent=mixture), sample(model, N, 1)
    assert from_aggregate.shape == (N, 1, 8, 8)
    dense = mixture.log_prob(model.encode(from_aggregate).mean).mean()
    sparse = mixture.log_prob(model.encode(from_prior).mean).mean()
    assert dense > sparse + 1.0


def test_aggregate_samples_are_closer_to_the_data_than_prior_samples_when_beta_is_below_one(run, train_x, cache):
    """A beta < 1 model's aggregated posterior is not its prior, and samples from the fitted
    mixture are better. Measured: 75-84 (prior) against 41 (mixture) for this run."""
    model = load(run)
    mixture = aggregate_posterior(model, train_x).distribution()
    prior = np.mean([sample_quality(sample(model, N, s), "digits", cache=cache).frechet for s in (0, 1)])
    aggregate = np.mean([sample_quality(sample(model, N, s, latent=mixture), "digits", cache=cache).frechet
                         for s in (0, 1)])
    assert aggregate < 0.85 * prior, (aggregate, prior)


def test_a_sampler_of_a_spherical_latent_is_an_error():
    model = build_model(ModelSpec(event_shape=[1, 8, 8], latent_dim=3, hidden=[8], latent="vmf"))
    with pytest.raises(KlvaeError, match="sphere.*--from prior"):
        encode_codes(model, torch.rand(50, 1, 8, 8))


# --- the command ---------------------------------------------------------------------------------


def test_sample_quality_from_the_command_line(run, cache, tmp_path):
    fitted = cli("fit-sampler", run, "--sampler", "gmm", "--json")
    assert fitted.rc == 0, fitted.err
    result = cli("sample", run, "--from", "gmm", "-n", 300, "--quality", "--json", "--cache-dir", cache,
                 "--out", tmp_path / "s.png")
    assert result.rc == 0, result.err
    reported = json.loads(result.out)
    assert {"frechet", "precision", "recall", "coverage", "classes", "n", "source", "out"} <= set(reported)
    assert reported["source"] == "gmm" and reported["n"] == 300 and len(reported["classes"]) == 10
    assert math.isfinite(reported["frechet"]) and (tmp_path / "s.png").is_file()
    text = cli("sample", run, "-n", 300, "--quality", "--cache-dir", cache)
    assert text.rc == 0 and "not Inception FID" in text.out and "class coverage" in text.out and "recall" in text.out


def test_sample_without_out_or_quality_exits_2(run):
    assert_user_error(cli("sample", run, "-n", 4), "--out", "--quality")


def test_sample_quality_of_a_run_on_data_without_a_classifier_exits_2(tmp_path, cache):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "run"
    assert cli("train", "--data", tmp_path / "x.npy", "--latent-dim", 2, "--epochs", 1, "--out", out, *QUICK).rc == 0
    assert_user_error(cli("sample", out, "--quality", "--cache-dir", cache), "classifier", "mnist", "digits")
