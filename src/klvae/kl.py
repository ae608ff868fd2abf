"""One entry point for KL(q || p): analytic through torch's KL registry, else Monte Carlo."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from klvae.errors import KlvaeError

ESTIMATORS = ("auto", "analytic", "mc")


class KL(NamedTuple):
    """A KL value of shape ``batch_shape`` (nats) and the way it was computed."""

    value: torch.Tensor
    method: str  # "analytic" or "mc"
    per_dim: torch.Tensor | None  # (*batch_shape, D) when the KL factorises over latent dims


def is_registered(q: Distribution, p: Distribution) -> bool:
    """True when torch's registry holds a closed form for KL(type(q) || type(p))."""
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def kl(q: Distribution, p: Distribution, estimator: str = "auto", samples: int = 1) -> KL:
    """KL(q || p) per batch element, unreduced.

    estimator: "analytic" (registry, error if none), "mc" (mean of log q(z) - log p(z) over
    ``samples`` reparameterised draws z ~ q; unbiased, differentiable), or "auto" (analytic when
    registered, else MC). ``per_dim`` is filled for factorised Gaussian-like pairs (analytic only).
    """
    if estimator not in ESTIMATORS:
        raise KlvaeError(f"kl estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    if estimator != "mc":
        try:
            per_dim = kl_per_dim(q, p)
            value = per_dim.sum(-1) if per_dim is not None else kl_divergence(q, p)
            return KL(value, "analytic", per_dim)
        except NotImplementedError:
            if estimator == "analytic":
                raise KlvaeError(
                    f"no analytic KL is registered for {type(q).__name__} || {type(p).__name__}; "
                    "use kl_estimator 'mc' or 'auto'"
                ) from None
    return KL(mc_kl(q, p, samples), "mc", None)


def mc_kl(q: Distribution, p: Distribution, samples: int = 1) -> torch.Tensor:
    """Monte Carlo KL: mean over ``samples`` draws z ~ q of log q(z) - log p(z); shape batch_shape."""
    if samples < 1:
        raise KlvaeError(f"kl samples must be a positive integer; got {samples}")
    z = q.rsample((samples,)) if q.has_rsample else q.sample((samples,))
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def kl_per_dim(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL of each latent dimension, (*batch_shape, D), for two ``Independent`` over one axis whose
    base KL is registered; None when the pair does not factorise that way."""
    if (
        isinstance(q, Independent)
        and isinstance(p, Independent)
        and q.reinterpreted_batch_ndims == 1
        and p.reinterpreted_batch_ndims == 1
    ):
        try:
            return kl_divergence(q.base_dist, p.base_dist)
        except NotImplementedError:
            return None
    return None
