"""Geometry shared by the distributions on the sphere S^{d-1}."""
from __future__ import annotations

import torch


def rotate_north_to(loc: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Apply an orthogonal map R with R e1 = loc to points y: (..., d); loc: (..., d) unit vectors.

    R = -s H_u with u = e1 + s loc, s = sign(loc_1) (+1 at 0), and H_u the Householder reflection
    x -> x - 2 <u, x> u / |u|^2, so that H_u e1 = -s loc. As |u|^2 = 2 (1 + |loc_1|) >= 2, nothing
    cancels at loc = +-e1 (the usual u = e1 - loc vanishes at loc = e1). Gradients flow to loc.
    """
    sign = torch.where(loc[..., :1] < 0, -1.0, 1.0).to(loc.dtype)
    u = sign * loc
    u = torch.cat([u[..., :1] + 1, u[..., 1:]], -1)
    coef = 2 * (u * y).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
    return -sign * (y - coef * u)
