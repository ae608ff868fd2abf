"""A klvae plugin written as a user would, outside the package: a Laplace latent family with its
closed-form KL registered with torch, a learned Laplace prior, and a small encoder/decoder pair.

Importing this module registers everything (``--plugin klvae_laplace``, or the entry-point group
``klvae.plugins``); nothing inside klvae is edited.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Laplace, register_kl

import klvae
from klvae.latents import LatentFamily


class LaplaceLatent(Laplace):
    """Laplace(loc, scale), a type of its own so that its KL is this plugin's."""

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, _instance or LaplaceLatent.__new__(LaplaceLatent))


@register_kl(LaplaceLatent, LaplaceLatent)
def _kl_laplace(q: LaplaceLatent, p: LaplaceLatent) -> torch.Tensor:
    """KL(L(m1, b1) || L(m2, b2)) = log(b2 / b1) + |m1 - m2| / b2 + (b1 / b2) exp(-|m1 - m2| / b1) - 1:
    E_q|z - m2| = |d| + b1 exp(-|d| / b1) for d = m1 - m2, and E_q|z - m1| = b1."""
    d = (q.loc - p.loc).abs()
    return (p.scale / q.scale).log() + d / p.scale + q.scale / p.scale * torch.exp(-d / q.scale) - 1


class LaplaceFamily(LatentFamily):
    """A factorised Laplace posterior over R^D and the Laplace(0, 1) prior."""

    factorised = True

    def posterior(self, h: torch.Tensor) -> Distribution:
        loc, raw = h.chunk(2, dim=-1)
        return Independent(LaplaceLatent(loc, F.softplus(raw) + self.min_scale), 1)

    def prior(self, like: torch.Tensor) -> Distribution:
        zeros = torch.zeros(self.dim, dtype=like.dtype, device=like.device)
        return Independent(LaplaceLatent(zeros, torch.ones_like(zeros)), 1)


class LearnedLaplacePrior(nn.Module):
    """p(z) = prod_d Laplace(mu_d, b_d) with learned mu and b (starting at 0 and 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_scale = nn.Parameter(torch.full((dim,), math.log(math.e - 1)))

    def forward(self) -> Distribution:
        return Independent(LaplaceLatent(self.loc, F.softplus(self.raw_scale) + 1e-4), 1)


class TinyEncoder(nn.Module):
    """x: (B, *event) -> (B, out) through one hidden layer of ``width`` with a skip to the output."""

    def __init__(self, event_shape, hidden, out, activation="relu"):
        super().__init__()
        size = math.prod(event_shape)
        self.hidden = nn.Linear(size, hidden[0])
        self.out = nn.Linear(hidden[0] + size, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.out(torch.cat([torch.tanh(self.hidden(x)), x], -1))


class TinyDecoder(nn.Module):
    """z: (B, D) -> (B, *out_shape) logits."""

    def __init__(self, out_shape, hidden, latent_dim, activation="relu"):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden[0]), nn.Tanh(), nn.Linear(hidden[0], math.prod(out_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)


klvae.register_latent("laplace", "factorised Laplace posterior, Laplace(0, 1) prior (a plugin)", LaplaceFamily)
klvae.register_prior("laplace-learned", "Laplace prior with a learned location and scale per dimension (a plugin)",
                     lambda config, model: LearnedLaplacePrior(config.latent_dim), latents=("laplace",))
klvae.register_net("tiny", "one tanh layer with a skip connection (a plugin)", TinyEncoder, TinyDecoder)
