"""Generation from a trained model: prior samples, reconstructions, latent interpolation and
traversals.

Every picture is a decoder mean E[x|z], ``model.decode(z).mean``. For the autoregressive decoder
(klvae.autoregressive) that mean is intractable and ``.mean`` is its deterministic approximation:
the row-by-row pass that feeds each row's probabilities to the next row.
"""
from __future__ import annotations

import torch

from klvae.errors import KlvaeError


@torch.no_grad()
def sample(model, n: int, seed: int = 0) -> torch.Tensor:
    """Decoder means E[x|z] for n draws z ~ p(z) (any prior family): (n, *event_shape).
    The draw is reproducible from ``seed`` and leaves torch's global random state untouched."""
    if n < 1:
        raise KlvaeError(f"number of samples must be a positive integer; got {n}")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        z = model.prior().sample((n,))
    return model.decode(z).mean


@torch.no_grad()
def reconstruct(model, x: torch.Tensor) -> torch.Tensor:
    """Decoder means at a representative latent point of q(z|x): x: (N, *event) -> (N, *event)."""
    return model.decode(model.family.point(model.encode(x))).mean


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


@torch.no_grad()
def interpolate(model, xa: torch.Tensor, xb: torch.Tensor, steps: int, spherical: bool = False) -> torch.Tensor:
    """Decoder means along a latent path between the posterior means of xa and xb (each (*event)):
    (steps, *event), endpoints included."""
    if steps < 2:
        raise KlvaeError(f"steps must be at least 2; got {steps}")
    za, zb = model.family.point(model.encode(torch.stack([xa, xb])))
    t = torch.linspace(0, 1, steps, device=za.device)
    return model.decode(model.family.path(za, zb, t, spherical)).mean



@torch.no_grad()
def traverse(model, x: torch.Tensor, dims: list[int], steps: int = 10, span: float = 3.0) -> torch.Tensor:
    """Latent traversals from the posterior point of one data point x: (*event): for each of
    ``dims``, that coordinate swept over [-span, span] (prior standard deviations of a Gaussian or
    spike-and-slab latent) or over the whole circle (von Mises angles), the others fixed; decoder
    means, (len(dims) * steps, *event), one row per dimension."""
    if model.spec.latent in ("vmf", "power-spherical"):
        raise KlvaeError(f"traversals sweep one latent coordinate at a time; a {model.spec.latent} latent on the "
                         "sphere has none of its own (use interpolate instead)")
    if steps < 2:
        raise KlvaeError(f"steps must be at least 2; got {steps}")
    z = model.family.point(model.encode(x.unsqueeze(0)))[0]
    if model.spec.latent == "von-mises":
        values = torch.linspace(-torch.pi, torch.pi, steps + 1, device=z.device)[:-1]
    else:
        values = torch.linspace(-span, span, steps, device=z.device)
    rows = []
    for d in dims:
        zs = z.repeat(steps, 1)
        zs[:, d] = values
        rows.append(zs)
    return model.decode(torch.cat(rows)).mean
