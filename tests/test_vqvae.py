"""VQ-VAE and its soft-to-hard (Gumbel-softmax) relaxation: the straight-through gradient, the
commitment and codebook losses, code perplexity, the temperature schedule, the prior over codes,
training, the run directory, the options.

Seed policy: every test that draws seeds torch at its top."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import klvae
from klvae import KlvaeError, TrainConfig
from klvae.evaluation.likelihood import split_data
from klvae.generation import interpolate, reconstruct, sample
from klvae.models import VQVAE, ModelSpec, build_model
from klvae.models.vqvae import code_perplexity
from klvae.objectives import elbo, iwae_bound
from klvae.run import read_metrics

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def tiny(quantizer: str = "vq-ema", seed: int = 0, **options) -> VQVAE:
    torch.manual_seed(seed)
    spec = ModelSpec(event_shape=[12], hidden=[16], model="vqvae", latent_dim=3, codes=6, positions=2,
                     quantizer=quantizer, **options)
    return build_model(spec)


def data(n: int = 16) -> torch.Tensor:
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def nearest(model: VQVAE, z_e: torch.Tensor) -> torch.Tensor:
    """The nearest codebook vector of each position, by brute force: (N, P, D)."""
    distances = ((z_e.unsqueeze(-2) - model.codebook) ** 2).sum(-1)  # (N, P, K)
    return model.codebook[distances.argmin(-1)]


def test_the_encoder_gets_the_decoders_gradient_at_the_code_straight_through():
    model, x = tiny("vq"), data()
    elbo(model, x)  # step 0 places the codebook on encoder outputs
    model.zero_grad()
    (-elbo(model, x).recon.sum()).backward()
    through = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    z_e = model.encoder_output(x)
    z_q = nearest(model, z_e).detach().requires_grad_()
    (-model._decode_vectors(z_q).log_prob(x).sum()).backward()
    z_e.backward(z_q.grad)  # the decoder's gradient at z_q, handed to z_e unchanged
    for a, b in zip(through, [p.grad for p in model.encoder.parameters()]):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in through)


@pytest.mark.parametrize(("quantizer", "factor"), [("vq-ema", 0.25), ("vq", 1.25)])
def test_commitment_and_codebook_losses_are_the_squared_distance_to_the_nearest_code(quantizer, factor):
    model, x = tiny(quantizer), data()
    elbo(model, x)
    terms = elbo(model.eval(), x)  # no update between the two looks at the codebook
    z_e = model.encoder_output(x)
    distance = ((z_e - nearest(model, z_e)) ** 2).sum((-2, -1))
    torch.testing.assert_close(terms.penalty, factor * distance)
    torch.testing.assert_close(terms.loss(), -terms.recon.mean() + factor * distance.mean())


def test_a_hard_posteriors_kl_is_minus_the_log_prior_of_its_codes():
    model, x = tiny(), data()
    terms = elbo(model.eval(), x)
    codes = terms.q.mean  # one-hot (N, P, K)
    assert torch.equal(codes.sum(-1), torch.ones(16, 2))
    torch.testing.assert_close(terms.kl, -model.prior().log_prob(codes))
    torch.testing.assert_close(iwae_bound(model, x, 5), terms.elbo)  # a deterministic q: every weight the same


def test_perplexity_is_the_number_of_codes_used_evenly():
    k = 8
    assert code_perplexity(F.one_hot(torch.arange(64) % k, k).float()).item() == pytest.approx(k)
    assert code_perplexity(F.one_hot(torch.zeros(64, dtype=torch.long), k).float()).item() == pytest.approx(1)
    probs = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert code_perplexity(probs.expand(10, 4)).item() == pytest.approx(math.exp(1.5 * math.log(2)))


def test_gumbel_temperature_anneals_to_hard_codes_and_its_loss_weighs_the_kl_to_uniform():
    torch.manual_seed(0)
    model, x = tiny("gumbel", temperature=2.0, temperature_steps=10), data()
    assert model.temperature() == pytest.approx(2.0)
    model.steps.fill_(5)
    assert model.temperature() == pytest.approx(math.sqrt(2.0 * 0.1))
    terms = elbo(model, x)
    probs = terms.q.base_dist.probs
    uniform_kl = (probs * (probs * 6).log()).sum((-2, -1))
    torch.testing.assert_close(terms.loss_kl, uniform_kl)
    torch.testing.assert_close(terms.loss(0.5), -(terms.recon.mean() - 0.5 * uniform_kl.mean()))
    model.steps.fill_(10)
    assert model.temperature() == pytest.approx(0.1)
    seen = []
    handle = model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    elbo(model, x)
    handle.remove()
    codes = seen[0].view(16, 2, 3)  # hard: every decoded vector is a codebook row
    assert all((codes[n, p] == model.codebook).all(-1).any() for n in range(16) for p in range(2))


def test_the_prior_is_fitted_to_the_codes_and_sampled_per_position():
    torch.manual_seed(0)
    model, x = tiny(), data(64)
    elbo(model, x)
    model.eval().fit_prior(x)
    codes = model.encode(x).mean
    frequencies = codes.mean(0)  # (P, K)
    prior = model.prior().base_dist.probs
    torch.testing.assert_close(prior, frequencies, atol=1e-3, rtol=0)
    draws = model.prior().sample((20000,))
    torch.testing.assert_close(draws.mean(0), prior, atol=0.02, rtol=0)
    assert sample(model, 5).shape == (5, 12)


def test_dead_codes_restart_on_encoder_outputs():
    torch.manual_seed(0)
    model, x = tiny("vq"), data()  # a codebook that only gradients (none here) and restarts move
    elbo(model, x)
    with torch.no_grad():
        model.codebook[0] = 100.0  # far from the data: unused from now on
        model.recent_counts.zero_()
    for _ in range(19):
        elbo(model, x)
    assert model.codebook[0].min() == 100 and model.recent_counts[0] == 0
    elbo(model, x)  # step 20: the check
    assert model.codebook[0].abs().max() < 100  # moved onto the data
    assert model.recent_counts.sum() == 16 * 2  # counted afresh since the check


def test_a_run_trains_evaluates_samples_and_reloads(tmp_path):
    run = klvae.fit({"model": "vqvae", "codes": 16, "positions": 4, "latent_dim": 4, "hidden": [64], "epochs": 4,
                     "progress": False, "out": str(tmp_path / "vq")})
    rows = read_metrics(run)
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"]
    assert all(1 <= r["val_perplexity"] <= 16 for r in rows)  # how evenly the 16 codes are used
    result = klvae.evaluate(run, iwae_k=10)
    assert result["nll_iwae"] == pytest.approx(-result["elbo"], abs=1e-3) and len(result["kl_per_dim"]) == 4
    model = klvae.load(run)
    assert isinstance(model, VQVAE) and model.steps.item() > 0  # the training steps come back with the weights
    assert {"codebook", "cluster_size", "embed_sum", "code_counts", "recent_counts", "steps"} <= set(model.state_dict())
    config = TrainConfig.from_yaml(run / "config.yaml")
    x = split_data(config, "test")[:6]
    assert sample(model, 5).shape == (5, *x.shape[1:])
    assert reconstruct(model, x).shape == x.shape
    assert interpolate(model, x[0], x[1], 4).shape == (4, *x.shape[1:])


def test_most_codes_are_in_use_after_a_short_mnist_run(shared_data, tmp_path):
    root = shared_data("mnist", *MNIST_FILES)
    config = {"model": "vqvae", "data": "mnist", "data_dir": str(root), "codes": 64, "positions": 8, "latent_dim": 8,
              "hidden": [128], "net": "mlp", "epochs": 1, "progress": False, "out": str(tmp_path / "mnist")}
    run = klvae.fit(config)
    model = klvae.load(run)
    x = split_data(TrainConfig.from_dict(config), "test")[:2000]
    with torch.no_grad():
        codes = model.encode(x).mean  # (N, P, K)
    used = (codes.sum((0, 1)) > 0).float().mean().item()
    assert used > 0.5, used
    assert code_perplexity(codes).item() > 0.25 * 64


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"codes": 64}, "codes is an option of --model vqvae"),
        ({"quantizer": "gumbel", "temperature": 0.5}, "quantizer, temperature are options of --model vqvae"),
        ({"model": "vqvae", "codes": 1}, "codes must be an integer >= 2"),
        ({"model": "vqvae", "quantizer": "kmeans"}, "quantizer must be one of vq-ema, vq, gumbel"),
        ({"model": "vqvae", "temperature": 0}, "temperature > 0"),
        ({"model": "vqvae", "objective": "iwae"}, "model vqvae trains with --objective elbo"),
        ({"model": "vqvae", "latent": "vmf"}, "categorical latent"),
        ({"model": "vqvae", "latent_dims": [4]}, "latent_dims is an option of --model hvae"),
    ],
)
def test_bad_vqvae_options_are_one_line_errors(values, message):
    with pytest.raises(KlvaeError, match=message) as info:
        TrainConfig.from_dict(values)
    assert "\n" not in str(info.value)
