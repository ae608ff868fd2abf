"""Collapse diagnostics: I(x; z) against its closed form, active units on a model built with dead
dimensions, the verdict, and what --on-collapse does in a run."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

import klvae
from klvae.diagnostics import CollapseWarning, active_units, collapse_verdict, mutual_information, pairwise_log_prob
from klvae.run import read_metrics
from helpers import cli


class LinearGaussian:
    """z ~ N(0, I_d), x = W z + e, e ~ N(0, s^2 I): the exact posterior is Gaussian with covariance
    S = (I + W^T W / s^2)^-1, the same for every x, and I(x; z) = 1/2 log det(I + W^T W / s^2)."""

    def __init__(self, w: torch.Tensor, noise: float):
        self.w, self.noise = w.double(), noise
        d = w.shape[1]
        self.cov = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + self.w.T @ self.w / noise**2)
        self.mutual_information = 0.5 * float(torch.logdet(torch.eye(d, dtype=torch.float64) + self.w.T @ self.w / noise**2))

    def data(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.w.shape[1], dtype=torch.float64)
        return z @ self.w.T + self.noise * torch.randn(n, self.w.shape[0], dtype=torch.float64)

    def encode(self, x: torch.Tensor):
        loc = (x @ self.w / self.noise**2) @ self.cov
        return MultivariateNormal(loc, covariance_matrix=self.cov.expand(len(x), -1, -1))

    def prior(self):
        d = self.w.shape[1]
        return Independent(Normal(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)), 1)


@pytest.mark.parametrize("noise", [0.5, 1.0, 3.0])
def test_mutual_information_matches_the_closed_form_of_a_linear_gaussian_model(noise):
    torch.manual_seed(0)
    model = LinearGaussian(torch.tensor([[1.0, 0.0], [0.5, 1.0], [0.0, 0.7], [0.3, -0.2]]), noise)
    x = model.data(4000)
    mi, agg_kl = mutual_information(model, x)
    assert mi == pytest.approx(model.mutual_information, abs=0.05)
    assert abs(agg_kl) < 0.05  # the aggregated exact posterior is the prior
    mean_kl = float(torch.distributions.kl_divergence(model.encode(x), MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))).mean())
    assert mi + agg_kl == pytest.approx(mean_kl, abs=0.05)  # ELBO surgery adds up


def test_mutual_information_is_zero_when_the_posterior_ignores_x():
    torch.manual_seed(0)
    model = LinearGaussian(torch.zeros(4, 2), 1.0)
    mi, agg_kl = mutual_information(model, model.data(2000))
    assert abs(mi) < 1e-9 and abs(agg_kl) < 0.02


def test_the_pairwise_density_of_a_diagonal_gaussian_matches_its_broadcast_log_prob():
    torch.manual_seed(0)
    q = Independent(Normal(3 * torch.randn(300, 5), 0.01 + torch.rand(300, 5)), 1)
    z = q.sample()[:40]
    fast, broadcast = pairwise_log_prob(q, z), q.log_prob(z.unsqueeze(1))  # (40, 300) each
    assert fast.shape == broadcast.shape == (40, 300)
    torch.testing.assert_close(fast, broadcast, rtol=1e-5, atol=1e-3)


def test_active_units_count_the_dimensions_built_to_vary():
    torch.manual_seed(0)
    loc = torch.zeros(500, 6)
    loc[:, [0, 3, 4]] = torch.randn(500, 3)  # used
    loc[:, 1] = 0.05 * torch.randn(500)  # variance 0.0025 < 0.01: inactive
    loc[:, 5] = 3.0  # constant
    assert active_units(loc) == 3


def test_the_verdict_names_the_state_and_the_remedies():
    collapsed, message = collapse_verdict(0.02, 0, 16)
    assert collapsed and "0.020 nats" in message and "0/16" in message
    for remedy in ("--kl-schedule", "--free-bits", "--lr", "decoder"):
        assert remedy in message
    assert collapse_verdict(5.0, 0, 16)[0]  # no active unit is collapse whatever the KL
    assert collapse_verdict(0.05, 3, 16)[0]
    assert collapse_verdict(5.0, 3, 16) == (False, "no collapse: KL 5.000 nats, 3/16 active units")
    assert not collapse_verdict(0.05, 3, 16, min_kl=0.01)[0]


def _collapsing(tmp_path, policy: str, epochs: int = 8) -> dict:
    """beta = 50 on digits drives the KL to ~0 within an epoch or two."""
    return {"data": "digits", "epochs": epochs, "hidden": [32], "latent_dim": 4, "progress": False, "beta": 50.0,
            "collapse_patience": 2, "on_collapse": policy, "out": str(tmp_path / policy)}


def test_a_collapsing_run_is_flagged_every_epoch_and_warned_about_once(tmp_path):
    with pytest.warns(CollapseWarning, match="posterior collapse") as caught:
        run = klvae.fit(_collapsing(tmp_path, "warn"))
    rows = read_metrics(run)
    assert len(rows) == 8 and all(r["collapsed"] == 1 for r in rows[1:])
    assert rows[-1]["val_kl"] < 0.1 and rows[-1]["active_units"] == 0
    assert len([w for w in caught if w.category is CollapseWarning]) == 1
    assert abs(rows[-1]["val_mi"]) < 0.05 and abs(rows[-1]["val_agg_kl"]) < 0.1  # z carries nothing about x


def test_on_collapse_stop_ends_the_run_and_keeps_its_results(tmp_path):
    with pytest.warns(CollapseWarning, match="stopping"):
        run = klvae.fit(_collapsing(tmp_path, "stop", epochs=30))
    rows = read_metrics(run)
    assert len(rows) < 30 and rows[-1]["collapsed"] == 1
    assert (run / "model.safetensors").is_file() and (run / "curves.png").is_file()


def test_on_collapse_free_bits_switches_the_floor_on_and_the_kl_comes_back(tmp_path):
    with pytest.warns(CollapseWarning, match="free bits"):
        run = klvae.fit(_collapsing(tmp_path, "free-bits", epochs=12))
    rows = read_metrics(run)
    switched = [r["epoch"] for r in rows if r["free_bits"] > 0]
    assert switched and switched[0] > 1 and all(r["free_bits"] == 0.5 for r in rows if r["epoch"] >= switched[0])
    assert rows[-1]["val_kl"] > rows[switched[0] - 1]["val_kl"] + 0.5  # each dimension pushed to its floor


def test_the_cli_prints_the_collapse_warning_in_one_line(tmp_path):
    r = cli("train", "--data", "digits", "--epochs", "4", "--hidden", "32", "--latent-dim", "4", "--beta", "50",
            "--collapse-patience", "2", "--no-progress", "--out", tmp_path / "run")
    assert r.rc == 0
    warned = [line for line in r.err.splitlines() if "posterior collapse" in line]
    assert len(warned) == 1 and warned[0].startswith("klvae: warning: epoch ")


def test_a_recovery_from_collapse_is_reported_too(tmp_path):
    """The demo's model without warm-up: collapsed for its first epochs, then z comes back."""
    with pytest.warns(CollapseWarning) as caught:
        run = klvae.fit({"data": "digits", "epochs": 12, "progress": False, "out": str(tmp_path / "r")})
    messages = [str(w.message) for w in caught if w.category is CollapseWarning]
    rows = read_metrics(run)
    assert len(messages) == 2 and "posterior collapse" in messages[0] and "has recovered" in messages[1]
    recovered = int(messages[1].split(":")[0].split()[1])
    assert rows[recovered - 1]["collapsed"] == 0 and rows[recovered - 2]["collapsed"] == 1
