"""Latent families: how an encoder's output becomes q(z|x), what the family's standard prior is,
what the decoder sees of z, and how to walk between two latent points.

| family          | z lives in           | encoder outputs       | standard prior            |
| gaussian        | R^D                  | loc, scale (2D)       | N(0, I)                   |
| vmf             | S^{D-1} in R^D       | direction, kappa (D+1)| uniform on S^{D-1}        |
| power-spherical | S^{D-1} in R^D       | direction, kappa (D+1)| uniform on S^{D-1}        |
| von-mises       | D angles (a torus)   | (cos, sin), kappa (3D)| uniform on each circle    |
| spike-slab      | R^D, sparse          | loc, scale, spike (3D)| SpikeAndSlab(0, 1, alpha) |

Spherical latents use the same ambient size D as the Gaussian (so D - 1 degrees of freedom);
Davidson et al. 2018 give their vMF D + 1 instead. Concentrations are softplus(raw) + 1 for the
spherical families (as Davidson et al.), softplus(raw) + min_scale for von Mises.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent

from klvae.distributions import (
    CircularUniform, HypersphericalUniform, PowerSpherical, SpikeAndSlab, VonMises, VonMisesFisher,
    diagonal_normal, scale_from_raw, standard_normal,
)
from klvae.errors import KlvaeError
from klvae.generation import lerp, slerp

LATENTS = {
    "gaussian": "diagonal Gaussian q(z|x), N(0, I) prior",
    "vmf": "von Mises-Fisher on the sphere S^{D-1}, uniform prior (S-VAE)",
    "power-spherical": "Power Spherical on S^{D-1}, uniform prior; rejection-free sampling",
    "von-mises": "D angles, each von Mises, uniform prior on each circle",
    "spike-slab": "spike-and-slab (sparse) posterior and prior, slab probability --sparsity",
}
PRIORS = {
    "standard": "the latent family's own prior",
    "mog": "learned mixture of --prior-components Gaussians (Gaussian latents)",
    "vamp": "VampPrior with --prior-components learned pseudo-inputs (Gaussian latents)",
}
PRIORS_OF = {"gaussian": tuple(PRIORS)}  # the learned priors are mixtures of Gaussians: Gaussian latents only


def check_combination(latent: str, prior: str) -> None:
    if latent not in LATENTS:
        raise KlvaeError(f"latent must be one of {', '.join(LATENTS)}; got {latent!r}")
    allowed = PRIORS_OF.get(latent, ("standard",))
    if prior not in allowed:
        raise KlvaeError(
            f"prior {prior!r} does not fit latent {latent!r} (it supports: {', '.join(allowed)}); "
            "use --prior standard or --latent gaussian"
        )


class Gaussian:
    """Diagonal Gaussian posterior, N(0, I) prior."""

    def __init__(self, dim: int, min_scale: float):
        self.dim, self.min_scale = dim, min_scale
        self.params, self.decoder_dim = 2 * dim, dim

    def posterior(self, h: torch.Tensor) -> Distribution:
        loc, raw = h.chunk(2, dim=-1)
        return diagonal_normal(loc, scale_from_raw(raw, self.min_scale))

    def prior(self, like: torch.Tensor) -> Distribution:
        return standard_normal(self.dim, like)

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def point(self, q: Distribution) -> torch.Tensor:
        """A representative latent point of q(z|x), (N, D): the mean (the mode, for a Gaussian)."""
        return q.mean

    def path(self, za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor, spherical: bool) -> torch.Tensor:
        return (slerp if spherical else lerp)(za, zb, t)


class Spherical(Gaussian):
    """A direction on S^{D-1} and a concentration; the uniform prior on the sphere."""

    def __init__(self, dim: int, min_scale: float, family):
        if dim < 2:
            raise KlvaeError(f"a spherical latent needs latent_dim >= 2 (S^1 at least); got {dim}")
        self.dim, self.min_scale, self.family = dim, min_scale, family
        self.params, self.decoder_dim = dim + 1, dim

    def posterior(self, h: torch.Tensor) -> Distribution:
        direction = F.normalize(h[..., :-1], dim=-1, eps=1e-12)
        return self.family(direction, F.softplus(h[..., -1]) + 1.0)

    def prior(self, like: torch.Tensor) -> Distribution:
        return HypersphericalUniform(self.dim, dtype=like.dtype, device=like.device)

    def point(self, q: Distribution) -> torch.Tensor:
        return q.loc  # the mode direction (the mean is shrunk towards 0 by A_d(kappa))

    def path(self, za, zb, t, spherical):  # always the great circle: the path that stays on S^{D-1}
        na, nb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
        return F.normalize(slerp(na, nb, t), dim=-1)


class VonMisesAngles(Gaussian):
    """D independent angles, each von Mises; the decoder sees (cos z, sin z)."""

    def __init__(self, dim: int, min_scale: float):
        self.dim, self.min_scale = dim, min_scale
        self.params, self.decoder_dim = 3 * dim, 2 * dim

    def posterior(self, h: torch.Tensor) -> Distribution:
        cos, sin, raw = h.chunk(3, dim=-1)
        return Independent(VonMises(torch.atan2(sin, cos), scale_from_raw(raw, self.min_scale)), 1)

    def prior(self, like: torch.Tensor) -> Distribution:
        return Independent(CircularUniform((self.dim,), dtype=like.dtype, device=like.device), 1)

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)

    def point(self, q: Distribution) -> torch.Tensor:
        return q.base_dist.loc  # the mode angles

    def path(self, za, zb, t, spherical):  # each angle along its shorter arc
        delta = torch.remainder(zb - za + math.pi, 2 * math.pi) - math.pi
        return za + t[:, None] * delta


class SpikeSlab(Gaussian):
    """Spike-and-slab posterior (Tonolini et al. 2020) and prior with slab probability alpha."""

    def __init__(self, dim: int, min_scale: float, alpha: float):
        self.dim, self.min_scale, self.alpha = dim, min_scale, alpha
        self.params, self.decoder_dim = 3 * dim, dim

    def posterior(self, h: torch.Tensor) -> Distribution:
        loc, raw, logit = h.chunk(3, dim=-1)
        spike = torch.sigmoid(logit).clamp(1e-6, 1 - 1e-6)
        return Independent(SpikeAndSlab(loc, scale_from_raw(raw, self.min_scale), spike), 1)

    def prior(self, like: torch.Tensor) -> Distribution:
        zeros = torch.zeros(self.dim, dtype=like.dtype, device=like.device)
        return Independent(SpikeAndSlab(zeros, torch.ones_like(zeros), torch.full_like(zeros, self.alpha)), 1)


def make_latent(name: str, dim: int, min_scale: float, sparsity: float = 0.5):
    """The latent family ``name`` over ``dim`` latent dimensions."""
    if name == "gaussian":
        return Gaussian(dim, min_scale)
    if name == "vmf":
        return Spherical(dim, min_scale, VonMisesFisher)
    if name == "power-spherical":
        return Spherical(dim, min_scale, PowerSpherical)
    if name == "von-mises":
        return VonMisesAngles(dim, min_scale)
    if name == "spike-slab":
        return SpikeSlab(dim, min_scale, sparsity)
    raise KlvaeError(f"latent must be one of {', '.join(LATENTS)}; got {name!r}")
