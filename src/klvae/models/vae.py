"""The Gaussian VAE: encoder x -> q(z|x), prior p(z), decoder z -> p(x|z), all distributions."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.distributions import Distribution

from klvae.errors import KlvaeError
from klvae.distributions.gaussian import diagonal_normal, scale_from_raw, standard_normal
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
    model: str = "vae"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class VAE(nn.Module):
    """x: (N, *event_shape) -> q(z|x) over z: (N, D); z: (*S, D) -> p(x|z) with batch (*S)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.event_shape = tuple(spec.event_shape)
        self.latent_dim = spec.latent_dim
        self.encoder = make_encoder(spec.net, self.event_shape, spec.hidden, 2 * spec.latent_dim, spec.activation)
        self.decoder = make_decoder(spec.net, self.event_shape, spec.hidden, spec.latent_dim, spec.activation)
        self.likelihood = make_likelihood(spec.likelihood, self.event_shape, spec.decoder_scale, spec.min_scale)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x): a diagonal Gaussian, batch_shape (N,), event_shape (D,)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise KlvaeError(f"x must have shape (N, {', '.join(map(str, self.event_shape))}); got {tuple(x.shape)}; reshape the data to the shape the model was trained on")
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        return diagonal_normal(loc, scale_from_raw(raw_scale, self.spec.min_scale))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z: (*S, D): batch_shape (*S), event_shape = the data's."""
        if z.shape[-1] != self.latent_dim:
            raise KlvaeError(f"z must have shape (..., {self.latent_dim}); got {tuple(z.shape)}")
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        return self.likelihood(out.view(*lead, *self.event_shape), len(self.event_shape))

    def prior(self) -> Distribution:
        """p(z) = N(0, I_D)."""
        return standard_normal(self.latent_dim, next(self.parameters()))
