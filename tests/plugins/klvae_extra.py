"""A second klvae plugin, outside the package: a model with an option of its own (a VAE whose
encoder sees its input through dropout) and a sampler (one full-covariance Gaussian fitted to the
training set's posterior means)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.distributions import MultivariateNormal

import klvae
from klvae.models import VAE, VAEConfig


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


def fit_gaussian(model, x, labels, components, seed):
    with torch.no_grad():
        z = model.family.point(model.encode(x)).double()
    cov = torch.cov(z.T) + 1e-6 * torch.eye(z.shape[1], dtype=z.dtype)
    return MultivariateNormal(z.mean(0).float(), covariance_matrix=cov.float())


klvae.register_model("vae-dropout", "a VAE whose encoder sees its input through dropout (a plugin)", DropoutVAE,
                     DropoutVAEConfig, objectives=("elbo", "iwae"))
klvae.register_sampler("gaussian-fit", "one full-covariance Gaussian fitted to the posterior means (a plugin)",
                       fit_gaussian)
