"""The VAE: encoder x -> q(z|x), prior p(z), decoder z -> p(x|z), all distributions.

The latent family (Gaussian, vMF, Power Spherical, von Mises, spike-and-slab), the prior
(the family's standard one, a learned mixture of Gaussians, or a VampPrior) and the decoder
(factorised, or autoregressive over image rows) are options of the spec; nothing else in the
library depends on which they are.
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

    def __post_init__(self) -> None:
        check_decoder(self.decoder, self.likelihood, self.event_shape)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class VAE(nn.Module):
    """x: (N, *event_shape) -> q(z|x) with batch (N,); z: (*S, D) -> p(x|z) with batch (*S)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        check_combination(spec.latent, spec.prior)
        check_decoder(spec.decoder, spec.likelihood, spec.event_shape)
        self.spec = spec
        self.autoregressive = spec.decoder == "autoregressive"
        self.event_shape = tuple(spec.event_shape)
        self.latent_dim = spec.latent_dim
        self.family = make_latent(spec.latent, spec.latent_dim, spec.min_scale, spec.sparsity)
        self.encoder = make_encoder(spec.net, self.event_shape, spec.hidden, self.family.params, spec.activation)
        self.decoder = make_decoder(spec.net, self.event_shape, spec.hidden, self.family.decoder_dim, spec.activation,
                                    spec.decoder)
        # the autoregressive decoder is its own likelihood (it returns the distribution)
        self.likelihood = None if self.autoregressive else make_likelihood(
            spec.likelihood, self.event_shape, spec.decoder_scale, spec.min_scale)
        self.learned_prior = self._learned_prior(spec)

    def _learned_prior(self, spec: ModelSpec) -> nn.Module | None:
        if spec.prior == "standard":
            return None
        from klvae.priors import MixturePrior, VampPrior

        if spec.prior == "mog":
            return MixturePrior(spec.latent_dim, spec.prior_components)
        return VampPrior(spec.latent_dim, spec.prior_components, self.event_shape, self.encode)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch_shape (N,), event_shape (D,)."""
        return self.family.posterior(self.encoder_output(x))

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's raw output, (N, family.params), from which ``family.posterior`` builds
        q(z|x) (DReG rebuilds q from it detached)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise KlvaeError(
                f"x must have shape (N, {', '.join(map(str, self.event_shape))}); got {tuple(x.shape)}; "
                "reshape the data to the shape the model was trained on"
            )
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z: (*S, D): batch_shape (*S), event_shape = the data's."""
        if z.shape[-1] != self.latent_dim:
            raise KlvaeError(f"z must have shape (..., {self.latent_dim}); got {tuple(z.shape)}")
        lead = z.shape[:-1]
        h = self.family.decoder_input(z.reshape(-1, self.latent_dim))
        if self.autoregressive:
            return self.decoder(h.view(*lead, -1))
        out = self.decoder(h)
        return self.likelihood(out.view(*lead, *self.event_shape), len(self.event_shape))

    def prior(self) -> Distribution:
        """p(z): the family's standard prior, or the learned one."""
        if self.learned_prior is not None:
            return self.learned_prior()
        return self.family.prior(next(self.parameters()))
