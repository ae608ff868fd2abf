"""Decoder likelihoods p(x|z): network outputs -> a Distribution over one data point.

Every likelihood declares the data's event dims with ``Independent``, so ``log_prob(x)`` is the
log-density of a whole data point (nats). A likelihood is an entry of ``LIKELIHOODS``
(``klvae.register_likelihood``): its builder is (event_shape, model config) -> an ``nn.Module``
mapping the decoder's output to p(x|z). Capabilities: ``params`` (decoder outputs per data element:
the decoder's output has ``params`` times the data's channels, or its size for flat data; or a
callable (channels, model config) -> the output's channels), ``bound`` (False for a loss that is
not a normalised likelihood: the ELBO then bounds nothing), ``discrete`` (True when log_prob gives
the probabilities of 8-bit values, so bits per dimension are reported),
``data_range`` (the (low, high) the data must lie in, or None) and ``auto`` ("binary" or
"continuous": the data ``--likelihood auto`` picks it for).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from klvae.distributions.gaussian import scale_from_raw
from klvae.errors import KlvaeError
from klvae.registry import Registry

LIKELIHOODS = Registry("likelihood", "--likelihood")


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


LIKELIHOODS.register("bernoulli", "Bernoulli pixels on logits, for binary or binarised data in [0, 1]",
                     lambda event_shape, config: BernoulliLikelihood(), params=1, data_range=(0.0, 1.0),
                     auto="binary", bound=True, discrete=False)
LIKELIHOODS.register("gaussian", "Gaussian with a learned per-element scale (or --decoder-scale), for real data",
                     lambda event_shape, config: GaussianLikelihood(tuple(event_shape), config.decoder_scale,
                                                                    config.min_scale),
                     params=1, data_range=None, auto="continuous", bound=True, discrete=False)


def bound_note(name: str) -> str | None:
    """The sentence evaluation and the report print when the likelihood ``name`` is a loss, not a
    normalised likelihood (capability ``bound`` False); None otherwise."""
    if name not in LIKELIHOODS or LIKELIHOODS[name].get("bound", True):
        return None
    return (f"the reconstruction term is the {name} loss, not a normalised likelihood: the ELBO and the IWAE figures "
            "are the objective's values and bound nothing (not log p(x))")


def make_likelihood(config) -> nn.Module:
    """The likelihood a model config names (``config.likelihood``, already resolved from auto)."""
    return LIKELIHOODS.build(config.likelihood, tuple(config.event_shape), config)


def output_shape(event_shape, likelihood: str, config) -> tuple[int, ...]:
    """The decoder output a likelihood reads for data of ``event_shape``: ``params`` x channels, or
    ``params(channels, config)`` channels where the count is not per channel (a mixture's)."""
    params = LIKELIHOODS[likelihood].get("params", 1)
    channels = params(event_shape[0], config) if callable(params) else params * event_shape[0]
    return (channels, *event_shape[1:])


def resolve_likelihood(requested: str, dataset) -> str:
    """The likelihood for a dataset: ``auto`` picks the entry made for binary or for continuous
    data; a likelihood whose data range the data leave is a KlvaeError naming the fix."""
    if requested == "auto":
        kind = "binary" if dataset.binary else "continuous"
        return next(e.name for e in LIKELIHOODS.entries() if e.get("auto") == kind)
    bounds = LIKELIHOODS[requested].get("data_range")
    if bounds is not None:
        lo, hi = dataset.value_range()
        if lo < bounds[0] or hi > bounds[1]:
            other = next(e.name for e in LIKELIHOODS.entries() if e.get("auto") == "continuous")
            raise KlvaeError(f"likelihood {requested} needs data in [{bounds[0]:g}, {bounds[1]:g}]; {dataset.name} "
                             f"spans [{lo:g}, {hi:g}]; use --likelihood {other}")
    return requested


from klvae.likelihoods import logistic, perceptual  # noqa: E402,F401  (each file registers its entries)
