"""log I_v, the ratio I_{v+1}/I_v and A_d against scipy's ive, mpmath (when importable) and the
derivative identities, from x = 1e-6 to 1e5 and orders up to 127 (d = 256). Deterministic: no seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

from klvae.distributions import bessel
from klvae.distributions.bessel import bessel_ratio, log_iv, log_iv_reduced, mean_resultant_length

try:
    import mpmath
except ImportError:  # pragma: no cover - mpmath ships with sympy
    mpmath = None
needs_mpmath = pytest.mark.skipif(mpmath is None, reason="mpmath is not installed")

ORDERS = [0.0, 0.5, 1.0, 4.0, 49.0, 127.0]
ARGS = [1e-6, 1e-3, 1.0, 10.0, 1e3, 1e5]


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def mp_log_iv(v: float, x: float) -> float:
    with mpmath.workdps(40):
        return float(mpmath.log(mpmath.besseli(v, x)))


def mp_ratio(v: float, x: float) -> float:
    with mpmath.workdps(40):
        return float(mpmath.besseli(v + 1, x) / mpmath.besseli(v, x))


def rel_err(got: float, ref: float) -> float:
    return abs(got - ref) / max(1.0, abs(ref))


@pytest.mark.parametrize("v", ORDERS)
def test_log_iv_matches_scipy_ive_wherever_ive_is_representable(v):
    x = np.array(ARGS)
    scaled = scipy.special.ive(v, x)
    keep = scaled > 1e-300
    expected = np.log(scaled[keep]) + x[keep]
    got = log_iv(v, f64(x)).numpy()[keep]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@needs_mpmath
@pytest.mark.parametrize("v", ORDERS)
def test_log_iv_ratio_and_reduced_form_match_mpmath(v):
    got, ratio, reduced = log_iv(v, f64(ARGS)), bessel_ratio(v, f64(ARGS)), log_iv_reduced(v, f64(ARGS))
    for i, x in enumerate(ARGS):
        ref = mp_log_iv(v, x)
        assert rel_err(got[i].item(), ref) < 1e-12, (v, x, got[i].item(), ref)
        assert abs(ratio[i].item() / mp_ratio(v, x) - 1) < 1e-12, (v, x)
        with mpmath.workdps(40):  # reduced = log(I_v(x) Gamma(v+1) / (x/2)^v): relative accuracy even when ~1e-13
            ref_reduced = float(mpmath.log(mpmath.besseli(v, x) * mpmath.gamma(v + 1) / (mpmath.mpf(x) / 2) ** v))
        assert abs(reduced[i].item() - ref_reduced) <= 1e-12 * abs(ref_reduced) + 1e-300, (v, x)


@needs_mpmath
@pytest.mark.parametrize(("v", "x"), [(400.0, 41.0), (1000.0, 100.0), (0.0, 1e10), (4.0, 1e12), (127.0, 1e10)])
def test_asymptotic_branches_match_mpmath_where_ive_underflows_or_fails(v, x):
    scaled = scipy.special.ive(v, x)
    assert not scaled > 1e-280  # ive underflows (Debye form needed) or fails (Hankel form needed)
    assert rel_err(log_iv(v, f64([x])).item(), mp_log_iv(v, x)) < 1e-12
    assert abs(bessel_ratio(v, f64([x])).item() / mp_ratio(v, x) - 1) < 1e-11


@needs_mpmath
def test_debye_and_hankel_expansions_agree_with_mpmath_inside_the_range_of_ive():
    x = np.array([5.0, 50.0, 500.0, 5e4])
    for v in (60.0, 127.0, 400.0):
        expected = np.array([mp_log_iv(v, xi) for xi in x])
        np.testing.assert_allclose(bessel._log_iv_debye(v, x), expected, rtol=1e-10)
    x = np.array([1e4, 1e6])
    for v in (0.0, 0.5, 4.0):
        expected = np.array([mp_log_iv(v, xi) for xi in x])
        np.testing.assert_allclose(bessel._log_iv_hankel(v, x), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_are_finite_keep_dtype_and_shape_across_the_whole_range(dtype):
    x = torch.logspace(-6, 5, 56, dtype=dtype).reshape(7, 8)
    for v in [0.0, 0.5, 1.0, 4.0, 49.0, 127.0, 0.5 * 256 - 1]:
        for fn in (log_iv, log_iv_reduced, bessel_ratio):
            out = fn(v, x)
            assert out.dtype == dtype and out.shape == x.shape and torch.isfinite(out).all(), (fn, v)
        ratio = bessel_ratio(v, x)
        assert ((ratio > 0) & (ratio <= 1)).all()
        assert (log_iv_reduced(v, x) >= 0).all()


@pytest.mark.parametrize("v", [0.0, 0.5, 4.0, 49.0])
def test_gradients_pass_gradcheck_at_moderate_points(v):
    x = f64([0.3, 1.7, 6.0, 25.0, 80.0]).requires_grad_()
    for fn in (log_iv, log_iv_reduced, bessel_ratio):
        assert torch.autograd.gradcheck(lambda t, fn=fn: fn(v, t), (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(lambda t: log_iv(v, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


@needs_mpmath
@pytest.mark.parametrize("v", ORDERS)
def test_gradient_at_extreme_points_equals_the_ratio_identity(v):
    x = f64(ARGS).requires_grad_()
    (grad,) = torch.autograd.grad(log_iv(v, x).sum(), x)
    (grad_reduced,) = torch.autograd.grad(log_iv_reduced(v, x).sum(), x)
    (grad_ratio,) = torch.autograd.grad(bessel_ratio(v, x).sum(), x)
    for i, xi in enumerate(ARGS):
        ratio = mp_ratio(v, xi)
        assert abs(grad[i].item() / (ratio + v / xi) - 1) < 1e-12, (v, xi)
        assert abs(grad_reduced[i].item() / ratio - 1) < 1e-12, (v, xi)
        with mpmath.workdps(40):  # R' = 1 - R^2 - (2v+1) R / x, evaluated exactly
            r = mpmath.besseli(v + 1, xi) / mpmath.besseli(v, xi)
            slope = float(1 - r * r - (2 * v + 1) * r / xi)
        # below x ~ 50 v^2 the identity's O(1) terms cancel to R' ~ (2v+1) / 2x^2: absolute accuracy only
        assert abs(grad_ratio[i].item() - slope) < 1e-12 * abs(slope) + 5e-14, (v, xi, grad_ratio[i].item(), slope)


@pytest.mark.parametrize("d", [2, 3, 10, 64, 256])
def test_mean_resultant_length_limits_closed_form_and_derivative(d):
    small, large = mean_resultant_length(d, f64([1e-6])), mean_resultant_length(d, f64([1e5]))
    assert small.item() == pytest.approx(1e-6 / d, rel=1e-9)
    assert large.item() == pytest.approx(1 - (d - 1) / 2e5 + (d - 1) * (d - 3) / 8e10, rel=1e-9)
    kappa = f64([0.01, 0.7, 3.0, 40.0, 900.0]).requires_grad_()
    a = mean_resultant_length(d, kappa)
    (slope,) = torch.autograd.grad(a.sum(), kappa)
    a, k = a.detach(), kappa.detach()
    torch.testing.assert_close(slope, 1 - a**2 - (d - 1) * a / k, rtol=1e-9, atol=1e-14)
    if d == 3:  # A_3(kappa) = coth(kappa) - 1/kappa
        torch.testing.assert_close(a, 1 / torch.tanh(k) - 1 / k, rtol=1e-10, atol=0)


def test_bad_order_or_dimension_is_a_value_error():
    with pytest.raises(ValueError, match="order v must be a finite number >= 0"):
        log_iv(-0.5, f64([1.0]))
    with pytest.raises(ValueError, match="order v must be a finite number >= 0"):
        bessel_ratio(math.nan, f64([1.0]))
    with pytest.raises(ValueError, match="dimension d must be an integer >= 2"):
        mean_resultant_length(1, f64([1.0]))
