"""The diagonal Gaussian: torch's ``Normal`` wrapped in ``Independent`` over the latent axis.

KL(N(mu, s^2) || N(m, t^2)) is torch's registered closed form (``_kl_normal_normal``):
log(t/s) + (s^2 + (mu - m)^2) / (2 t^2) - 1/2, per dimension.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal


def scale_from_raw(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Map an unconstrained network output to a scale: ``softplus(raw) + min_scale``.

    Softplus grows linearly, so a large output cannot overflow as ``exp(log_var / 2)`` can, and
    the floor keeps ``log q(z|x)`` and the KL finite when the posterior gets very sharp.
    """
    return F.softplus(raw) + min_scale


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """q(z) = N(loc, diag(scale^2)); loc, scale: (..., D) -> batch_shape (...), event_shape (D,)."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def standard_normal(dim: int, like: torch.Tensor) -> Independent:
    """p(z) = N(0, I_dim) on the device and dtype of ``like``."""
    zeros = torch.zeros(dim, device=like.device, dtype=like.dtype)
    return diagonal_normal(zeros, torch.ones_like(zeros))
