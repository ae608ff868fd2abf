"""The autoregressive decoder (a GRU over image rows): its log_prob against a hand-stepped GRU,
normalisation and sampling on tiny binary image spaces, shapes under the model's conventions,
the errors of a bad combination, and the command line end to end on the 8x8 digits.

Seed policy: each statistical test calls ``torch.manual_seed`` at its top; the chi-square test
rejects only beyond its 1e-4 quantile, so with the fixed seed it neither flakes nor passes by luck.
"""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from scipy.stats import chi2

from helpers import assert_user_error, cli, read_png
from klvae.autoregressive import RowAutoregressive, RowGRUDecoder
from klvae.nets import check_decoder
from klvae.errors import KlvaeError
from klvae.generation import interpolate, reconstruct, sample
from klvae.models import ModelSpec, build_model, model_config
from klvae.objectives import elbo, iwae_bound
from klvae.run import load

LATENT = 3


def decoder(event_shape, width=6, sharpen=3.0, seed=0) -> RowGRUDecoder:
    """A float64 row GRU whose output layer is scaled up, so its probabilities are far from 1/2
    and depend on the rows above (a sharper test than the near-uniform initial network)."""
    torch.manual_seed(seed)
    net = RowGRUDecoder(event_shape, width, LATENT).double()
    with torch.no_grad():
        net.out.weight.mul_(sharpen)
        net.gru.weight_ih_l0.mul_(sharpen)
    return net


def all_images(event_shape) -> torch.Tensor:
    """Every binary image of event_shape: (2^n, *event_shape), float64."""
    n = math.prod(event_shape)
    bits = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)
    return bits.view(-1, *event_shape)


def gru_step(gru: torch.nn.GRU, inp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of PyTorch's GRU from its equations (gates r, z, n in that order)."""
    gi = inp @ gru.weight_ih_l0.T + gru.bias_ih_l0
    gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def log_prob_by_hand(net: RowGRUDecoder, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_r sum_c log Bernoulli(x_rc | x_<r, z), stepping the GRU one row at a time; z: (N, D),
    x: (N, C, H, W) -> (N,)."""
    h = torch.tanh(net.initial(z))
    ctx = torch.relu(net.context(z))
    prev = torch.zeros(len(x), net.row_size, dtype=x.dtype)
    total = torch.zeros(len(x), dtype=x.dtype)
    for r in range(x.shape[2]):
        h = gru_step(net.gru, torch.cat([prev, ctx], -1), h)
        p = torch.sigmoid(net.out(h))
        row = x[:, :, r, :].flatten(1)  # the C channels of row r
        total += (row * torch.log(p) + (1 - row) * torch.log1p(-p)).sum(-1)
        prev = row
    return total


# --- the distribution ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_shape", [(1, 8, 8), (2, 3, 4)])
def test_log_prob_equals_the_sum_of_row_bernoullis_of_a_hand_stepped_gru(event_shape):
    torch.manual_seed(0)
    net = decoder(event_shape)
    z = torch.randn(5, LATENT, dtype=torch.float64)
    x = torch.bernoulli(torch.full((5, *event_shape), 0.4, dtype=torch.float64))
    with torch.no_grad():
        assert torch.allclose(net(z).log_prob(x), log_prob_by_hand(net, z, x), atol=1e-10)


@pytest.mark.parametrize("event_shape", [(1, 2, 2), (1, 3, 3), (2, 2, 2)])
def test_probabilities_of_every_binary_image_sum_to_one(event_shape):
    torch.manual_seed(0)
    net = decoder(event_shape)
    z = torch.randn(3, LATENT, dtype=torch.float64)
    images = all_images(event_shape)  # (M, *event)
    with torch.no_grad():
        log_p = net(z[:, None]).log_prob(images)  # batch (3, 1) with x (M,) -> (3, M)
    assert log_p.shape == (3, len(images))
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-10)


def test_sample_frequencies_match_the_probabilities_on_a_tiny_image_space():
    torch.manual_seed(0)
    event_shape, n = (1, 2, 2), 40_000
    net = decoder(event_shape)
    z = torch.randn(2, LATENT, dtype=torch.float64)
    images = all_images(event_shape)
    with torch.no_grad():
        dist = net(z)
        draws = dist.sample((n,))  # (n, 2, 1, 2, 2)
        probs = net(z[:, None]).log_prob(images).exp()  # (2, 16)
    assert draws.shape == (n, 2, *event_shape)
    codes = (draws.flatten(2) * 2 ** torch.arange(3, -1, -1, dtype=torch.float64)).sum(-1).long()  # (n, 2)
    for b in range(2):  # each z of the batch has its own distribution
        counts = torch.bincount(codes[:, b], minlength=16).double()
        expected = n * probs[b]
        stat = ((counts - expected) ** 2 / expected).sum().item()
        assert stat < chi2.ppf(1 - 1e-4, df=15), (b, stat, counts, expected)


def test_batch_shape_follows_z_for_n_and_k_by_n_latents_as_iwae_uses_them():
    torch.manual_seed(0)
    k, n, event_shape = 4, 5, (1, 8, 8)
    net = decoder(event_shape)
    z = torch.randn(k, n, LATENT, dtype=torch.float64)
    x = torch.bernoulli(torch.full((n, *event_shape), 0.5, dtype=torch.float64))
    with torch.no_grad():
        by_n, by_kn = net(z[0]), net(z)
        assert by_n.batch_shape == (n,) and by_kn.batch_shape == (k, n)
        assert by_kn.event_shape == event_shape
        assert by_n.log_prob(x).shape == (n,)
        lp = by_kn.log_prob(x)  # x (N, ...) broadcast against z (K, N, D)
        assert lp.shape == (k, n)
        assert torch.allclose(lp, torch.stack([net(z[i]).log_prob(x) for i in range(k)]), atol=1e-10)
        assert by_kn.sample().shape == (k, n, *event_shape)
        assert by_kn.sample((2,)).shape == (2, k, n, *event_shape)
        assert by_kn.expand((3, k, n)).log_prob(x).shape == (3, k, n)
        assert by_kn.mean.shape == (k, n, *event_shape)


def test_the_mean_is_a_probability_and_exact_on_the_first_row():
    torch.manual_seed(0)
    net = decoder((1, 4, 4))
    z = torch.randn(6, LATENT, dtype=torch.float64)
    with torch.no_grad():
        mean = net(z).mean
        first_row = torch.sigmoid(net.out(net.gru(
            torch.cat([torch.zeros(6, 1, 4, dtype=torch.float64), torch.relu(net.context(z))[:, None]], -1),
            torch.tanh(net.initial(z))[None])[0]))[:, 0]
    assert ((mean > 0) & (mean < 1)).all()
    assert torch.allclose(mean[:, 0, 0, :], first_row, atol=1e-12)


def test_log_prob_with_validation_rejects_an_image_of_the_wrong_shape():
    net = decoder((1, 4, 4))
    dist = RowAutoregressive(net, *(torch.zeros(2, net.width, dtype=torch.float64) for _ in range(2)),
                             validate_args=True)
    with pytest.raises(ValueError, match="shape"):
        dist.log_prob(torch.zeros(2, 1, 4, 5, dtype=torch.float64))
    assert dist.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.float64)).shape == (2,)


def test_log_prob_passes_gradients_to_z():
    torch.manual_seed(0)
    net = decoder((1, 4, 4))
    z = torch.randn(3, LATENT, dtype=torch.float64, requires_grad=True)
    net(z).log_prob(torch.ones(3, 1, 4, 4, dtype=torch.float64)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# --- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("latent", ["gaussian", "von-mises"])
def test_the_model_decodes_to_a_row_autoregressive_distribution_everywhere_it_is_used(latent):
    torch.manual_seed(0)
    model = build_model(ModelSpec(event_shape=[1, 8, 8], latent_dim=LATENT, hidden=[16, 8], latent=latent,
                                  decoder="autoregressive")).eval()
    x = torch.bernoulli(torch.full((7, 1, 8, 8), 0.3))
    assert model.decoder.width == 16  # hidden[0], the width next to the data
    assert isinstance(model.decode(torch.randn(7, LATENT)), RowAutoregressive)
    terms = elbo(model, x)
    assert terms.recon.shape == (7,) and torch.isfinite(terms.elbo).all()
    assert iwae_bound(model, x, 6, chunk=4).shape == (7,)
    assert sample(model, 5).shape == (5, 1, 8, 8)
    assert reconstruct(model, x).shape == (7, 1, 8, 8)
    assert interpolate(model, x[0], x[1], 4).shape == (4, 1, 8, 8)


def test_a_spec_without_a_decoder_field_is_factorised():
    spec = ModelSpec(event_shape=[1, 8, 8], latent_dim=LATENT, hidden=[8]).to_dict()
    del spec["decoder"]  # model.json of a run trained before the field existed
    assert model_config(spec, strict=False).decoder == "factorised"


@pytest.mark.parametrize("build", [
    lambda: ModelSpec(event_shape=[1, 8, 8], likelihood="gaussian", decoder="autoregressive"),
    lambda: check_decoder("autoregressive", "gaussian", (1, 8, 8)),
])
def test_a_gaussian_likelihood_with_the_autoregressive_decoder_is_an_error_naming_the_fix(build):
    with pytest.raises(KlvaeError, match=r"^decoder 'autoregressive' needs the bernoulli likelihood.*"
                                         r"--likelihood bernoulli.*--decoder factorised$") as err:
        build()
    assert "\n" not in str(err.value)


def test_flat_data_with_the_autoregressive_decoder_is_an_error_naming_the_fix():
    with pytest.raises(KlvaeError, match=r"needs images of shape \(C, H, W\); got data of shape \(64,\); "
                                         r"use --decoder factorised$"):
        ModelSpec(event_shape=[64], decoder="autoregressive")


def test_an_unknown_decoder_in_a_spec_is_an_error():
    with pytest.raises(KlvaeError, match="decoder must be one of factorised, autoregressive; got 'pixelcnn'"):
        ModelSpec(event_shape=[1, 8, 8], decoder="pixelcnn")


def test_train_with_a_gaussian_likelihood_and_the_autoregressive_decoder_exits_with_one_line(tmp_path):
    result = cli("train", "--data", "digits", "--decoder", "autoregressive", "--likelihood", "gaussian",
                 "--epochs", "1", "--out", tmp_path / "run", "--no-progress")
    assert_user_error(result, "autoregressive", "bernoulli", "--decoder factorised")
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- the command line end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ar") / "run"
    result = cli("train", "--data", "digits", "--decoder", "autoregressive", "--epochs", "2", "--hidden", "32",
                 "--latent-dim", "4", "--out", run, "--no-progress")
    assert result.rc == 0, result.err
    return run


def test_a_trained_autoregressive_run_reloads_with_its_decoder(run):
    assert json.loads((run / "model.json").read_text())["decoder"] == "autoregressive"
    model = load(run)
    assert isinstance(model.decode(torch.zeros(2, 4)), RowAutoregressive)


def test_evaluate_of_an_autoregressive_run_gives_finite_consistent_nats(run):
    result = cli("evaluate", run, "--iwae-k", "50", "--json")
    assert result.rc == 0, result.err
    r = json.loads(result.out)
    assert all(math.isfinite(r[k]) for k in ("elbo", "recon", "kl", "nll_iwae"))
    assert r["elbo"] == pytest.approx(r["recon"] - r["kl"], abs=1e-3)
    assert 0 < r["nll_iwae"] <= -r["elbo"] + 0.05  # the IWAE bound is at least the ELBO, up to noise


@pytest.mark.parametrize("argv", [("sample", "-n", "9"), ("reconstruct", "-n", "4"),
                                  ("interpolate", "--a", "0", "--b", "1", "--steps", "5")])
def test_pictures_of_an_autoregressive_run_are_written(run, tmp_path, argv):
    out = tmp_path / "picture.png"
    result = cli(argv[0], run, *argv[1:], "--out", out)
    assert result.rc == 0, result.err
    assert read_png(out).size > 0
