"""Deep hierarchies (``--model deep-hvae``, MLP and multi-scale conv) and what every hierarchy
knows level by level: the KL of each layer, the bound L^{>k} with the lowest k layers at their
prior's mode, and the likelihood ratios LLR^{>k} of Havtorn et al. 2021.

Seed policy: every statistical test seeds torch at its top and compares within several standard
errors (or a tolerance far above the estimator's spread), so it neither flakes nor passes by luck."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import klvae
from helpers import assert_user_error, cli
from klvae.evaluation.hierarchy import likelihood_ratios
from klvae.evaluation.likelihood import evaluate_model, split_data
from klvae.kl import kl
from klvae.models import build_model, model_config
from klvae.objectives import elbo, iwae_bound
from klvae.run import load_config, read_metrics


def deep(net: str = "mlp", dims=(4, 3, 2), seed: int = 0, event=(1, 8, 8), **options):
    torch.manual_seed(seed)
    config = model_config(dict(model="deep-hvae", event_shape=list(event), net=net, latent_dims=list(dims), width=16,
                               likelihood="bernoulli", **options))
    model = build_model(config)
    for p in model.parameters():  # away from the zero-initialised heads (q = p, p = N(0, I)): a generic point
        p.data.add_(0.1 * torch.randn_like(p))
    return model.eval()


def binary(n: int = 6, event=(1, 8, 8)) -> torch.Tensor:
    return (torch.rand(n, *event, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def chain(dims=(3, 2), residual: bool = True):
    torch.manual_seed(0)
    return build_model(model_config(dict(model="hvae", event_shape=[1, 8, 8], net="mlp", hidden=[16, 16],
                                         latent_dims=list(dims), residual=residual))).eval()


ARCHITECTURES = {
    "chain-merge": lambda: chain(residual=False),
    "chain-residual": lambda: chain(residual=True),
    "deep-mlp": lambda: deep("mlp", (4, 3, 2, 2)),
    "deep-conv": lambda: deep("conv", (2, 2, 1)),
    "deep-mlp-residual-q": lambda: deep("mlp", residual=True),
    "deep-conv-batch-norm": lambda: deep("conv", (2, 1), norm="batch"),
    "deep-mlp-weight-norm": lambda: deep("mlp", norm="weight"),
}


# --- the shape of the hierarchy ----------------------------------------------------------------------


def test_conv_levels_halve_the_resolution_from_28_to_14_7_4():
    model = deep("conv", (8, 4, 2), event=(1, 28, 28))
    assert model.shapes == [(8, 14, 14), (4, 7, 7), (2, 4, 4)]
    assert model.dims == (8 * 196, 4 * 49, 2 * 16) and model.latent_dim == sum(model.dims)
    x = binary(3, (1, 28, 28))
    q = model.encode(x)
    z = q.rsample()
    assert z.shape == (3, sum(model.dims)) and q.log_prob(z).shape == (3,)
    assert model.decode(z).batch_shape == (3,) and model.prior().sample((5,)).shape == (5, model.latent_dim)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_layers_kl_sum_to_the_total_for_every_architecture(name):
    model, x = ARCHITECTURES[name](), binary()
    with torch.no_grad():
        terms = model.elbo_terms(x)
    assert terms.kl_per_layer.shape == (6, len(model.dims))
    torch.testing.assert_close(terms.kl_per_layer.sum(-1), terms.kl)
    assert (terms.kl_per_layer >= 0).all()
    if terms.kl_per_dim is not None:  # each unit's KL sums to its layer's
        torch.testing.assert_close(torch.stack([d.sum(-1) for d in terms.kl_per_dim.split(list(model.dims), -1)], -1),
                                   terms.kl_per_layer)


@pytest.mark.parametrize("name", ["deep-mlp", "deep-conv"])
def test_each_layers_analytic_kl_matches_monte_carlo_given_the_layers_above(name):
    torch.manual_seed(0)
    model, x = ARCHITECTURES[name](), binary(3)
    evidence = model.split_evidence(model.encoder_output(x))
    with torch.no_grad():
        for step in model.walk(evidence, torch.Size([4000])):
            analytic = kl(step.q, step.p, "analytic").value  # (S, N): given each draw of the levels above
            draws = step.q.sample()
            diff = analytic - (step.q.log_prob(draws) - step.p.log_prob(draws))
            se = diff.std(0) / math.sqrt(len(diff))
            assert (diff.mean(0).abs() < 4 * se + 1e-6).all(), (step.level, diff.mean(0), se)


@pytest.mark.parametrize("name", ["deep-mlp", "deep-conv"])
def test_the_joint_densities_give_the_elbo_and_a_tighter_iwae_bound(name):
    """E_q[log p(x|z) + log p(z) - log q(z|x)] from the joint densities of encode / prior / decode
    equals the ELBO of the layer-wise terms, and the IWAE bound rises above it with K."""
    torch.manual_seed(0)
    model, x = ARCHITECTURES[name](), binary(3)
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((3000,))
        joint = model.decode(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)  # (S, N)
        layered = elbo(model, x, samples=3000).elbo
        se = joint.std(0) / math.sqrt(len(joint))
        assert ((joint.mean(0) - layered).abs() < 4 * se + 0.05).all()
        assert (iwae_bound(model, x, 500) > joint.mean(0) - 4 * se).all()


def test_a_flat_prior_walk_decodes_the_state_of_the_drawn_levels():
    model = deep("mlp")
    with torch.no_grad():
        z = model.prior().sample((4,))
        steps = list(model.walk(None, z=z, like=z))
        assert [s.level for s in steps] == [2, 1, 0] and all(s.q is None for s in steps)
        torch.testing.assert_close(model.decode(z).mean, model._decode_state(steps[-1].state).mean)


def test_mutual_information_of_a_conv_hierarchy_is_the_same_in_any_chunking():
    """I(x; z) walks top-down once per pair of points: chunked to a memory budget, same figures."""
    from klvae.diagnostics import mutual_information

    model, x = deep("conv", (2, 2, 1)), binary(12)
    results = []
    for chunk in (256, 5, 1):
        torch.manual_seed(0)
        results.append(mutual_information(model, x, chunk=chunk))
    assert results[0] == pytest.approx(results[1], abs=1e-5) and results[0] == pytest.approx(results[2], abs=1e-5)
    assert 0 <= results[0][0] <= math.log(12) + 1e-6
    assert model.mi_points < 1000  # training's diagnostics take fewer points for conv levels


# --- L^{>k} and the likelihood ratios ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chain-residual", "deep-mlp", "deep-conv"])
def test_llr_above_0_is_exactly_0_and_the_others_finite(name):
    model, x = ARCHITECTURES[name](), binary(5)
    ratios = likelihood_ratios(model, x, list(range(len(model.dims))), samples=7, batch_size=3)
    assert torch.equal(ratios[0], torch.zeros(5, dtype=torch.float64))
    assert all(torch.isfinite(r).all() and r.shape == (5,) for r in ratios.values())


def test_the_lowest_k_layers_take_their_conditional_priors_mode_and_lose_their_terms():
    model, x = deep("mlp", (4, 3, 2)), binary(2)
    with torch.no_grad():
        steps = list(model.walk(model.split_evidence(model.encoder_output(x)), torch.Size([5]), prior_below=2))
    assert [s.q is None for s in steps] == [False, True, True]  # levels 2, 1, 0
    for s in steps[1:]:
        torch.testing.assert_close(s.z, s.p.mean)


def linear_gaussian(a: float, b: float, s1: float, c: list[float], d: list[float], sx: float):
    """A 2-layer chain, every map linear: z2 ~ N(0, 1), z1 | z2 ~ N(a z2 + b, s1^2), x | z1 ~
    N(c z1 + d, sx^2 I) in R^2; q(z2|x) = N(0, 1) and q(z1|x,z2) = p(z1|z2) (all offsets 0)."""
    torch.manual_seed(0)
    model = build_model(model_config(dict(model="hvae", event_shape=[2], net="mlp", hidden=[4], latent_dims=[1, 1],
                                          residual=True, likelihood="gaussian", decoder_scale=sx, min_scale=1e-6)))
    inverse_softplus = lambda y: math.log(math.expm1(y))  # noqa: E731
    with torch.no_grad():
        model.decoder = nn.Linear(1, 2)
        model.decoder.weight.copy_(torch.tensor(c).view(2, 1))
        model.decoder.bias.copy_(torch.tensor(d))
        model.down[0] = nn.Identity()
        model.conditional[0].weight.copy_(torch.tensor([[a], [0.0]]))
        model.conditional[0].bias.copy_(torch.tensor([b, inverse_softplus(s1 - 1e-6)]))
        model.offsets[0].weight.zero_()
        for level, scale in ((0, None), (1, 1.0)):
            model.evidence[level].weight.zero_()
            model.evidence[level].bias.copy_(torch.tensor([0.0, inverse_softplus(scale - 1e-6) if scale else 0.0]))
    return model.eval()


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mean.double(), cov.double()).log_prob(x.double())


def test_llr_of_a_two_layer_linear_gaussian_model_matches_its_closed_form():
    """log p(x) - log p^{>1}(x), both Gaussian: with z1 at its prior's mode a z2 + b the variance
    s1^2 c c^T leaves the marginal. The IWAE bounds with K = 20000 converge to both (their q is the
    prior, a 1-D proposal)."""
    a, b, s1, c, d, sx = 1.5, 0.3, 0.8, [1.0, -0.5], [0.2, 0.1], 0.6
    model = linear_gaussian(a, b, s1, c, d, sx)
    x = torch.tensor([[0.5, 0.0], [2.5, -1.0], [-1.0, 1.2], [1.5, 0.4]])
    cv, mean = torch.tensor(c).view(2, 1), torch.tensor(c) * b + torch.tensor(d)
    full = gaussian_log_density(x, mean, (a**2 + s1**2) * cv @ cv.T + sx**2 * torch.eye(2))
    above = gaussian_log_density(x, mean, a**2 * cv @ cv.T + sx**2 * torch.eye(2))
    with torch.no_grad():
        torch.testing.assert_close(iwae_bound(model, x, 20000).double(), full, atol=0.02, rtol=0)
        ratios = likelihood_ratios(model, x, [1], samples=20000)
    torch.testing.assert_close(ratios[1], full - above, atol=0.03, rtol=0)
    assert (ratios[1] - (full - above)).abs().max() < 0.3 * (full - above).abs().max()  # not all near 0


def test_llr_refuses_levels_the_model_does_not_have():
    model = chain()
    with pytest.raises(klvae.KlvaeError, match=r"--llr-k takes levels 0 to 1 \(this model has 2 latent layers\); "
                                               r"got \[2\]"):
        likelihood_ratios(model, binary(2), [2])


# --- training ------------------------------------------------------------------------------------------


def test_a_four_layer_deep_hierarchy_trains_on_digits_without_nan_with_every_layer_active(tmp_path):
    run = klvae.fit({"data": "digits", "model": "deep-hvae", "net": "mlp", "latent_dims": [8, 6, 4, 2], "width": 64,
                     "epochs": 30, "lr": 3e-3, "kl_schedule": "linear", "kl_steps": 70, "kl_balance": True,
                     "skip_threshold": 1e4,
                     "progress": False, "out": str(tmp_path / "deep")})
    rows = read_metrics(run)
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_elbo", "val_elbo", "val_kl"))
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"] + 5
    assert all(f"kl_layer_{i}" in rows[-1] for i in range(4))
    model, config = klvae.load(run), load_config(run)
    result = evaluate_model(model, split_data(config, "test"), iwae_k=20)
    assert len(result["active_units_per_layer"]) == 4
    assert all(units >= 1 for units in result["active_units_per_layer"]), result["active_units_per_layer"]
    assert all(k > 0.2 for k in result["kl_per_layer"]), result["kl_per_layer"]  # each layer carries information


def test_the_conv_hierarchy_trains_evaluates_and_scores_from_the_cli(tmp_path):
    out = tmp_path / "conv"
    done = cli("train", "--data", "digits", "--model", "deep-hvae", "--net", "conv", "--latent-dims", "2", "2",
               "--width", "8", "--epochs", "2", "--no-progress", "--out", str(out))
    assert done.rc == 0, done.err
    assert "/40" in done.out.split("active units")[1]  # of 2 x 4 x 4 + 2 x 2 x 2 units, sized from the data
    assert all(math.isfinite(r["val_mi"]) for r in read_metrics(out))
    done = cli("evaluate", str(out), "--iwae-k", "5")
    assert done.rc == 0, done.err
    assert "active units" in done.out and "+" in done.out  # per layer, in Burda et al.'s a+b form
    done = cli("score", str(out), "--score", "elbo", "kl-layer", "llr", "--llr-k", "0", "1", "--anomalous-labels", "1",
               "--iwae-k", "4", "--json")
    assert done.rc == 0, done.err
    import json
    metrics = json.loads(done.out)["metrics"]
    assert set(metrics) == {"elbo", "kl_layer_0", "kl_layer_1", "llr>0", "llr>1"}
    assert metrics["llr>0"]["auroc"] == 0.5  # LLR^{>0} is 0 for every example: a tie
    for verb, extra in (("sample", ()), ("reconstruct", ()), ("interpolate", ("--a", "0", "--b", "1"))):
        done = cli(verb, str(out), *extra, "--out", str(tmp_path / f"{verb}.png"))
        assert done.rc == 0 and (tmp_path / f"{verb}.png").stat().st_size > 100, (verb, done.err)
    assert cli("report", str(out)).rc == 0 and "KL per latent layer" in (out / "report.html").read_text()


def test_level_scores_of_a_flat_model_are_refused_in_one_line(tmp_path):
    out = tmp_path / "flat"
    assert cli("train", "--data", "digits", "--epochs", "1", "--no-progress", "--out", str(out)).rc == 0
    assert_user_error(cli("score", str(out), "--score", "llr"), "score llr needs a model with latent layers")
    assert_user_error(cli("score", str(out), "--score", "elbo", "--llr-k", "1"), "--llr-k sets the levels of the llr")


def test_deep_hvae_options_are_checked_in_one_line():
    for values, message in (({"norm": "layer"}, "norm"), ({"width": 0}, "width"), ({"hidden": [64]}, "drop --hidden"),
                            ({"net": "conv", "event_shape": [12], "latent_dims": [2]}, "--net conv needs images"),
                            ({"latent_dims": []}, "latent_dims must list")):
        with pytest.raises(klvae.KlvaeError, match=message):
            model_config({"model": "deep-hvae", "event_shape": [1, 8, 8], "latent_dims": [2], **values})
