"""How well a latent space recovers known angles: circular correlation (Jammalamadaka & SenGupta
2001) between each true angle and the best latent angle."""
from __future__ import annotations

import itertools

import torch


def circular_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """r_c(a, b) = sum sin(a - a_bar) sin(b - b_bar) / sqrt(sum sin^2(a - a_bar) sum sin^2(b - b_bar)),
    with a_bar, b_bar the circular means; in [-1, 1], invariant to rotating either variable;
    a reflection flips its sign. a, b: (N,) angles in radians."""
    a, b = a.double(), b.double()
    sa = torch.sin(a - torch.atan2(torch.sin(a).mean(), torch.cos(a).mean()))
    sb = torch.sin(b - torch.atan2(torch.sin(b).mean(), torch.cos(b).mean()))
    return float((sa * sb).sum() / torch.sqrt((sa**2).sum() * (sb**2).sum()).clamp_min(1e-300))


def candidate_angles(model, x: torch.Tensor) -> torch.Tensor:
    """Angles the latent space offers, (N, C): each angle of a von Mises latent, otherwise the
    angle atan2(z_j, z_i) of every pair of latent coordinates (the circle a spherical latent
    lives on when D = 2, or a ring a Gaussian latent may have learned); and the sum and the
    difference of every two of those, since a torus has other coordinates than the ones the data
    were made with (a latent holding the arm's absolute headings a1 and a1 + a2 recovers a2 as
    their difference)."""
    with torch.no_grad():
        z = model.family.point(model.encode(x))
    base = model.family.angles(z)
    pairs = list(itertools.combinations(range(base.shape[-1]), 2))
    derived = [base[:, j] + sign * base[:, i] for i, j in pairs for sign in (1, -1)]
    return torch.cat([base, *(d.unsqueeze(-1) for d in derived)], dim=-1)


def angle_recovery(model, x: torch.Tensor, angles: torch.Tensor) -> list[float]:
    """For each true angle (columns of angles: (N, L)), the largest |circular correlation| with
    any candidate latent angle."""
    candidates = candidate_angles(model, x)
    return [max(abs(circular_correlation(angles[:, k], c)) for c in candidates.T) for k in range(angles.shape[1])]
