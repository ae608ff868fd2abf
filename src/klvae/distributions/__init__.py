"""Latent distributions. Each family is a ``torch.distributions.Distribution`` whose KLs are
registered with ``torch.distributions.kl.register_kl``; the Gaussian is torch's own."""
from klvae.distributions.gaussian import diagonal_normal, scale_from_raw, standard_normal

__all__ = ["diagonal_normal", "scale_from_raw", "standard_normal"]
