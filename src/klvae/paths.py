"""Paths between two latent points: straight lines and great circles."""
from __future__ import annotations

import torch


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight line a -> b; a, b: (D,), t: (S,) in [0, 1] -> (S, D)."""
    t = t[:, None]
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation a -> b (great circle on directions, norms interpolated linearly).

    Under a N(0, I) prior, linear paths pass through the low-norm centre that the prior rarely
    visits; slerp keeps the norm typical. Falls back to lerp when a and b are (anti)parallel.
    """
    na, nb = a.norm(), b.norm()
    cos = torch.clamp((a @ b) / (na * nb).clamp_min(1e-12), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4 or (torch.pi - omega).abs() < 1e-4:
        return lerp(a, b, t)
    t = t[:, None]
    ua, ub = a / na, b / nb
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)
