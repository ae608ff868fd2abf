"""beta-TCVAE and FactorVAE: the KL split adds up, total correlation is seen where the aggregated
posterior is correlated and not where it is factorised; runs train on both; traversals and the
disentanglement command work from the CLI."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

import klvae
import klvae.evaluation.disentanglement as dis
from helpers import assert_user_error, cli, read_png
from klvae.models import ModelSpec, build_model
from klvae.objectives import Discriminator, permute_dims, tc_decomposition
from klvae.run import read_metrics, save_config, save_model


def posterior(loc: torch.Tensor, scale: float = 0.05):
    return Independent(Normal(loc, torch.full_like(loc, scale)), 1)


def standard(d: int):
    return Independent(Normal(torch.zeros(d), torch.ones(d)), 1)


def test_the_three_parts_add_up_to_the_one_sample_kl():
    torch.manual_seed(0)
    q = posterior(torch.randn(64, 3), 0.3)
    z = q.sample()
    parts = tc_decomposition(q, z, standard(3), dataset_size=1000)
    torch.testing.assert_close(parts.mi + parts.tc + parts.dim_kl, q.log_prob(z) - standard(3).log_prob(z))


def test_total_correlation_is_large_for_a_correlated_aggregate_and_not_for_a_factorised_one():
    torch.manual_seed(0)
    t = torch.rand(400, 1) * 4 - 2
    correlated = posterior(torch.cat([t, t], 1))  # means on the diagonal: z1 tells z2
    independent = posterior(torch.rand(400, 2) * 4 - 2)
    tc = {name: tc_decomposition(q, q.sample(), standard(2), 400).tc.mean().item()
          for name, q in (("correlated", correlated), ("independent", independent))}
    assert tc["correlated"] - tc["independent"] > 2.0  # about log(400 / 4): the diagonal's share of the square


def test_permuting_dimensions_keeps_each_marginal_and_breaks_the_joint():
    torch.manual_seed(0)
    t = torch.randn(500, 1)
    z = torch.cat([t, t], 1)
    p = permute_dims(z)
    for d in range(2):
        assert torch.equal(p[:, d].sort().values, z[:, d].sort().values)
    assert abs(torch.corrcoef(p.T)[0, 1]) < 0.15


def test_the_discriminator_learns_to_see_total_correlation():
    torch.manual_seed(0)
    critic = Discriminator(2, width=32, layers=2)
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    t = torch.randn(512, 1)
    correlated = torch.cat([t, t + 0.1 * torch.randn(512, 1)], 1)
    for _ in range(300):
        opt.zero_grad()
        critic.loss(correlated).backward()
        opt.step()
    with torch.no_grad():
        assert critic.total_correlation(correlated).mean() > 1.0  # the true TC here is about 2.3 nats


@pytest.mark.parametrize("objective", ["tcvae", "factorvae"])
def test_a_run_trains_on_the_objective_and_saves_the_vae_alone(tmp_path, objective):
    run = klvae.fit({"data": "digits", "epochs": 2, "hidden": [32], "latent_dim": 4, "progress": False,
                     "objective": objective, "beta": 6.0, "out": str(tmp_path / objective)})
    rows = read_metrics(run)
    assert all(np.isfinite([r["train_tc"], r["val_elbo"], r["val_kl"]]).all() for r in rows)
    assert rows[-1]["step"] == 2 * 14  # the critic's steps are not counted as the model's
    model = klvae.load(run)
    assert not any("discriminator" in k for k in model.state_dict())
    assert klvae.evaluate(run, iwae_k=10)["nll_iwae"] > 0


def test_tc_objectives_refuse_what_they_cannot_weigh(tmp_path):
    assert_user_error(cli("train", "--objective", "tcvae", "--latent", "vmf", "--out", tmp_path / "a"), "gaussian")
    assert_user_error(cli("train", "--objective", "factorvae", "--kl-schedule", "linear", "--out", tmp_path / "b"),
                      "kl-schedule")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return klvae.fit({"data": "digits", "epochs": 3, "hidden": [32], "latent_dim": 5, "progress": False,
                      "out": str(tmp_path_factory.mktemp("trav") / "run")})


def test_traverse_draws_one_row_per_dimension_sorted_by_kl(digits_run, tmp_path):
    result = cli("traverse", digits_run, "--out", tmp_path / "t.png", "--steps", "7")
    assert result.rc == 0, result.err
    order = [int(d) for d in result.out.split("dimensions ")[1].rstrip(")\n").split(", ")]
    assert sorted(order) == list(range(5))
    kl = read_metrics(digits_run)[-1]
    assert kl[f"kl_dim_{order[0]}"] >= kl[f"kl_dim_{order[-1]}"] - 0.05  # the first row carries the most KL
    image = read_png(tmp_path / "t.png")
    assert image.shape[1] > image.shape[0]  # 5 rows of 7
    assert_user_error(cli("traverse", digits_run, "--out", tmp_path / "u.png", "--index", "99999"), "--index")


def test_disentanglement_writes_its_json_and_refuses_a_model_of_another_size(tmp_path, digits_run, monkeypatch):
    assert_user_error(cli("disentanglement", digits_run), "64", "dsprites")
    run = tmp_path / "dsprites-run"
    run.mkdir()
    config = klvae.TrainConfig(data="dsprites-generated", latent_dim=4, hidden=[16], out=str(run))
    spec = ModelSpec(event_shape=[1, 64, 64], latent_dim=4, hidden=[16], net="conv")
    save_config(run, config)
    save_model(run, build_model(spec), spec)
    tiny = dis.MetricSizes(n_train=200, n_test=100, batch_size=8, n_votes_train=20, n_votes_eval=10, n_variance=200)
    monkeypatch.setattr(dis, "disentanglement_report", functools.partial(dis.disentanglement_report, sizes=tiny))
    result = cli("disentanglement", run, "--json")
    assert result.rc == 0, result.err
    printed = json.loads(result.out)
    assert printed == json.loads((run / "disentanglement.json").read_text())
    assert 0 <= printed["mig"]["mig"] <= 1 and printed["data"] == "dsprites-generated"
