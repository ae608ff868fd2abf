"""A second klvae plugin, outside the package: a model with an option of its own (a VAE whose
encoder sees its input through dropout) and a sampler (one full-covariance Gaussian fitted to the
training set's posterior means)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.distributions import MultivariateNormal

import klvae
from klvae.models import VAE, VAEConfig
from klvae.samplers import CodeDensity


@dataclass
class DropoutVAEConfig(VAEConfig):
    name: str = field(default="vae-dropout", metadata={"help": "the model", "internal": True})
    input_dropout: float = field(default=0.1, metadata={"help": "share of input elements dropped in training"})

    def validate(self) -> None:
        if not 0 <= self.input_dropout < 1:
            raise klvae.KlvaeError(f"input_dropout must be in [0, 1); got {self.input_dropout}")
        super().validate()


class DropoutVAE(VAE):
    def __init__(self, config: DropoutVAEConfig, **parts):
        super().__init__(config, **parts)
        self.dropout = torch.nn.Dropout(config.input_dropout)

    def encoder_output(self, x, condition=None):
        return super().encoder_output(self.dropout(x), condition)


class GaussianFit(CodeDensity):
    """One full-covariance Gaussian over the standardised codes."""

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.register_buffer("scale_tril", torch.eye(dim))

    def _fit(self, u):
        cov = torch.cov(u.T.double()) + 1e-6 * torch.eye(u.shape[1], dtype=torch.float64)
        self.scale_tril.copy_(torch.linalg.cholesky(cov))

    def _gaussian(self):
        return MultivariateNormal(torch.zeros(self.dim), scale_tril=self.scale_tril)

    def _log_prob(self, u):
        return self._gaussian().log_prob(u)

    def _sample(self, n):
        return self._gaussian().sample((n,))


klvae.register_model("vae-dropout", "a VAE whose encoder sees its input through dropout (a plugin)", DropoutVAE,
                     DropoutVAEConfig, objectives=("elbo", "iwae"))
klvae.register_sampler("gaussian-fit", "one full-covariance Gaussian fitted to the codes (a plugin)", GaussianFit)
