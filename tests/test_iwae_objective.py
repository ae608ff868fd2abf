"""IWAE as a training objective: its value is the evaluation bound, DReG's encoder gradient is
unbiased for IWAE's and less noisy, the decoder gradient is IWAE's own, and a run trains on it."""
from __future__ import annotations

import pytest
import torch

import klvae
from helpers import assert_user_error, cli
from klvae.models import ModelSpec, build_model
from klvae.objectives import iwae_bound, iwae_objective
from klvae.run import read_metrics


def tiny_model(latent: str = "gaussian", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelSpec(event_shape=[12], latent_dim=2, hidden=[8], latent=latent))


def data(n: int = 16) -> torch.Tensor:
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()


@pytest.mark.parametrize("dreg", [False, True])
def test_the_objective_is_the_evaluation_bound_for_the_same_k(dreg):
    model, x = tiny_model(), data(64)
    torch.manual_seed(0)
    train = torch.stack([iwae_objective(model, x, 5, dreg).bound.detach().mean() for _ in range(400)])
    evaluation = torch.stack([iwae_bound(model, x, 5).mean() for _ in range(400)])
    se = (train.var() / 400 + evaluation.var() / 400).sqrt()
    assert abs(train.mean() - evaluation.mean()) < 4 * se
    assert abs(train.mean() - evaluation.mean()) < 0.01 * abs(evaluation.mean())


def _gradients(model, x, k: int, dreg: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(seed)
    iwae_objective(model, x, k, dreg).loss().backward()
    enc = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    dec = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])
    return enc, dec


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_dreg_gives_iwae_decoder_gradient_exactly_and_its_encoder_gradient_in_expectation(latent):
    model, x = tiny_model(latent), data()
    plain, dreg = [], []
    for seed in range(600):  # the same draws for both estimators
        enc_plain, dec_plain = _gradients(model, x, 8, False, seed)
        enc_dreg, dec_dreg = _gradients(model, x, 8, True, seed)
        torch.testing.assert_close(dec_dreg, dec_plain)
        plain.append(enc_plain)
        dreg.append(enc_dreg)
    plain, dreg = torch.stack(plain), torch.stack(dreg)
    diff = plain - dreg
    se = diff.std(0) / len(diff) ** 0.5
    z = (diff.mean(0) / se.clamp_min(1e-12)).abs()
    assert (z < 4.5).all(), float(z.max())  # unbiased, coordinate by coordinate
    if latent == "gaussian":  # and less noisy (Tucker et al.'s case; not promised for every family)
        assert dreg.var(0).sum() < 0.8 * plain.var(0).sum()


def test_a_run_trains_the_iwae_bound_and_keeps_its_best_epoch_by_it(tmp_path):
    run = klvae.fit({"data": "digits", "epochs": 3, "hidden": [32], "latent_dim": 4, "progress": False,
                     "objective": "iwae", "k": 5, "dreg": True, "out": str(tmp_path / "iwae")})
    rows = read_metrics(run)
    assert all(r["val_iwae"] >= r["val_elbo"] - 0.5 for r in rows)  # a tighter bound (up to noise)
    assert rows[-1]["train_iwae"] > rows[0]["train_iwae"]
    result = klvae.evaluate(run, iwae_k=50)
    assert result["nll_iwae"] < -result["elbo"]


def test_iwae_options_are_checked_in_one_line(tmp_path):
    assert_user_error(cli("train", "--objective", "iwae", "--beta", "4", "--out", tmp_path / "a"), "iwae", "beta")
    assert_user_error(cli("train", "--dreg", "--out", tmp_path / "b"), "dreg", "--objective iwae")
    assert_user_error(cli("train", "--objective", "iwae", "--k", "0", "--out", tmp_path / "c"), "k must be")
    assert not any(tmp_path.iterdir())


def test_the_standard_errors_are_those_of_the_per_example_figures():
    from klvae.evaluation.anomaly import score_model
    from klvae.evaluation.likelihood import evaluate_model

    model, x = tiny_model(), data(300)
    result = evaluate_model(model, x, iwae_k=10, seed=3)
    scores = score_model(model, x, iwae_k=10, seed=3)  # the same draws, example by example
    n = len(x)
    assert result["nll_iwae_se"] == pytest.approx(float(scores["iwae"].std() / n**0.5), rel=1e-6)
    assert result["elbo_se"] == pytest.approx(float(scores["elbo"].std() / n**0.5), rel=1e-6)
    assert result["nll_iwae"] == pytest.approx(float(scores["iwae"].mean()), rel=1e-9)
