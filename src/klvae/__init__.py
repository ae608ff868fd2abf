"""klvae: variational autoencoders with the KL divergence as a first-class citizen."""
from klvae.api import evaluate, fit, load
from klvae.config import TrainConfig
from klvae.errors import KlvaeError
from klvae.kl import kl

__all__ = ["KlvaeError", "TrainConfig", "evaluate", "fit", "kl", "load"]
__version__ = "0.1.0"
