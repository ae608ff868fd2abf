"""klvae: variational autoencoders with the KL divergence as a first-class citizen."""
from klvae.api import evaluate, fit, load
from klvae.config import TrainConfig
from klvae.errors import KlvaeError
from klvae.kl import kl
from klvae.latents import LatentFamily
from klvae.models import VAE, VAEConfig
from klvae.plugins import (
    load_plugins, register_dataset, register_latent, register_likelihood, register_model, register_net,
    register_objective, register_prior, register_sampler, register_schedule,
)

__all__ = [
    "KlvaeError", "LatentFamily", "TrainConfig", "VAE", "VAEConfig", "evaluate", "fit", "kl", "load", "load_plugins",
    "register_dataset", "register_latent", "register_likelihood", "register_model", "register_net",
    "register_objective", "register_prior", "register_sampler", "register_schedule",
]
__version__ = "0.1.0"
