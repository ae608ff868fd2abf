"""KL weight schedules at known steps, capacity control, free bits, and the weights a run really used."""
from __future__ import annotations

import math

import pytest
import torch

import klvae
from klvae.objectives import ElboTerms
from klvae.run import read_metrics
from klvae.schedules import KLSchedule
from helpers import assert_user_error, cli


def test_constant_is_beta_at_every_step():
    s = KLSchedule("constant", beta=4.0)
    assert [s.weight(t) for t in (0, 1, 10**6)] == [4.0, 4.0, 4.0]
    assert s.capacity(5) is None and s.settled(0)


def test_linear_ramps_from_start_to_beta_over_steps_then_stays():
    s = KLSchedule("linear", beta=2.0, start=0.2, steps=100)
    assert s.fraction(0) == pytest.approx(0.2)
    assert s.fraction(25) == pytest.approx(0.4)
    assert s.fraction(50) == pytest.approx(0.6)
    assert s.weight(100) == pytest.approx(2.0) and s.weight(5000) == pytest.approx(2.0)
    assert not s.settled(99) and s.settled(100)


def test_sigmoid_starts_at_start_is_half_way_at_mid_ramp_and_ends_at_one():
    s = KLSchedule("sigmoid", start=0.0, steps=200)
    values = [s.fraction(t) for t in range(0, 201)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[100] == pytest.approx(0.5)
    assert values[200] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[20] < 0.05 and values[180] > 0.95  # s-shaped, not linear


def test_cyclical_follows_fu_et_al_m_cycles_rising_for_a_fraction_r():
    s = KLSchedule("cyclical", steps=100, cycles=4, ratio=0.5)  # cycles of 25 steps, 12.5 rising
    assert s.fraction(0) == 0.0
    assert s.fraction(5) == pytest.approx(5 / 12.5)
    assert s.fraction(12) == pytest.approx(12 / 12.5)
    assert s.fraction(13) == 1.0 and s.fraction(24) == 1.0
    assert s.fraction(25) == 0.0 and s.fraction(30) == pytest.approx(5 / 12.5)
    assert s.fraction(75) == 0.0 and s.fraction(99) == 1.0
    assert s.fraction(100) == 1.0 and s.fraction(10**5) == 1.0  # after the cycles: full weight
    assert s.settled(20) and not s.settled(30)
    with_floor = KLSchedule("cyclical", start=0.1, steps=100, cycles=4, ratio=0.5)
    assert with_floor.fraction(25) == pytest.approx(0.1)


def test_capacity_grows_linearly_to_its_target_and_keeps_full_weight():
    s = KLSchedule("capacity", beta=100.0, steps=1000, target=25.0)
    assert s.capacity(0) == 0.0
    assert s.capacity(400) == pytest.approx(10.0)
    assert s.capacity(1000) == 25.0 and s.capacity(10**6) == 25.0
    assert s.weight(0) == 100.0
    assert not s.settled(999) and s.settled(1000)


def _terms(kl_per_dim: torch.Tensor, recon: float = -10.0) -> ElboTerms:
    n = kl_per_dim.shape[0]
    return ElboTerms(torch.full((n,), recon), kl_per_dim.sum(-1), kl_per_dim, "analytic", q=None)


def test_capacity_loss_is_the_distance_of_the_kl_to_c():
    kl = torch.tensor([[1.0, 2.0], [3.0, 2.0]], requires_grad=True)  # batch-mean KL = 4
    terms = _terms(kl)
    assert terms.loss(beta=10.0, capacity=1.0).item() == pytest.approx(10.0 + 10.0 * 3.0)
    assert terms.loss(beta=10.0, capacity=6.0).item() == pytest.approx(10.0 + 10.0 * 2.0)
    terms.loss(beta=10.0, capacity=6.0).backward()  # below C: the KL is pushed up
    assert (kl.grad < 0).all()


def test_free_bits_changes_gradients_only_below_the_floor():
    torch.manual_seed(0)
    # batch means per dimension: 0.1 and 0.3 (below a floor of 0.5), 2.0 and 1.0 (above)
    means = torch.tensor([0.1, 2.0, 0.3, 1.0])
    kl = (means * (1 + 0.1 * torch.randn(8, 4))).clamp_min(0)
    kl = kl * (means / kl.mean(0))
    grads = {}
    for lam in (0.0, 0.5):
        x = kl.clone().requires_grad_(True)
        terms = _terms(x)
        loss = terms.loss(beta=2.0, free_bits=lam)
        loss.backward()
        grads[lam] = x.grad
        if lam:
            assert loss.item() == pytest.approx(10.0 + 2.0 * (0.5 + 2.0 + 0.5 + 1.0), rel=1e-6)
    assert torch.equal(grads[0.5][:, [1, 3]], grads[0.0][:, [1, 3]])  # above the floor: unchanged
    assert (grads[0.5][:, [0, 2]] == 0).all() and (grads[0.0][:, [0, 2]] != 0).all()  # below: none


def test_free_bits_groups_floor_the_sum_of_each_group():
    kl = torch.tensor([[0.1, 0.2, 2.0, 0.1]], requires_grad=True)
    terms = _terms(kl)
    assert terms.floored_kl(0.5, group=2).item() == pytest.approx(0.5 + 2.1)
    assert terms.floored_kl(0.5, group=4).item() == pytest.approx(2.4)
    terms.floored_kl(0.5, group=2).backward()
    assert kl.grad.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_free_bits_on_a_kl_that_does_not_factorise_floors_the_total():
    terms = ElboTerms(torch.zeros(3), torch.tensor([0.1, 0.2, 0.3]), None, "analytic", q=None)
    assert terms.floored_kl(0.5).item() == pytest.approx(0.5)
    assert terms.floored_kl(0.1).item() == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["linear", "cyclical", "capacity"])
def test_a_run_uses_and_logs_the_scheduled_weight_at_every_step(tmp_path, kind):
    config = {"data": "digits", "epochs": 2, "hidden": [16], "latent_dim": 3, "progress": False, "beta": 2.0,
              "kl_schedule": kind, "kl_steps": 20, "kl_cycles": 2, "capacity": 3.0, "out": str(tmp_path / kind)}
    run = klvae.fit(config)
    schedule = KLSchedule.from_config(klvae.config.TrainConfig.from_dict(config))
    steps = read_metrics(run, "steps.csv")
    assert [s["step"] for s in steps] == list(range(len(steps))) and len(steps) > 20
    for s in steps:
        assert s["kl_weight"] == pytest.approx(schedule.weight(s["step"]))
        assert math.isfinite(s["loss"]) and s["kl"] >= 0
        if kind == "capacity":
            assert s["capacity"] == pytest.approx(schedule.capacity(s["step"]))
    rows = read_metrics(run)
    assert rows[-1]["beta"] == pytest.approx(schedule.weight(rows[-1]["step"] - 1))
    assert ("capacity" in rows[-1]) == (kind == "capacity")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_schedule_options_are_checked_in_one_line(tmp_path):
    for flags in (("--kl-schedule", "warmup"), ("--kl-ratio", "0"), ("--kl-start", "1.5"), ("--kl-steps", "0"),
                  ("--free-bits", "-1"), ("--on-collapse", "ignore"), ("--capacity", "nan")):
        assert_user_error(cli("train", "--data", "digits", "--out", tmp_path / "r", *flags), flags[0][2:].replace("-", "_"))
    assert not (tmp_path / "r").exists()
