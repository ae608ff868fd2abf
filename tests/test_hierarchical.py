"""The hierarchical VAE (top-down inference, Ladder VAE / NVAE-residual): its per-layer KL, its
bounds, training and the run directory, its options.

Seed policy: every statistical test seeds torch at its top and compares means within several
standard errors, so it neither flakes nor passes by luck."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import klvae
from helpers import assert_user_error, cli
from klvae import KlvaeError, TrainConfig
from klvae.generation import interpolate, reconstruct, sample
from klvae.kl import kl
from klvae.models import HierarchicalVAE, ModelSpec, build_model
from klvae.distributions import diagonal_normal
from klvae.evaluation.likelihood import split_data
from klvae.objectives import ElboTerms, elbo, iwae_bound, log_weights
from klvae.run import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny(residual: bool = False, dims=(3, 2), seed: int = 0, balance: bool = False) -> HierarchicalVAE:
    torch.manual_seed(seed)
    spec = ModelSpec(event_shape=[12], hidden=[16, 16], model="hvae", latent_dims=list(dims), residual=residual,
                     kl_balance=balance)
    return build_model(spec)


def data(n: int = 16) -> torch.Tensor:
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()


@pytest.mark.parametrize("residual", [False, True])
def test_the_layers_kl_sum_to_the_total_and_their_dimensions_to_each_layer(residual):
    torch.manual_seed(0)
    model, x = tiny(residual, dims=(4, 3, 2)), data()
    terms = elbo(model, x)
    assert terms.kl_per_layer.shape == (16, 3) and terms.kl_per_dim.shape == (16, 9)
    torch.testing.assert_close(terms.kl_per_layer.sum(-1), terms.kl)
    torch.testing.assert_close(torch.stack([p.sum(-1) for p in terms.kl_per_dim.split([4, 3, 2], -1)], -1),
                               terms.kl_per_layer)
    assert terms.kl_method == "analytic" and (terms.kl_per_layer >= 0).all()
    assert terms.q.mean.shape == (16, 9)


@pytest.mark.parametrize("residual", [False, True])
def test_analytic_layer_kl_matches_monte_carlo_given_the_layer_above(residual):
    torch.manual_seed(0)
    model, x = tiny(residual), data(4)
    bottom_up = list(model.encoder_output(x).split([6, 4], -1))
    with torch.no_grad():
        for level, z, q, p, _ in model.walk(bottom_up, torch.Size([20000])):
            analytic = kl(q, p, "analytic").value  # (S, N): given each drawn z_{l+1}
            draws = q.sample()  # a fresh z_l given the same z_{l+1}
            mc = q.log_prob(draws) - p.log_prob(draws)
            diff = analytic - mc
            se = diff.std(0) / math.sqrt(len(diff))
            assert (diff.mean(0).abs() < 4 * se).all(), (level, diff.mean(0), se)


def test_the_joint_densities_give_the_same_kl_as_the_layers():
    torch.manual_seed(0)
    model, x = tiny(dims=(4, 3, 2)), data(4)
    with torch.no_grad():
        layered = torch.stack([elbo(model, x, samples=50).kl for _ in range(100)])  # (100, N)
        q = model.encode(x)
        z = q.sample((5000,))
        joint = q.log_prob(z) - model.prior().log_prob(z)  # (S, N)
    se = (layered.var(0) / len(layered) + joint.var(0) / len(joint)).sqrt()
    assert ((layered.mean(0) - joint.mean(0)).abs() < 4 * se).all()


@pytest.mark.parametrize("residual", [False, True])
def test_one_sample_log_weight_has_the_expectation_of_the_elbo(residual):
    torch.manual_seed(0)
    model, x = tiny(residual), data(32)
    with torch.no_grad():
        weights = torch.stack([log_weights(model, x, 1)[0].mean() for _ in range(2000)])
        elbos = torch.stack([elbo(model, x).elbo.mean() for _ in range(2000)])
    se = (weights.var() / len(weights) + elbos.var() / len(elbos)).sqrt()
    assert abs(weights.mean() - elbos.mean()) < 4 * se


@pytest.mark.parametrize("residual", [False, True])
def test_the_iwae_bound_of_a_two_layer_model_is_above_its_elbo(residual):
    torch.manual_seed(0)
    model, x = tiny(residual), data(64)
    with torch.no_grad():
        bound = torch.stack([iwae_bound(model, x, 50).mean() for _ in range(20)])
        elbos = torch.stack([elbo(model, x).elbo.mean() for _ in range(200)])
    se = (bound.var() / len(bound) + elbos.var() / len(elbos)).sqrt()
    assert bound.mean() - elbos.mean() > 4 * se


def test_the_precision_weighted_merge_is_the_product_of_the_two_gaussians():
    model = tiny()
    prior = diagonal_normal(torch.tensor([3.0]), torch.tensor([2.0]))
    raw = math.log(math.expm1(1.0 - model.min_scale))  # a unit evidence scale
    q = model._posterior(0, torch.tensor([1.0, raw]), prior, None)
    # precisions 1 + 1/4 = 1.25: variance 0.8, mean (1 * 1 + 3 / 4) / 1.25 = 1.4
    torch.testing.assert_close(q.base_dist.scale ** 2, torch.tensor([0.8]))
    torch.testing.assert_close(q.mean, torch.tensor([1.4]))


def test_residual_posterior_equals_the_prior_where_its_offsets_vanish():
    model, x = tiny(residual=True), data()
    with torch.no_grad():
        for layer in [*model.offsets, model.evidence[0]]:
            for param in layer.parameters():
                param.zero_()
        terms = elbo(model, x)
    assert terms.kl_per_layer[:, 1].min() > 0  # the top layer's q(z_L|x) is its own
    torch.testing.assert_close(terms.kl_per_layer[:, 0], torch.zeros(16))


def test_prior_samples_are_ancestral_and_decode_to_data_shape():
    torch.manual_seed(0)
    model = tiny(dims=(3, 2))
    p = model.prior()
    z = p.sample((20000,))
    assert z.shape == (20000, 5) and p.batch_shape == () and p.event_shape == (5,)
    top = z[:, 3:]
    torch.testing.assert_close(top.mean(0), torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(top.var(0), torch.ones(2), atol=0.05, rtol=0)
    assert torch.isfinite(p.log_prob(z)).all()
    assert sample(model, 7).shape == (7, 12)


def test_kl_balance_weighs_layers_by_their_kl_per_unit_only_while_the_weight_is_below_one():
    torch.manual_seed(0)
    model, x = tiny(balance=True), data()
    terms = elbo(model, x)
    plain = ElboTerms.loss(terms, 0.5)
    per_layer = terms.kl_per_layer.mean(0)
    share = (per_layer + 0.01) / torch.tensor([3.0, 2.0])
    gamma = share / share.mean()
    torch.testing.assert_close(terms.loss(0.5), -(terms.recon.mean() - 0.5 * (gamma * per_layer).sum()))
    assert not torch.isclose(terms.loss(0.5), plain)
    torch.testing.assert_close(terms.loss(1.0), ElboTerms.loss(terms, 1.0))


@pytest.mark.filterwarnings("ignore::klvae.diagnostics.CollapseWarning")  # 4 epochs on digits pass through one
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_two_layer_run_trains_evaluates_samples_and_reloads(tmp_path, objective):
    config = {"model": "hvae", "latent_dims": [8, 4], "hidden": [64], "epochs": 4, "progress": False,
              "objective": objective, "k": 1 if objective == "elbo" else 5, "out": str(tmp_path / "run")}
    run = klvae.fit(config)
    rows = read_metrics(run)
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"]
    assert {f"kl_dim_{i}" for i in range(12)} <= set(rows[-1]) and "kl_dim_12" not in rows[-1]
    assert TrainConfig.from_yaml(run / "config.yaml").latent_dim == 12
    result = klvae.evaluate(run, iwae_k=50)
    assert result["nll_iwae"] < -result["elbo"] and len(result["kl_per_dim"]) == 12
    # per layer: the KLs sum to the total (and to the per-dimension KLs of the layer), the active
    # units to the whole latent's, in Burda et al.'s "a+b" form
    assert sum(result["kl_per_layer"]) == pytest.approx(result["kl"], rel=1e-6, abs=1e-6)
    assert result["kl_per_layer"][0] == pytest.approx(sum(result["kl_per_dim"][:8]), rel=1e-5, abs=1e-5)
    assert len(result["active_units_per_layer"]) == 2 and sum(result["active_units_per_layer"]) == result["active_units"]
    model = klvae.load(run)
    assert isinstance(model, HierarchicalVAE) and model.spec.latent_dims == [8, 4]
    x = split_data(TrainConfig.from_yaml(run / "config.yaml"), "test")[:6]
    assert sample(model, 5).shape == (5, *x.shape[1:])
    assert reconstruct(model, x).shape == x.shape
    assert interpolate(model, x[0], x[1], 4).shape == (4, *x.shape[1:])
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()


def test_save_and_load_keep_the_spec_and_the_bound(tmp_path):
    from klvae.run import load, save_config, save_model

    model = tiny(residual=True, dims=(4, 3, 2))
    save_config(tmp_path, TrainConfig(model="hvae", latent_dims=[4, 3, 2], residual=True, hidden=[16, 16]))
    save_model(tmp_path, model, model.spec)
    loaded = load(tmp_path)
    assert loaded.spec == model.spec and loaded.spec.latent_dim == 9 and loaded.residual
    x = data()
    torch.manual_seed(3)
    before = elbo(model, x).elbo
    torch.manual_seed(3)
    torch.testing.assert_close(elbo(loaded, x).elbo, before)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "hvae"}, r"latent_dims must list the latent sizes of --model hvae.*got \[\]"),
        ({"model": "hvae", "latent_dims": [8, 0]}, "latent_dims must list"),
        ({"model": "hvae", "latent_dims": [8, 4], "latent": "vmf"}, "model hvae has Gaussian layers.*vmf"),
        ({"model": "hvae", "latent_dims": [8, 4], "prior": "mog"}, "--prior standard"),
        ({"model": "hvae", "latent_dims": [8, 4], "objective": "tcvae"}, "elbo or iwae"),
        ({"model": "hvae", "latent_dims": [8, 4], "objective": "iwae", "kl_balance": True}, "kl_balance"),
        ({"latent_dims": [8, 4]}, "latent_dims is an option of --model hvae"),
        ({"residual": True, "kl_balance": True}, "residual, kl_balance are options of --model hvae"),
    ],
)
def test_bad_hierarchical_options_are_one_line_errors(values, message):
    with pytest.raises(KlvaeError, match=message) as info:
        TrainConfig.from_dict(values)
    assert "\n" not in str(info.value)


def test_the_command_line_names_a_bad_hierarchical_option_in_one_line(tmp_path):
    assert_user_error(cli("train", "--model", "hvae", "--out", tmp_path / "a"), "latent_dims")
    assert_user_error(cli("train", "--model", "hvae", "--latent-dims", "8", "--latent", "vmf",
                          "--out", tmp_path / "b"), "hvae", "vmf")
    assert not any(tmp_path.iterdir())


def test_the_layer_sizes_of_a_spec_are_checked_by_the_model():
    with pytest.raises(KlvaeError, match="latent_dims must list"):
        build_model(ModelSpec(event_shape=[12], model="hvae"))


@pytest.mark.parametrize("name", ["burda-2layer-vae-k1", "burda-2layer-iwae-k5"])
def test_burda_two_layer_recipes_build_the_papers_architecture(name):
    config = TrainConfig.from_yaml(CONFIGS / f"{name}.yaml")
    kind, k = name.split("-")[2:]
    assert config.objective.name == ("iwae" if kind == "iwae" else "elbo") and config.k == int(k[1:])
    assert (config.model.name, config.latent_dims, config.latent_dim, config.hidden, config.activation) == (
        "hvae", [100, 50], 150, [200, 200], "tanh")
    assert config.residual
    assert (config.batch_size, config.epochs, config.lr_schedule, config.adam_eps) == (20, 3280, "iwae-stages", 1e-4)
    model = build_model(ModelSpec(event_shape=[1, 28, 28], hidden=config.hidden, activation=config.activation,
                                  model=config.model.name, net=config.net, latent_dims=config.latent_dims))
    linear = lambda module: [(m.in_features, m.out_features) for m in module.modules()  # noqa: E731
                             if isinstance(m, torch.nn.Linear)]
    assert linear(model.encoder) + linear(model.evidence[0]) == [(784, 200), (200, 200), (200, 200)]
    assert linear(model.up) + linear(model.evidence[1]) == [(200, 100), (100, 100), (100, 100)]
    assert linear(model.down) + linear(model.conditional) == [(50, 100), (100, 100), (100, 200)]
    assert linear(model.decoder) == [(100, 200), (200, 200), (200, 784)]
