"""The discretised logistic likelihoods of 8-bit pixels: normalisation over the 256 values, values
against independent float64 computations (scipy's logistic log-CDF; an explicit loop over the
mixture's components and channels), sampling frequencies, extreme parameters, and the registry.

Seed policy: every test starts from torch.manual_seed(SEED) and numpy's default_rng(SEED) (the
autouse fixture below); statistical checks allow 5 standard errors of their sample size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as np_log_softmax
from scipy.special import logsumexp as np_logsumexp
from scipy.stats import logistic

import klvae
from klvae import KlvaeError
from klvae.likelihoods import LIKELIHOODS, output_shape
from klvae.likelihoods.logistic import DiscretisedLogistic, coupling_index
from klvae.models.vae import VAEConfig
from klvae.run import read_metrics

SEED = 0
GRID = torch.arange(256) / 255.0  # the 256 values of an 8-bit element, float32
LOCS = [-1e4, -3.0, -0.2, 0.0, 0.5 / 255, 0.3, 0.5 + 0.5 / 255, 0.77, 1.0, 1.2, 1e4]  # inside, on edges, far out
LOG_SCALES = [-50.0, -20.0, -7.0, -4.0, 0.0, 5.0, 50.0]  # below the floor, the floor, tiny, large


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(SEED)
    return np.random.default_rng(SEED)


def reference_log_prob(x, loc, log_scale):
    """log P(bin of x) in float64 from scipy's logistic log-CDF and log-survival function, the
    bin edges k/255 -+ 1/510 (the first bin from -inf, the last to +inf); the log-space difference
    is taken on the side of loc where it does not cancel. Broadcasts."""
    x, loc, scale = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(loc, np.float64),
                                        np.exp(np.asarray(log_scale, np.float64)))
    upper = np.where(x > 1 - 1 / 510, np.inf, (x - loc + 1 / 510) / scale)
    lower = np.where(x < 1 / 510, -np.inf, (x - loc - 1 / 510) / scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = logistic.logcdf(upper) + np.log1p(-np.exp(logistic.logcdf(lower) - logistic.logcdf(upper)))
        right = logistic.logsf(lower) + np.log1p(-np.exp(logistic.logsf(upper) - logistic.logsf(lower)))
    return np.where(x - loc <= 0, left, right)


def mixture_reference(out, x, components):
    """log p(x) of each image in float64 by an explicit loop over images, pixels, components and
    channels, reading the decoder output by its documented layout: out (B, K (1 + 2C + P), H, W),
    x (B, C, H, W) -> (B,)."""
    out, x = out.double().numpy(), x.double().numpy()
    k_, (b_, c_, h_, w_) = components, x.shape
    total = np.zeros(b_)
    for b in range(b_):
        for h in range(h_):
            for w in range(w_):
                o = out[b, :, h, w]
                terms = np_log_softmax(o[:k_])
                for k in range(k_):
                    for c in range(c_):
                        loc = o[k_ + c * k_ + k]
                        for j in range(c):
                            pair = c * (c - 1) // 2 + j
                            loc += np.tanh(o[k_ * (1 + 2 * c_) + pair * k_ + k]) * x[b, j, h, w]
                        log_scale = max(o[k_ + c_ * k_ + c * k_ + k], -7.0)
                        terms[k] += reference_log_prob(x[b, c, h, w], loc, log_scale)
                total[b] += np_logsumexp(terms)
    return total


def mixture(channels, components, out):
    """The registered logistic-mixture likelihood applied to a decoder output (*S, ., H, W)."""
    config = VAEConfig(mixture_components=components)
    return LIKELIHOODS.build("logistic-mixture", (channels, *out.shape[-2:]), config)(out, 3)


def logistic_likelihood(out, event_ndims=3):
    return LIKELIHOODS.build("logistic", tuple(out.shape[-event_ndims:]), VAEConfig())(out, event_ndims)


# --- one discretised logistic ------------------------------------------------------------------


@pytest.mark.parametrize("log_scale", LOG_SCALES)
def test_the_256_probabilities_of_one_element_sum_to_one(log_scale):
    loc = torch.tensor(LOCS)[:, None]  # (L, 1) against the grid (256,)
    p = DiscretisedLogistic(loc, torch.full_like(loc, log_scale)).log_prob(GRID).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(len(LOCS)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("log_scale", [-7.0, -5.5, -3.0, -1.0, 0.0, 2.0, 5.0])
def test_log_prob_matches_scipys_logistic_cdf_in_float64(log_scale, seeded):
    loc = torch.tensor(seeded.uniform(-0.5, 1.5, 64), dtype=torch.float32)[:, None]
    x = GRID[torch.tensor(seeded.integers(0, 256, 40))]
    x = torch.cat([x, GRID[[0, 1, 254, 255]]])  # the edge bins and their neighbours
    got = DiscretisedLogistic(loc, torch.tensor(log_scale)).log_prob(x)
    want = reference_log_prob(x.numpy(), loc.numpy(), log_scale)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=2e-4)


def test_log_prob_is_exact_in_the_far_tails_where_pixelcnn_approximates_by_the_density():
    loc = torch.tensor([0.5, 0.5, 0.02, 0.98])[:, None]
    x = GRID[[128, 140, 200, 255, 0, 60]]
    got = DiscretisedLogistic(loc, torch.tensor(-7.0)).log_prob(x)  # bins down to e^-1000 and below
    want = reference_log_prob(x.numpy(), loc.numpy(), -7.0)
    assert (want < math.log(1e-5)).sum() > 10
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=2e-4)


def test_the_likelihood_floors_the_log_scale_at_minus_seven_and_splits_loc_from_log_scale():
    loc, log_scale = torch.rand(2, 3, 4, 4), torch.empty(2, 3, 4, 4).uniform_(-50, 3)
    x = GRID[torch.randint(0, 256, (2, 3, 4, 4))]
    got = logistic_likelihood(torch.cat([loc, log_scale], 1)).log_prob(x)
    want = reference_log_prob(x.numpy(), loc.numpy(), np.maximum(log_scale.numpy(), -7.0)).sum((1, 2, 3))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("loc,log_scale", [(0.3, -7.0), (0.4 + 0.3 / 255, -4.0), (-0.01, -4.5), (0.5, -1.0),
                                           (1.05, -2.0)])
def test_samples_are_on_the_grid_with_the_bin_probabilities(loc, log_scale):
    n = 200_000
    d = DiscretisedLogistic(torch.tensor(loc), torch.tensor(log_scale))
    x = d.sample((n,))
    levels = x * 255
    assert torch.equal(levels, levels.round()) and 0 <= levels.min() and levels.max() <= 255
    freq = torch.bincount(levels.round().long(), minlength=256).double() / n
    p = torch.from_numpy(np.exp(reference_log_prob(GRID.numpy(), loc, log_scale)))
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1 / n).all()


@pytest.mark.parametrize("log_scale", [-7.0, -4.0, 0.0, 3.0])
def test_the_mean_is_the_exact_mean_over_the_256_values(log_scale):
    loc = torch.tensor(LOCS[1:-1])[:, None]
    want = (np.exp(reference_log_prob(GRID.numpy(), loc.numpy(), log_scale)) * GRID.numpy()).sum(-1)
    got = DiscretisedLogistic(loc[:, 0], torch.tensor(log_scale)).mean
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-6)


# --- the mixture ---------------------------------------------------------------------------------


def extreme_output(shape, seeded):
    """A decoder output whose every entry is drawn from extreme values."""
    values = np.array([-1e4, -50.0, -7.0, -1e-3, 0.0, 0.5, 1.0, 50.0, 1e4])
    return torch.tensor(seeded.choice(values, shape), dtype=torch.float32)


@pytest.mark.parametrize("case", ["moderate", "extreme"])
def test_the_grey_mixture_sums_to_one_over_the_256_values(case, seeded):
    k = 4
    out = torch.randn(6, 3 * k, 1, 1) * 2 if case == "moderate" else extreme_output((6, 3 * k, 1, 1), seeded)
    log_p = mixture(1, k, out).log_prob(GRID[:, None, None, None, None])  # (256, 6)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(6), rtol=0, atol=1e-5)


def test_the_rgb_mixture_sums_to_one_over_all_256_cubed_values_of_a_pixel():
    k = 2
    out = torch.randn(1, 10 * k, 1, 1)
    out[0, k:3 * k, 0, 0] = torch.rand(2 * k)  # locs of the first two channels inside [0, 1]
    out[0, 4 * k:7 * k:2, 0, 0] = -7.0  # component 0: every scale at the floor; component 1: moderate
    out[:, 7 * k:] *= 3  # strong coupling
    d = mixture(3, k, out)
    pairs = torch.cartesian_prod(GRID, GRID)  # (65536, 2): channels 1 and 2
    chunks = []
    for first in GRID.split(4):  # 4 values of channel 0 at a time: 262144 pixel values per chunk
        x = torch.cat([first.repeat_interleave(len(pairs))[:, None], pairs.repeat(len(first), 1)], 1)
        chunks.append(torch.logsumexp(d.log_prob(x[:, :, None, None]), 0))
    total = torch.logsumexp(torch.stack(chunks), 0).exp()
    assert abs(total.item() - 1) < 1e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_log_prob_matches_an_explicit_float64_loop_over_components_and_channels(channels, seeded):
    k = 3
    out = torch.randn(4, k * (1 + 2 * channels + channels * (channels - 1) // 2), 2, 3) * 2
    out[:, k:k + channels * k] = torch.rand(4, channels * k, 2, 3) * 1.4 - 0.2  # locs near [0, 1]
    x = GRID[torch.tensor(seeded.integers(0, 256, (4, channels, 2, 3)))]
    x[0, :, 0, 0], x[1, :, 0, 0] = 0.0, 1.0  # the edge bins
    got = mixture(channels, k, out).log_prob(x)
    np.testing.assert_allclose(got.numpy(), mixture_reference(out, x, k), rtol=1e-5, atol=1e-3)


def test_mixture_samples_follow_the_joint_probabilities_of_the_coupled_channels():
    n, k = 100_000, 2
    out = torch.zeros(1, 10 * k, 1, 1)
    out[0, :k, 0, 0] = torch.tensor([0.0, 1.0])  # weights 0.27, 0.73
    out[0, k:4 * k, 0, 0] = torch.tensor([0.2, 0.7, 0.3, 0.1, 0.5, 0.4])  # locs (channel, component)
    out[0, 4 * k:7 * k, 0, 0] = torch.tensor([-4.5, -5.0, -6.0, -6.0, -6.5, -7.0])  # log-scales
    out[0, 7 * k:, 0, 0] = torch.tensor([2.0, -1.0, 1.0, 0.5, -2.0, 3.0])  # coupling before tanh
    d = mixture(3, k, out)
    x = d.sample((n,))  # (n, 1, 3, 1, 1)
    assert x.shape == (n, 1, 3, 1, 1) and torch.equal(x * 255, (x * 255).round())
    triples, counts = torch.unique(x.reshape(n, 3), dim=0, return_counts=True)
    p = d.log_prob(triples[:, None, :, None, None])[:, 0].double().exp()
    freq = counts.double() / n
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 2 / n).all()
    assert p.sum() > 0.99  # the sampled triples hold the mass: sampling ignored nothing likely


def test_the_mixture_mean_is_the_documented_approximation_and_near_the_sample_mean():
    k = 3
    out = torch.randn(2, 10 * k, 2, 2)
    out[:, k:4 * k] = torch.rand(2, 3 * k, 2, 2) * 0.2 + 0.4
    out[:, 7 * k:] = torch.rand(2, 3 * k, 2, 2) * 0.4 - 0.2  # every coupled loc stays within [0.14, 0.86]
    out[:, 4 * k:7 * k] = -4.0  # a scale of 4.7 bins: the edges and the rounding move no mean
    d = mixture(3, k, out)
    o = out.double().numpy()
    weights, want = np.exp(np_log_softmax(o[:, :k], axis=1)), np.zeros((2, 3, 2, 2))
    for comp in range(k):
        means = []
        for c in range(3):
            m = o[:, k + c * k + comp] + sum(np.tanh(o[:, 7 * k + coupling_index(c, j) * k + comp]) * means[j]
                                             for j in range(c))
            means.append(np.clip(m, 0, 1))
            want[:, c] += weights[:, comp] * means[c]
    np.testing.assert_allclose(d.mean.numpy(), want, rtol=0, atol=1e-6)
    draws = d.sample((20_000,)).double()
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - d.mean).abs() <= 5 * se + 2e-3).all()


# --- both: extreme inputs, gradients, broadcasting, the registry ----------------------------------


def test_one_logistic_is_finite_with_finite_gradients_for_extreme_locs_and_log_scales():
    loc = torch.tensor(LOCS)[:, None, None].requires_grad_()  # (L, 1, 1)
    log_scale = torch.tensor(LOG_SCALES + [1e4])[:, None].requires_grad_()  # (S, 1)
    d = DiscretisedLogistic(loc, log_scale)
    log_p = d.log_prob(GRID)  # (L, S, 256)
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    log_p.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()
    assert torch.isfinite(d.mean).all() and torch.isfinite(d.sample()).all()


@pytest.mark.parametrize("name", ["logistic", "logistic-mixture"])
def test_extreme_outputs_give_finite_log_probs_gradients_means_and_grid_samples(name, seeded):
    k = 10
    channels = 2 * 3 if name == "logistic" else 10 * k
    out = extreme_output((8, channels, 4, 4), seeded).requires_grad_()
    d = logistic_likelihood(out) if name == "logistic" else mixture(3, k, out)
    x = GRID[torch.tensor(seeded.integers(0, 256, (8, 3, 4, 4)))]
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0
    log_p = d.log_prob(x)
    assert log_p.shape == (8,) and torch.isfinite(log_p).all() and (log_p <= 0).all()
    log_p.sum().backward()
    assert torch.isfinite(out.grad).all()
    mean = d.mean
    assert torch.isfinite(mean).all() and (0 <= mean).all() and (mean <= 1).all()
    sample = d.sample()
    assert sample.shape == (8, 3, 4, 4) and torch.equal(sample * 255, (sample * 255).round())
    assert (0 <= sample).all() and (sample <= 1).all()


@pytest.mark.parametrize("name", ["logistic", "logistic-mixture"])
def test_log_prob_broadcasts_importance_samples_against_the_data(name):
    k_samples, b, k = 5, 3, 2
    out = torch.randn(k_samples, b, 6 if name == "logistic" else 10 * k, 2, 2)
    build = (lambda o: logistic_likelihood(o)) if name == "logistic" else (lambda o: mixture(3, k, o))
    x = GRID[torch.randint(0, 256, (b, 3, 2, 2))]
    d = build(out)
    assert d.batch_shape == (k_samples, b) and d.event_shape == (3, 2, 2)
    got = d.log_prob(x)  # (K, B) against (B, C, H, W)
    want = torch.stack([torch.stack([build(out[i, j]).log_prob(x[j]) for j in range(b)]) for i in range(k_samples)])
    assert got.shape == (k_samples, b)
    torch.testing.assert_close(got, want)
    assert d.sample().shape == (k_samples, b, 3, 2, 2) and d.mean.shape == (k_samples, b, 3, 2, 2)


def test_flat_data_take_the_logistic_per_element():
    out = torch.cat([torch.rand(4, 10), torch.full((4, 10), -3.0)], -1)
    x = GRID[torch.randint(0, 256, (4, 10))]
    want = reference_log_prob(x.numpy(), out[:, :10].numpy(), -3.0).sum(-1)
    np.testing.assert_allclose(logistic_likelihood(out, 1).log_prob(x).numpy(), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_the_registry_gives_the_decoder_output_of_each_likelihood(k):
    config = VAEConfig(mixture_components=k)
    assert output_shape((3, 8, 8), "logistic-mixture", config) == (10 * k, 8, 8)
    assert output_shape((1, 8, 8), "logistic-mixture", config) == (3 * k, 8, 8)
    assert output_shape((4, 8, 8), "logistic-mixture", config) == (k * (1 + 8 + 6), 8, 8)
    assert output_shape((3, 8, 8), "logistic", config) == (6, 8, 8)
    for name in ("logistic", "logistic-mixture"):
        entry = LIKELIHOODS[name]
        assert (entry.discrete, entry.bound, entry.data_range) == (True, True, (0.0, 1.0))


def test_the_mixture_on_flat_data_or_a_wrong_output_is_one_line_naming_the_fix():
    with pytest.raises(KlvaeError, match=r"^likelihood logistic-mixture needs images of shape \(C, H, W\); got data "
                                         r"of shape \(64,\); use --likelihood logistic$"):
        output_shape((64,), "logistic-mixture", VAEConfig(event_shape=[64], net="mlp"))
    with pytest.raises(KlvaeError, match=r"reads \(\*S, 20, H, W\) for 2 components of 3 channels; "
                                         r"got \(2, 21, 4, 4\)"):
        mixture(3, 2, torch.zeros(2, 21, 4, 4))
    with pytest.raises(KlvaeError, match=r"even channel count; got \(2, 5, 4, 4\)"):
        logistic_likelihood(torch.zeros(2, 5, 4, 4))


@pytest.mark.parametrize("name", ["logistic", "logistic-mixture"])
def test_training_end_to_end_gives_finite_bounds_on_the_probabilities_of_8_bit_values(tmp_path, name):
    levels = np.random.default_rng(SEED).integers(0, 256, (40, 3, 8, 8))
    np.save(tmp_path / "pixels.npy", (levels / 255).astype(np.float32))
    run = klvae.fit({"data": str(tmp_path / "pixels.npy"), "likelihood": name, "net": "mlp", "hidden": [16],
                     "latent_dim": 2, "mixture_components": 2, "epochs": 2, "batch_size": 8, "progress": False,
                     "out": str(tmp_path / "run")})
    rows = read_metrics(run)
    assert len(rows) == 2 and all(math.isfinite(r["train_elbo"]) and r["val_elbo"] <= 0 for r in rows)
    result = klvae.evaluate(run, iwae_k=4)
    assert result["nll_iwae"] > 0 and math.isfinite(result["nll_iwae"])
    assert result["bits_per_dim"] == pytest.approx(result["nll_iwae"] / (3 * 8 * 8 * math.log(2)))
