"""The VAE: encoder x -> q(z|x), prior p(z), decoder z -> p(x|z), all distributions.

The latent family (Gaussian, vMF, Power Spherical, von Mises, spike-and-slab), the prior
(the family's standard one, a learned mixture of Gaussians, or a VampPrior) and the decoder
(factorised, or autoregressive over image rows) are options of the spec; nothing else in the
library depends on which they are.

With ``condition="label"`` the same model is a conditional VAE (klvae.models.conditional):
``encode``, ``decode`` and ``prior`` take the class labels as ``condition`` and give q(z|x, y),
p(x|z, y) and p(z|y).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.distributions import Distribution

from klvae.autoregressive import check_decoder
from klvae.errors import KlvaeError
from klvae.latents import check_combination, make_latent
from klvae.likelihoods import make_likelihood
from klvae.models.conditional import ClassGaussianPrior, ConditionalEncoder, check_condition, join, one_hot
from klvae.nets import make_decoder, make_encoder


@dataclass
class ModelSpec:
    """The architecture of a model: what ``model.json`` stores next to the weights."""

    event_shape: list[int]
    latent_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    net: str = "mlp"  # "mlp" | "conv" (already resolved)
    activation: str = "relu"
    likelihood: str = "bernoulli"  # "bernoulli" | "gaussian" (already resolved)
    decoder_scale: float | None = None
    min_scale: float = 1e-4
    latent: str = "gaussian"
    prior: str = "standard"
    prior_components: int = 10  # mixture components (mog) or pseudo-inputs (vamp)
    sparsity: float = 0.5  # spike-and-slab prior: probability that a dimension is on
    model: str = "vae"
    decoder: str = "factorised"  # "factorised" | "autoregressive" (a row GRU, Bernoulli images only)
    condition: str = "none"  # "none" | "label" (a conditional VAE on the one-hot class label)
    num_classes: int = 0  # C, the number of classes of the condition (labels 0..C-1); 0 without one
    conditional_prior: bool = False  # condition "label": a learned Gaussian p(z|y) per class, else the standard p(z)

    def __post_init__(self) -> None:
        check_decoder(self.decoder, self.likelihood, self.event_shape)
        check_condition(self.condition, self.conditional_prior, self.latent, self.prior, self.num_classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class VAE(nn.Module):
    """x: (N, *event_shape) -> q(z|x) with batch (N,); z: (*S, D) -> p(x|z) with batch (*S).

    A conditional model (``spec.condition == "label"``) needs ``condition``, the class labels (N,)
    (or class probabilities (N, C)), in ``encode``, ``decode`` and ``prior``; for ``decode`` the
    labels' batch is a suffix of z's (*S), e.g. (N,) for z: (K, N, D)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        check_combination(spec.latent, spec.prior)
        check_decoder(spec.decoder, spec.likelihood, spec.event_shape)
        self.spec = spec
        self.autoregressive = spec.decoder == "autoregressive"
        self.event_shape = tuple(spec.event_shape)
        self.latent_dim = spec.latent_dim
        self.num_classes = spec.num_classes if spec.condition != "none" else 0
        self.family = make_latent(spec.latent, spec.latent_dim, spec.min_scale, spec.sparsity)
        if self.num_classes:
            self.encoder = ConditionalEncoder(spec.net, self.event_shape, spec.hidden, self.family.params,
                                              spec.activation, self.num_classes)
        else:
            self.encoder = make_encoder(spec.net, self.event_shape, spec.hidden, self.family.params, spec.activation)
        self.decoder = make_decoder(spec.net, self.event_shape, spec.hidden, self.family.decoder_dim + self.num_classes,
                                    spec.activation, spec.decoder)
        # the autoregressive decoder is its own likelihood (it returns the distribution)
        self.likelihood = None if self.autoregressive else make_likelihood(
            spec.likelihood, self.event_shape, spec.decoder_scale, spec.min_scale)
        self.learned_prior = self._learned_prior(spec)

    def _learned_prior(self, spec: ModelSpec) -> nn.Module | None:
        if spec.conditional_prior:
            return ClassGaussianPrior(self.num_classes, spec.latent_dim)
        if spec.prior == "standard":
            return None
        from klvae.priors import MixturePrior, VampPrior

        if spec.prior == "mog":
            return MixturePrior(spec.latent_dim, spec.prior_components)
        return VampPrior(spec.latent_dim, spec.prior_components, self.event_shape, self.encode)

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> Distribution:
        """q(z|x) (or q(z|x, y)): batch_shape (N,), event_shape (D,)."""
        return self.family.posterior(self.encoder_output(x, condition))

    def encoder_output(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's raw output, (N, family.params), from which ``family.posterior`` builds
        q(z|x) (DReG rebuilds q from it detached)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise KlvaeError(
                f"x must have shape (N, {', '.join(map(str, self.event_shape))}); got {tuple(x.shape)}; "
                "reshape the data to the shape the model was trained on"
            )
        y = self._one_hot(condition, x)
        if y is None:
            return self.encoder(x)
        if y.shape[:-1] != x.shape[:1]:
            raise KlvaeError(f"condition must hold one label per data point, ({len(x)},); got {tuple(y.shape[:-1])}")
        return self.encoder(x, y)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> Distribution:
        """p(x|z) (or p(x|z, y)) for z: (*S, D): batch_shape (*S), event_shape = the data's."""
        if z.shape[-1] != self.latent_dim:
            raise KlvaeError(f"z must have shape (..., {self.latent_dim}); got {tuple(z.shape)}")
        lead = z.shape[:-1]
        h = self.family.decoder_input(z.reshape(-1, self.latent_dim))
        y = self._one_hot(condition, z)
        if y is not None:  # the one-hot of each z's data point, (*S, C), joined to the decoder input
            h = join(h.view(*lead, -1), y).reshape(-1, h.shape[-1] + self.num_classes)
        if self.autoregressive:
            return self.decoder(h.view(*lead, -1))
        out = self.decoder(h)
        return self.likelihood(out.view(*lead, *self.event_shape), len(self.event_shape))

    def prior(self, condition: torch.Tensor | None = None) -> Distribution:
        """p(z): the family's standard prior, or the learned one; p(z|y) with batch_shape (N,) for
        labels (N,) when the model has a conditional prior (the standard p(z) ignores y)."""
        if condition is not None or self.spec.conditional_prior:
            y = self._one_hot(condition, next(self.parameters()))
            if self.spec.conditional_prior:
                return self.learned_prior(y)
        if self.learned_prior is not None:
            return self.learned_prior()
        return self.family.prior(next(self.parameters()))

    def _one_hot(self, condition: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """The condition as one-hot (N, C) on ``like``'s device and dtype; None for a model
        without one. A missing or unexpected condition is a KlvaeError naming the fix."""
        if not self.num_classes:
            if condition is not None:
                raise KlvaeError("this model was trained without a condition; drop the class labels (condition=None)")
            return None
        if condition is None:
            raise KlvaeError(f"this model is conditioned on class labels (0..{self.num_classes - 1}); pass them "
                             "as condition=labels (N,)")
        return one_hot(condition.to(like.device), self.num_classes, like.dtype)
