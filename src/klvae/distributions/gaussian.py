"""The diagonal Gaussian: torch's ``Normal`` wrapped in ``Independent`` over the latent axis.

KL(N(mu, s^2) || N(m, t^2)) is torch's registered closed form (``_kl_normal_normal``):
log(t/s) + (s^2 + (mu - m)^2) / (2 t^2) - 1/2, per dimension. Against the standard prior
(:class:`StandardNormal`) a shorter closed form is registered: (mu^2 + s^2 - 1) / 2 - log s.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, register_kl


def scale_from_raw(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Map an unconstrained network output to a scale: ``softplus(raw) + min_scale``.

    Softplus grows linearly, so a large output cannot overflow as ``exp(log_var / 2)`` can, and
    the floor keeps ``log q(z|x)`` and the KL finite when the posterior gets very sharp.
    """
    return F.softplus(raw) + min_scale


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """q(z) = N(loc, diag(scale^2)); loc, scale: (..., D) -> batch_shape (...), event_shape (D,)."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class StandardNormal(Normal):
    """N(0, 1) in each coordinate of batch shape ``shape`` (an int: (shape,)): a ``Normal`` whose
    KL from a Normal has the shorter closed form registered below."""

    def __init__(self, shape: int | tuple[int, ...], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        zeros = torch.zeros(shape, dtype=dtype, device=device)
        super().__init__(zeros, torch.ones_like(zeros), validate_args=False)


@register_kl(Normal, StandardNormal)
def _kl_normal_standard(q: Normal, p: StandardNormal) -> torch.Tensor:
    return 0.5 * (q.loc.square() + q.scale.square() - 1) - q.scale.log()


def standard_normal(dim: int, like: torch.Tensor) -> Independent:
    """p(z) = N(0, I_dim) on the device and dtype of ``like`` (one object per dim, dtype and
    device, made once: distributions are immutable)."""
    return _standard_normal(dim, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _standard_normal(dim: int, dtype: torch.dtype, device: torch.device) -> Independent:
    return Independent(StandardNormal(dim, dtype, device), 1, validate_args=False)
