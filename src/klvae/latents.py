"""Latent families: how an encoder's output becomes q(z|x), what the family's standard prior is,
what the decoder sees of z, the geometry z lives in and how to walk it.

| family          | z lives in           | encoder outputs       | standard prior            |
| gaussian        | R^D                  | loc, scale (2D)       | N(0, I)                   |
| vmf             | S^{D-1} in R^D       | direction, kappa (D+1)| uniform on S^{D-1}        |
| power-spherical | S^{D-1} in R^D       | direction, kappa (D+1)| uniform on S^{D-1}        |
| von-mises       | D angles (a torus)   | (cos, sin), kappa (3D)| uniform on each circle    |
| spike-slab      | R^D, sparse          | loc, scale, spike (3D)| SpikeAndSlab(0, 1, alpha) |

A family is a :class:`LatentFamily` subclass registered in ``LATENTS`` (``klvae.register_latent``);
its class attributes are the capabilities other code asks about: ``geometry`` ("euclidean",
"sphere", "torus" or "discrete"), and through its methods the interpolation path, the traversal
range and the angles it offers. Spherical latents use the same ambient size D as the Gaussian (so
D - 1 degrees of freedom); Davidson et al. 2018 give their vMF D + 1 instead. Concentrations are
softplus(raw) + 1 for the spherical families (as Davidson et al.), softplus(raw) + min_scale for
von Mises.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent

from klvae.distributions import (
    CircularUniform, HypersphericalUniform, PowerSpherical, SpikeAndSlab, VonMises, VonMisesFisher,
    diagonal_normal, scale_from_raw, standard_normal,
)
from klvae.errors import KlvaeError
from klvae.paths import lerp, slerp
from klvae.registry import Registry

LATENTS = Registry("latent", "--latent")
GEOMETRIES = ("euclidean", "sphere", "torus", "discrete")


class LatentFamily:
    """A family of posteriors q(z|x) over D latent dimensions, with its standard prior.

    Subclasses set ``params`` (encoder outputs per data point) and ``decoder_dim`` (what the
    decoder reads of z) and implement :meth:`posterior` and :meth:`prior`; the rest has Euclidean
    defaults. Capabilities: ``geometry`` (where z lives), ``factorised`` (q is an ``Independent``
    over the D dimensions, so per-dimension terms such as the total correlation exist)."""

    geometry = "euclidean"
    factorised = False

    def __init__(self, dim: int, min_scale: float = 1e-4):
        self.dim, self.min_scale = dim, min_scale
        self.params, self.decoder_dim = 2 * dim, dim

    @classmethod
    def from_config(cls, config) -> "LatentFamily":
        """The family a model config asks for (latent_dim, min_scale and the family's own options)."""
        return cls(config.latent_dim, config.min_scale)

    def posterior(self, h: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder output h: (N, params): batch (N,), event (D,)."""
        raise NotImplementedError

    def prior(self, like: torch.Tensor) -> Distribution:
        """The family's standard prior p(z): batch (), event (D,), on ``like``'s device and dtype."""
        raise NotImplementedError

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of z: (..., D) -> (..., decoder_dim)."""
        return z

    def point(self, q: Distribution) -> torch.Tensor:
        """A representative latent point of q(z|x), (N, D): the mean (the mode, for a Gaussian)."""
        return q.mean

    def path(self, za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor, spherical: bool) -> torch.Tensor:
        """Points from za to zb (each (D,)) at t: (S,) in [0, 1] -> (S, D)."""
        return (slerp if spherical else lerp)(za, zb, t)

    def traversal(self, steps: int, span: float, device) -> torch.Tensor:
        """The values one coordinate sweeps in a traversal, (steps,): [-span, span] prior standard
        deviations; a family without coordinates of its own raises a KlvaeError."""
        return torch.linspace(-span, span, steps, device=device)

    def angles(self, z: torch.Tensor) -> torch.Tensor:
        """Angles the latent points z: (N, D) offer, (N, C): atan2(z_j, z_i) of every pair of
        coordinates (a circle a latent may have learned)."""
        pairs = itertools.combinations(range(z.shape[-1]), 2)
        return torch.stack([torch.atan2(z[:, j], z[:, i]) for i, j in pairs], dim=-1)


@LATENTS.register("gaussian", "diagonal Gaussian q(z|x), N(0, I) prior")
class Gaussian(LatentFamily):
    """Diagonal Gaussian posterior, N(0, I) prior."""

    factorised = True

    def posterior(self, h: torch.Tensor) -> Distribution:
        loc, raw = h.chunk(2, dim=-1)
        return diagonal_normal(loc, scale_from_raw(raw, self.min_scale))

    def prior(self, like: torch.Tensor) -> Distribution:
        return standard_normal(self.dim, like)


class Spherical(LatentFamily):
    """A direction on S^{D-1} and a concentration; the uniform prior on the sphere."""

    geometry = "sphere"
    distribution: type = VonMisesFisher

    def __init__(self, dim: int, min_scale: float = 1e-4):
        if dim < 2:
            raise KlvaeError(f"a spherical latent needs latent_dim >= 2 (S^1 at least); got {dim}")
        super().__init__(dim, min_scale)
        self.params = dim + 1

    def posterior(self, h: torch.Tensor) -> Distribution:
        direction = F.normalize(h[..., :-1], dim=-1, eps=1e-12)
        return self.distribution(direction, F.softplus(h[..., -1]) + 1.0)

    def prior(self, like: torch.Tensor) -> Distribution:
        return HypersphericalUniform(self.dim, dtype=like.dtype, device=like.device)

    def point(self, q: Distribution) -> torch.Tensor:
        return q.loc  # the mode direction (the mean is shrunk towards 0 by A_d(kappa))

    def path(self, za, zb, t, spherical):  # always the great circle: the path that stays on S^{D-1}
        na, nb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
        return F.normalize(slerp(na, nb, t), dim=-1)

    def traversal(self, steps, span, device):
        raise KlvaeError("traversals sweep one latent coordinate at a time; a latent on the sphere has none of its "
                         "own (use interpolate instead)")


@LATENTS.register("vmf", "von Mises-Fisher on the sphere S^{D-1}, uniform prior (S-VAE)")
class VMF(Spherical):
    distribution = VonMisesFisher


@LATENTS.register("power-spherical", "Power Spherical on S^{D-1}, uniform prior; rejection-free sampling")
class PowerSphericalFamily(Spherical):
    distribution = PowerSpherical


@LATENTS.register("von-mises", "D angles, each von Mises, uniform prior on each circle")
class VonMisesAngles(LatentFamily):
    """D independent angles, each von Mises; the decoder sees (cos z, sin z)."""

    geometry = "torus"
    factorised = True

    def __init__(self, dim: int, min_scale: float = 1e-4):
        super().__init__(dim, min_scale)
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

    def traversal(self, steps, span, device):  # the whole circle
        return torch.linspace(-math.pi, math.pi, steps + 1, device=device)[:-1]

    def angles(self, z: torch.Tensor) -> torch.Tensor:
        return z  # each latent is an angle


@LATENTS.register("spike-slab", "spike-and-slab (sparse) posterior and prior, slab probability --sparsity")
class SpikeSlab(LatentFamily):
    """Spike-and-slab posterior (Tonolini et al. 2020) and prior with slab probability alpha."""

    def __init__(self, dim: int, min_scale: float = 1e-4, alpha: float = 0.5):
        super().__init__(dim, min_scale)
        self.alpha, self.params = alpha, 3 * dim

    @classmethod
    def from_config(cls, config) -> "SpikeSlab":
        return cls(config.latent_dim, config.min_scale, config.sparsity)

    def posterior(self, h: torch.Tensor) -> Distribution:
        loc, raw, logit = h.chunk(3, dim=-1)
        spike = torch.sigmoid(logit).clamp(1e-6, 1 - 1e-6)
        return Independent(SpikeAndSlab(loc, scale_from_raw(raw, self.min_scale), spike), 1)

    def prior(self, like: torch.Tensor) -> Distribution:
        zeros = torch.zeros(self.dim, dtype=like.dtype, device=like.device)
        return Independent(SpikeAndSlab(zeros, torch.ones_like(zeros), torch.full_like(zeros, self.alpha)), 1)


def latent_family(name: str) -> type[LatentFamily]:
    """The registered family class ``name`` (its class attributes are its capabilities)."""
    return LATENTS[name].builder


def make_latent(config) -> LatentFamily:
    """The latent family a model config names (``config.latent``), built from that config."""
    return latent_family(config.latent).from_config(config)
