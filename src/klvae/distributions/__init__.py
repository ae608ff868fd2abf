"""Latent distributions. Each family is a ``torch.distributions.Distribution`` whose KLs are
registered with ``torch.distributions.kl.register_kl`` (importing this package registers them);
the Gaussian is torch's own."""
from klvae.distributions.gaussian import StandardNormal, diagonal_normal, scale_from_raw, standard_normal
from klvae.distributions.power_spherical import PowerSpherical
from klvae.distributions.spike_and_slab import SpikeAndSlab, switched_off_fraction
from klvae.distributions.uniform import CircularUniform, HypersphericalUniform, log_sphere_area
from klvae.distributions.von_mises import VonMises
from klvae.distributions.von_mises_fisher import VonMisesFisher

__all__ = [
    "CircularUniform", "HypersphericalUniform", "PowerSpherical", "SpikeAndSlab", "StandardNormal", "VonMises",
    "VonMisesFisher",
    "diagonal_normal", "log_sphere_area", "scale_from_raw", "standard_normal", "switched_off_fraction",
]
