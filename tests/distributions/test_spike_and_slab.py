"""SpikeAndSlab: the mixed-measure log density, hard and relaxed sampling, and its registered KLs
against Monte Carlo, numerical integration and extreme parameters.

Seed policy: every statistical test calls ``torch.manual_seed`` at its top and compares estimates
with a tolerance of 5 standard errors (plus a stated bias bound where one exists), so the tests
neither flake nor pass by luck. Statistics run in float64."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from klvae import kl
from klvae.distributions.spike_and_slab import SpikeAndSlab, switched_off_fraction

SHAPES = [(), (4,), (2, 3)]
F64 = torch.float64


def params(shape, seed: int, spike_range=(0.1, 0.9)):
    """loc, scale, spike of the given shape (float64) from a fixed generator."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = spike_range
    return (torch.randn(shape, generator=g, dtype=F64),
            torch.rand(shape, generator=g, dtype=F64) + 0.3,
            lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64))


def pair(shape):
    """A posterior-like q and a VSC-like prior p (slab N(0, 1)-ish, spike alpha)."""
    q = SpikeAndSlab(*params(shape, seed=0))
    loc, scale, spike = params(shape, seed=1)
    return q, SpikeAndSlab(0.3 * loc, scale + 0.5, spike)


def closed_form(q: SpikeAndSlab, p: SpikeAndSlab) -> torch.Tensor:
    g, a, mu, s, m, t = q.spike, p.spike, q.loc, q.scale, p.loc, p.scale
    gauss = torch.log(t / s) + (s**2 + (mu - m) ** 2) / (2 * t**2) - 0.5
    return g * gauss + g * torch.log(g / a) + (1 - g) * torch.log((1 - g) / (1 - a))


# --- log density and moments -------------------------------------------------------------------

def test_log_prob_is_the_spike_mass_at_zero_and_the_weighted_slab_density_elsewhere():
    loc, scale, spike = params((5,), seed=3)
    d = SpikeAndSlab(loc, scale, spike)
    torch.testing.assert_close(d.log_prob(torch.zeros(5, dtype=F64)), torch.log1p(-spike))
    z = torch.tensor([0.3, -1.0, 2.0, 1e-30, -5.0], dtype=F64)
    torch.testing.assert_close(d.log_prob(z), torch.log(spike) + Normal(loc, scale).log_prob(z))


def test_mean_variance_and_entropy_have_their_closed_forms():
    torch.manual_seed(0)
    loc, scale, spike = params((3,), seed=4)
    d = SpikeAndSlab(loc, scale, spike)
    torch.testing.assert_close(d.mean, spike * loc)
    z = d.sample((200_000,))
    n = z.shape[0]
    assert ((z.mean(0) - d.mean).abs() < 5 * z.std(0) / math.sqrt(n)).all()
    torch.testing.assert_close(z.var(0), d.variance, rtol=0.03, atol=0)
    neg_log_q = -d.log_prob(z)  # entropy w.r.t. the mixed measure = E[-log q(z)]
    assert ((neg_log_q.mean(0) - d.entropy()).abs() < 5 * neg_log_q.std(0) / math.sqrt(n)).all()


def test_hard_samples_are_exactly_zero_with_probability_one_minus_spike_and_slab_distributed():
    torch.manual_seed(0)
    loc = torch.tensor([1.5, -0.5, 0.0], dtype=F64)
    scale = torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    spike = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    n = 200_000
    z = SpikeAndSlab(loc, scale, spike).sample((n,))
    off = (z == 0).to(F64).mean(0)
    assert ((off - (1 - spike)).abs() < 5 * torch.sqrt(spike * (1 - spike) / n)).all(), off
    for j in range(3):
        slab = z[:, j][z[:, j] != 0]
        k = slab.numel()
        assert abs(slab.mean() - loc[j]) < 5 * scale[j] / math.sqrt(k)
        assert abs(slab.std() / scale[j] - 1) < 5 / math.sqrt(2 * k)  # SE of a sample std: s / sqrt(2k)


def test_switched_off_fraction_is_the_mean_off_probability_and_matches_hard_samples():
    torch.manual_seed(0)
    loc, scale, spike = params((2, 6), seed=5)
    q = Independent(SpikeAndSlab(loc, scale, spike), 1)
    expected = (1 - spike).mean(-1)
    torch.testing.assert_close(switched_off_fraction(q), expected)
    torch.testing.assert_close(switched_off_fraction(q.base_dist), 1 - spike)
    observed = (q.sample((50_000,)) == 0).to(F64).mean(-1).mean(0)  # (2,)
    assert ((observed - expected).abs() < 0.01).all()  # SE <= 0.5 / sqrt(6 * 50000) = 1e-3
    with pytest.raises(TypeError, match="SpikeAndSlab"):
        switched_off_fraction(Normal(loc, scale))


# --- relaxed and straight-through reparameterisation -------------------------------------------

def test_rsample_gives_gradients_to_loc_scale_and_spike():
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True)
    spike = torch.tensor([0.3, 0.7], dtype=F64, requires_grad=True)
    z = SpikeAndSlab(loc, scale, spike).rsample((1000,))
    assert z.shape == (1000, 2)
    (z**2).mean().backward()
    for t in (loc, scale, spike):
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad != 0).all()


@pytest.mark.parametrize("gamma", [0.3, 0.5])
def test_relaxed_gradient_of_the_mean_in_spike_tends_to_loc_at_low_temperature(gamma):
    # Tolerance: d/dspike E[z] = loc * d/dspike E[s_T]. The exact relaxed derivative, found below by
    # quadrature over the logistic noise, differs from 1 by O(T^2) (0.4% to 0.8% at T = 0.1), and
    # the 200k-sample gradient (SE ~0.6% of loc) must lie within 5 SE of it.
    torch.manual_seed(0)
    temperature, loc, n = 0.1, 1.5, 200_000
    spike = torch.tensor(gamma, dtype=F64, requires_grad=True)
    SpikeAndSlab(torch.tensor(loc, dtype=F64), torch.tensor(0.5, dtype=F64), spike,
                 temperature=temperature).rsample((n,)).mean().backward()
    mc = spike.grad.item() / loc

    x = torch.linspace(-60, 60, 400_001, dtype=F64)  # logistic noise, density sigmoid(x) sigmoid(-x)
    g = torch.tensor(gamma, dtype=F64, requires_grad=True)
    expected_gate = torch.trapezoid(torch.sigmoid((torch.logit(g) + x) / temperature)
                                    * torch.sigmoid(x) * torch.sigmoid(-x), x)
    expected_gate.backward()
    exact = g.grad.item()
    assert abs(exact - 1) < 0.01
    # per-sample SE bound: |d s / d spike| <= 1 / (4 T spike (1 - spike)), slab second moment
    se = math.sqrt((1 / (4 * temperature * gamma * (1 - gamma))) ** 2 * (loc**2 + 0.25) / n) / loc
    assert abs(mc - exact) < 5 * se, (mc, exact, se)


def test_relaxed_samples_approach_hard_statistics_at_low_temperature():
    torch.manual_seed(0)
    d = SpikeAndSlab(torch.tensor(2.0, dtype=F64), torch.tensor(0.5, dtype=F64),
                     torch.tensor(0.3, dtype=F64), temperature=1e-3)
    z = d.rsample((100_000,))
    assert abs(z.mean() - d.mean) < 5 * z.std() / math.sqrt(z.numel()) + 0.01
    # |z| < 1e-3 needs a gate below ~5e-4, i.e. logit(0.3) + noise < T logit(5e-4) = -0.0076: the
    # probability is 0.698 rather than 0.7 at this T (SE of the fraction 0.0015)
    assert abs((z.abs() < 1e-3).to(F64).mean() - 0.7) < 0.01


def test_straight_through_rsample_is_hard_in_value_and_differentiable():
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    spike = torch.tensor([0.25, 0.6], dtype=F64, requires_grad=True)
    d = SpikeAndSlab(loc, torch.ones(2, dtype=F64), spike, straight_through=True)
    n = 100_000
    z = d.rsample((n,))
    off = (z == 0).to(F64).mean(0)
    assert ((off - (1 - spike.detach())).abs() < 5 * torch.sqrt(0.25 / torch.tensor(n))).all()
    assert torch.isfinite(d.log_prob(z)).all()
    z.mean().backward()
    assert (spike.grad.abs() > 0).all() and (loc.grad.abs() > 0).all()


# --- shapes, expand, validation -----------------------------------------------------------------

def test_batch_shape_sample_shapes_and_expand():
    d = SpikeAndSlab(torch.zeros(3), 1.0, torch.full((2, 1), 0.5), temperature=0.2, straight_through=True)
    assert d.batch_shape == (2, 3) and d.event_shape == ()
    assert d.sample((5,)).shape == (5, 2, 3) and d.rsample((5,)).shape == (5, 2, 3)
    e = d.expand((4, 2, 3))
    assert e.batch_shape == (4, 2, 3) and e.sample().shape == (4, 2, 3)
    assert e.temperature == 0.2 and e.straight_through
    torch.testing.assert_close(e.mean, d.mean.expand(4, 2, 3))
    assert Independent(d, 1).log_prob(torch.zeros(2, 3)).shape == (2,)


def test_invalid_parameters_are_errors():
    with pytest.raises(ValueError, match="spike"):
        SpikeAndSlab(torch.zeros(2), torch.ones(2), torch.tensor([0.5, 1.5]), validate_args=True)
    with pytest.raises(ValueError, match="scale"):
        SpikeAndSlab(torch.zeros(2), torch.tensor([1.0, -1.0]), 0.5, validate_args=True)
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            SpikeAndSlab(0.0, 1.0, 0.5, temperature=bad)
    assert SpikeAndSlab(0.0, 1.0, 0.5, temperature=torch.tensor(0.5)).temperature == 0.5


# --- KL(SpikeAndSlab || SpikeAndSlab) -----------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_kl_equals_its_closed_form_and_monte_carlo_with_hard_samples(shape):
    torch.manual_seed(0)
    q, p = pair(shape)
    exact = kl_divergence(q, p)
    assert exact.shape == shape
    torch.testing.assert_close(exact, closed_form(q, p))
    n = 200_000
    z = q.sample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (n, *shape)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert ((estimate - exact).abs() < 5 * stderr + 1e-9).all(), (estimate, exact, stderr)


def test_kl_in_one_dimension_equals_spike_term_plus_numerically_integrated_slab_term():
    g, mu, s = 0.35, 0.8, 0.4
    a, m, t = 0.2, 0.0, 1.0
    q = SpikeAndSlab(torch.tensor(mu, dtype=F64), torch.tensor(s, dtype=F64), torch.tensor(g, dtype=F64))
    p = SpikeAndSlab(torch.tensor(m, dtype=F64), torch.tensor(t, dtype=F64), torch.tensor(a, dtype=F64))
    spike_term = (1 - g) * math.log((1 - g) / (1 - a))  # both masses at 0, exactly
    z = torch.linspace(-8, 8, 160_001, dtype=F64)  # z != 0 except one grid point of measure 0
    dq = g * Normal(mu, s).log_prob(z).exp()
    dp = a * Normal(m, t).log_prob(z).exp()
    slab_term = torch.trapezoid(dq * torch.log(dq / dp), z)
    assert kl_divergence(q, p).item() == pytest.approx((spike_term + slab_term).item(), abs=1e-8)


def test_kl_is_zero_when_q_equals_p_and_positive_otherwise():
    q, p = pair((2, 3))
    same = SpikeAndSlab(q.loc.clone(), q.scale.clone(), q.spike.clone())
    assert kl_divergence(q, same).abs().max() < 1e-12
    assert (kl_divergence(q, p) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_kl_is_finite_and_accurate_at_extreme_spikes_and_tiny_scales(dtype):
    gamma = torch.tensor([1e-6, 1 - 1e-6, 0.0, 1.0, 0.5, 1e-6], dtype=dtype, requires_grad=True)
    scale = torch.tensor([0.3, 0.3, 0.3, 0.3, 1e-6, 1e-6], dtype=dtype)
    q = SpikeAndSlab(torch.full((6,), 0.5, dtype=dtype), scale, gamma)
    p = SpikeAndSlab(torch.zeros(6, dtype=dtype), torch.ones(6, dtype=dtype), torch.full((6,), 0.5, dtype=dtype))
    value = kl_divergence(q, p)
    assert torch.isfinite(value).all() and (value >= 0).all()
    value[[0, 1, 4, 5]].sum().backward()
    assert torch.isfinite(gamma.grad[[0, 1, 4, 5]]).all()

    def reference(gv, sv):  # float64 math on the values actually stored
        gauss = -math.log(sv) + (sv**2 + 0.25) / 2 - 0.5
        xlogx = lambda x: x * math.log(x) if x > 0 else 0.0  # noqa: E731
        return gv * gauss + xlogx(gv) - gv * math.log(0.5) + xlogx(1 - gv) - (1 - gv) * math.log(0.5)

    expected = [reference(gv, sv) for gv, sv in zip(gamma.tolist(), scale.tolist())]
    torch.testing.assert_close(value.detach().double(), torch.tensor(expected, dtype=F64),
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_independent_spike_and_slab_goes_through_kl_analytically_with_per_dimension_values():
    q, p = pair((4, 5))
    result = kl(Independent(q, 1), Independent(p, 1))
    assert result.method == "analytic" and result.value.shape == (4,)
    torch.testing.assert_close(result.per_dim, closed_form(q, p))


# --- KLs against the Gaussian -------------------------------------------------------------------

def test_kl_from_spike_and_slab_to_a_gaussian_is_infinite_unless_always_on():
    loc, scale, _ = params((3,), seed=6)
    spike = torch.tensor([0.5, 1 - 1e-9, 1.0], dtype=F64)
    p = Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    value = kl_divergence(SpikeAndSlab(loc, scale, spike), p)
    assert torch.isinf(value[:2]).all()
    torch.testing.assert_close(value[2], 0.5 * (scale[2] ** 2 + loc[2] ** 2 - 1) - torch.log(scale[2]))


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_from_a_gaussian_to_spike_and_slab_matches_monte_carlo(shape):
    torch.manual_seed(0)
    loc, scale, _ = params(shape, seed=7)
    q = Normal(loc, scale)
    _, p = pair(shape)
    exact = kl_divergence(q, p)
    assert exact.shape == shape
    n = 200_000
    z = q.sample((n,))  # never exactly 0, so p is scored on its slab branch as it should be
    log_ratio = q.log_prob(z) - p.log_prob(z)
    assert ((log_ratio.mean(0) - exact).abs() < 5 * log_ratio.std(0) / math.sqrt(n)).all()
