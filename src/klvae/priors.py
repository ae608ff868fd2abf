"""Priors p(z): their registry, and the learned ones: ``nn.Module``s whose ``forward()`` returns
a ``Distribution`` over z in R^D with batch_shape () and event_shape (D,).

* ``MixturePrior``: a learnable mixture of diagonal Gaussians.
* ``VampPrior`` (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), the encoder applied to K
  learnable pseudo-inputs u_k.

Both return ``MixtureSameFamily``, for which torch registers no KL with a Gaussian (or any other)
posterior: ``klvae.kl.kl(q, prior())`` with estimator "auto" uses Monte Carlo and says "mc".
``MixtureSameFamily`` has no ``rsample``; sample the prior with ``sample``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from klvae.registry import Registry

# An entry's builder is (model config, model) -> an nn.Module whose forward() gives p(z), or None for
# the latent family's own prior. Capabilities: ``latents``, the latent families it fits (None: any);
# ``conditional``, whether it can go with --condition label; ``init_from_data``, whether the model
# should call its ``init_from(x)`` with training points before training; ``own``, the family's own prior.
PRIORS = Registry("prior", "--prior")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


class MixturePrior(nn.Module):
    """p(z) = sum_k softmax(logits)_k N(z; means_k, diag(scales_k^2)), z in R^latent_dim.

    Args:
        latent_dim: D.
        components: K, the number of Gaussians (default 10).
        min_scale: floor added to softplus(raw_scale) so that no component collapses to a point
            and log p(z) stays finite (default 1e-3).

    Parameters: ``logits`` (K,) start at 0 (equal weights); ``means`` (K, D) start at N(0, 1)
    draws so the components begin spread out rather than identical (identical components would
    receive identical gradients and never separate); ``raw_scale`` (K, D) starts where the scale
    is exactly 1.
    """

    def __init__(self, latent_dim: int, components: int = 10, min_scale: float = 1e-3):
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.components = _positive_int("components", components)
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be >= 0; got {min_scale!r}")
        self.min_scale = float(min_scale)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        inverse_softplus = math.log(math.expm1(1.0 - self.min_scale)) if self.min_scale < 1 else 0.0
        self.raw_scale = nn.Parameter(torch.full((components, latent_dim), inverse_softplus))

    @property
    def scales(self) -> torch.Tensor:
        """(K, D): softplus(raw_scale) + min_scale."""
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self) -> MixtureSameFamily:
        """MixtureSameFamily(Categorical(logits), Independent(Normal(means, scales), 1)):
        batch_shape (), event_shape (D,)."""
        components = Independent(Normal(self.means, self.scales, validate_args=False), 1, validate_args=False)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), components,
                                 validate_args=False)


class VampPrior(nn.Module):
    """The VampPrior: p(z) = (1/K) sum_k q(z | u_k) over K learnable pseudo-inputs u_k.

    Args:
        latent_dim: D, the event size of the encoder's q(z|x).
        pseudo_inputs: K, the number of pseudo-inputs (kept as ``components``; the property
            ``pseudo_inputs`` gives the tensor u).
        event_shape: the data's event shape; each u_k has this shape.
        encode: x: (K, *event_shape) -> q(z|x) with batch_shape (K,) and event_shape (D,), usually
            the model's ``encode`` (a diagonal Gaussian, but any family with ``log_prob`` works).
            It is held as a plain reference, not a submodule: the encoder's weights belong to
            the model and are not saved twice in the state dict.
        bounded: True (default) for data in [0, 1] (pixel intensities, binarised images): u_k =
            sigmoid(raw) so pseudo-inputs never leave the data range. False for real-valued data
            (e.g. standardised features): u_k = raw, unconstrained.

    The pseudo-inputs start as U(0.05, 0.95) draws (bounded) or N(0, 1) draws (unbounded), or as
    real data points after ``init_from(x)``. Gradients of log p(z) reach both the pseudo-inputs
    and the encoder's parameters.
    """

    def __init__(self, latent_dim: int, pseudo_inputs: int, event_shape: Sequence[int],
                 encode: Callable[[torch.Tensor], Distribution], bounded: bool = True):
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.components = _positive_int("pseudo_inputs", pseudo_inputs)  # K
        self.event_shape = tuple(int(n) for n in event_shape)
        if not callable(encode):
            raise TypeError(f"encode must be a callable x -> q(z|x); got {type(encode).__name__}")
        object.__setattr__(self, "_encode", encode)  # a reference, not a registered submodule
        self.bounded = bool(bounded)
        shape = (pseudo_inputs, *self.event_shape)
        if self.bounded:
            raw = torch.logit(0.05 + 0.9 * torch.rand(shape))
        else:
            raw = torch.randn(shape)
        self.raw_inputs = nn.Parameter(raw)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u: (K, *event_shape), in (0, 1) when bounded."""
        return torch.sigmoid(self.raw_inputs) if self.bounded else self.raw_inputs

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, margin: float = 1e-3) -> "VampPrior":
        """Set the pseudo-inputs to the first K rows of data x: (N >= K, *event_shape).

        When bounded, x is clipped to [margin, 1 - margin] first: sigmoid never reaches 0 or 1, and
        near them its gradient vanishes (at the default margin it is still ~4e-3 of its peak).
        Pass a random subset of the training set (e.g. x[torch.randperm(N)[:K]]). Returns self.
        """
        k = self.components
        if tuple(x.shape[1:]) != self.event_shape or x.shape[0] < k:
            raise ValueError(f"x must have shape (N >= {k}, {', '.join(map(str, self.event_shape))}); "
                             f"got {tuple(x.shape)}")
        u = x[:k].to(self.raw_inputs)
        self.raw_inputs.copy_(torch.logit(u.clamp(margin, 1 - margin)) if self.bounded else u)
        return self

    def forward(self) -> MixtureSameFamily:
        """MixtureSameFamily(uniform Categorical over K, encode(u)): batch_shape (), event_shape (D,)."""
        q = self._encode(self.pseudo_inputs)
        k, d = self.components, self.latent_dim
        if not isinstance(q, Distribution) or tuple(q.batch_shape) != (k,) or tuple(q.event_shape) != (d,):
            got = (f"batch_shape {tuple(q.batch_shape)}, event_shape {tuple(q.event_shape)}"
                   if isinstance(q, Distribution) else type(q).__name__)
            raise ValueError(f"encode(u) must be a distribution with batch_shape ({k},) and "
                             f"event_shape ({d},); got {got}")
        weights = Categorical(logits=torch.zeros(k, dtype=self.raw_inputs.dtype, device=self.raw_inputs.device),
                              validate_args=False)
        return MixtureSameFamily(weights, q, validate_args=False)


PRIORS.register("standard", "the latent family's own prior", lambda config, model: None, own=True)
PRIORS.register("mog", "learned mixture of --prior-components Gaussians (Gaussian latents)",
                lambda config, model: MixturePrior(config.latent_dim, config.prior_components),
                latents=("gaussian",))
PRIORS.register("vamp", "VampPrior with --prior-components learned pseudo-inputs (Gaussian latents)",
                lambda config, model: VampPrior(config.latent_dim, config.prior_components, model.event_shape,
                                                model.encode),
                latents=("gaussian",), conditional=False, init_from_data=True)


def check_prior(prior: str, latent: str) -> None:
    """The prior must be registered and fit the latent family; a one-line KlvaeError naming the fix."""
    from klvae.errors import KlvaeError

    fits = PRIORS[prior].get("latents")
    if fits is not None and latent not in fits:
        allowed = PRIORS.where(lambda e: e.get("latents") is None or latent in e.get("latents"))
        raise KlvaeError(f"prior {prior!r} does not fit latent {latent!r} (it supports: {', '.join(allowed)}); "
                         f"use --prior standard or --latent {fits[0]}")
