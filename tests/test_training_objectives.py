"""The objective and KL-schedule registries: every entry declares the capabilities other code asks
about, every objective returns a breakdown of per-point terms that add up, and an objective or a
schedule registered from outside the package trains with no change to the library."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import klvae
from klvae import KlvaeError
from klvae.models import ModelSpec, build_model
from klvae.objectives import (CAPABILITIES, OBJECTIVES, Breakdown, ObjectiveContext, elbo, objective_column,
                              register_objective)
from klvae.run import read_metrics
from klvae.schedules import SCHEDULES, KLSchedule, register_schedule
from klvae.total_correlation import Discriminator

N, D = 16, 3


@pytest.fixture
def scratch_registries(monkeypatch):
    """Entries registered by the test vanish after it."""
    monkeypatch.setattr(OBJECTIVES, "_entries", dict(OBJECTIVES._entries))
    monkeypatch.setattr(SCHEDULES, "_entries", dict(SCHEDULES._entries))


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelSpec(event_shape=[12], latent_dim=D, hidden=[8]))


def context(**config) -> ObjectiveContext:
    cfg = SimpleNamespace(**{"k": 4, "dreg": False, "beta": 1.0, "kl_estimator": "auto", "kl_samples": 1,
                             "free_bits_group": 1, "objective": "elbo", **config})
    return ObjectiveContext(cfg, KLSchedule(), dataset_size=100, critic=Discriminator(D, width=8, layers=1))


def test_every_objective_declares_every_capability_and_the_monitor_column_comes_from_it():
    assert {"elbo", "iwae", "tcvae", "factorvae"} <= set(OBJECTIVES)
    for entry in OBJECTIVES.entries():
        assert set(CAPABILITIES) <= set(entry.capabilities), entry.name
        assert objective_column(SimpleNamespace(objective=entry.name)) == entry.monitor
    assert OBJECTIVES.where(lambda e: e.kl_weighted) == ("elbo",)
    assert OBJECTIVES.where(lambda e: e.critic is not None) == ("factorvae",)
    assert objective_column(SimpleNamespace(objective="iwae")) == "val_iwae"


@pytest.mark.parametrize("name", ["elbo", "iwae", "tcvae", "factorvae"])
def test_each_objective_gives_per_point_terms_that_add_up(name):
    model, x = tiny_model(), (torch.rand(N, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    entry = OBJECTIVES[name]
    out = entry.builder(context(), model, x, None, 0)
    assert out.loss.shape == () and out.elbo.shape == out.recon.shape == out.kl.shape == (N,)
    torch.testing.assert_close(out.elbo, out.recon - out.kl)
    torch.testing.assert_close(out.distortion, -out.recon)
    assert out.kl_per_dim.shape == (N, D) and (out.kl >= 0).all()
    torch.testing.assert_close(out.kl_per_dim.sum(-1), out.kl)
    extra = entry.train_extra
    if extra:
        assert out.value(extra.split("_", 1)[1]).shape == (N,)
    assert (out.critic_loss is not None) == (entry.critic is not None)
    if name == "elbo":  # beta 1, constant schedule: the loss is minus the mean ELBO
        torch.testing.assert_close(out.loss, -out.elbo.mean())
    if name == "iwae":
        torch.testing.assert_close(out.loss, -out.extras["iwae"].mean())


def test_a_breakdown_of_mismatched_shapes_is_refused_naming_them():
    with pytest.raises(KlvaeError, match=r"per-point terms of shape \(N,\).*recon \(4,\)"):
        Breakdown(torch.zeros(()), torch.zeros(3), torch.zeros(4), torch.zeros(3))
    out = Breakdown(torch.zeros(()), torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(KlvaeError, match="gives no 'tc'"):
        out.value("tc")


def test_a_registration_must_name_metrics_columns():
    with pytest.raises(KlvaeError, match="monitor must name a val_"):
        register_objective("bad-columns", "x", lambda *a: None, monitor="elbo")


def half_kl(ctx, model, x, condition, step):
    """-(recon - KL / 2): a beta-ELBO written outside the package, logging the KL as 'rate'."""
    terms = elbo(model, x)
    return Breakdown.of(terms, -(terms.recon - 0.5 * terms.kl).mean(), rate=terms.kl)


def test_an_objective_registered_from_outside_trains_through_fit(tmp_path, scratch_registries):
    register_objective("half-kl", "the ELBO with half the KL", half_kl, train_extra="train_rate", beta_weighs="kl")
    run = klvae.fit({"data": "digits", "epochs": 2, "hidden": [16], "latent_dim": 3, "objective": "half-kl",
                     "progress": False, "out": str(tmp_path / "run")})
    rows = read_metrics(run)
    assert len(rows) == 2 and rows[-1]["val_elbo"] > rows[0]["val_elbo"]
    assert all(r["train_rate"] == pytest.approx(r["train_kl"]) for r in rows)  # the extra is logged by its name
    assert {"active_units", "val_mi", "kl_dim_2", "collapsed"} <= set(rows[-1])  # the diagnostics come for free


def test_a_schedule_registered_from_outside_weighs_the_kl(tmp_path, scratch_registries):
    register_schedule("halfway", "half of beta, then beta from kl_steps", lambda s, step: 0.5 if step < s.steps else 1.0)
    assert SCHEDULES["halfway"].capacity is False
    schedule = KLSchedule("halfway", beta=2.0, steps=10)
    assert [schedule.weight(t) for t in (0, 9, 10)] == [1.0, 1.0, 2.0] and not schedule.settled(9)
    run = klvae.fit({"data": "digits", "epochs": 2, "hidden": [16], "latent_dim": 3, "kl_schedule": "halfway",
                     "kl_steps": 20, "progress": False, "out": str(tmp_path / "run")})
    weights = {s["step"]: s["kl_weight"] for s in read_metrics(run, "steps.csv")}
    assert weights[19] == 0.5 and weights[20] == 1.0


def test_every_schedule_has_a_description_and_only_capacity_pulls_to_a_target():
    assert set(SCHEDULES) >= {"constant", "linear", "sigmoid", "cyclical", "capacity"}
    assert all(e.description for e in SCHEDULES.entries())
    assert SCHEDULES.where(lambda e: e.capacity) == ("capacity",)
    with pytest.raises(KlvaeError, match="constant, linear, sigmoid, cyclical, capacity.*'warmup'"):
        KLSchedule("warmup")
