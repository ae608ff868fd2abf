"""Decoder likelihoods p(x|z): network outputs -> a Distribution over one data point.

Every likelihood declares the data's event dims with ``Independent``, so ``log_prob(x)`` is the
log-density of a whole data point (nats).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from klvae.distributions.gaussian import scale_from_raw

LIKELIHOODS = ("bernoulli", "gaussian")


class BernoulliLikelihood(nn.Module):
    """Bernoulli with logits, for binary data: log p(x|z) = -BCE(logits, x) summed over pixels."""

    def forward(self, logits: torch.Tensor, event_ndims: int) -> Distribution:
        return Independent(Bernoulli(logits=logits, validate_args=False), event_ndims, validate_args=False)


class GaussianLikelihood(nn.Module):
    """Gaussian with the network's output as mean, for continuous data.

    ``scale=None`` learns one scale per data dimension (shared over data points), parameterised
    as ``softplus(raw) + min_scale``; a float fixes it.
    """

    def __init__(self, event_shape: tuple[int, ...], scale: float | None, min_scale: float):
        super().__init__()
        self.min_scale = min_scale
        self.fixed_scale = scale
        if scale is None:
            # softplus(0.5413) = 1: start at unit scale
            self.raw_scale = nn.Parameter(torch.full(event_shape, 0.5413))

    def forward(self, loc: torch.Tensor, event_ndims: int) -> Distribution:
        if self.fixed_scale is None:
            scale = scale_from_raw(self.raw_scale, self.min_scale).expand_as(loc)
        else:
            scale = torch.full_like(loc, self.fixed_scale)
        return Independent(Normal(loc, scale, validate_args=False), event_ndims, validate_args=False)


def make_likelihood(name: str, event_shape: tuple[int, ...], scale: float | None, min_scale: float) -> nn.Module:
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(event_shape, scale, min_scale)
    raise ValueError(f"unknown likelihood {name!r}")
