"""Models: each a small ``nn.Module`` exposing encode / decode / prior as distributions.

``ModelSpec`` here is the VAE's spec (klvae.models.vae) plus the options of the other models; it is
what ``model.json`` stores, and ``build_model`` picks the model by ``spec.model``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from klvae.errors import KlvaeError
from klvae.models.hierarchical import HierarchicalVAE
from klvae.models.vqvae import VQVAE
from klvae.models.vae import VAE
from klvae.models.vae import ModelSpec as VAESpec

MODELS = {
    "vae": "VAE with any --latent family and --prior; beta > 1 gives a beta-VAE",
    "hvae": "hierarchical VAE, top-down inference (Ladder VAE; --residual: NVAE's); layers --latent-dims, bottom to top",
    "vqvae": "VQ-VAE: --codes K codes of dimension --latent-dim at --positions places; --quantizer vq-ema, vq or gumbel",
}

__all__ = ["MODELS", "VAE", "HierarchicalVAE", "VQVAE", "ModelSpec", "build_model"]


@dataclass
class ModelSpec(VAESpec):
    """The architecture of a model: the VAE's fields, then those of hvae and vqvae."""

    latent_dims: list[int] = field(default_factory=list)  # hvae: latent layer sizes, bottom to top
    residual: bool = False  # hvae: q's mean / log-scale as offsets of p(z_l | z_{l+1}) (NVAE)
    kl_balance: bool = False  # hvae: NVAE's KL balancing of the layers while the KL weight is below 1
    codes: int = 512  # vqvae: codebook size K (code dimension: latent_dim)
    positions: int = 16  # vqvae: codes per data point (the encoder outputs positions x latent_dim)
    commitment: float = 0.25  # vqvae: weight of the commitment loss (van den Oord et al.'s beta)
    quantizer: str = "vq-ema"  # vqvae: vq-ema | vq | gumbel (see klvae.models.vqvae)
    temperature: float = 1.0  # vqvae gumbel: the starting temperature, annealed to 0.1 ...
    temperature_steps: int = 10_000  # ... over these training steps, then hard (straight-through) samples

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model == "hvae" and self.latent_dims:
            self.latent_dim = sum(self.latent_dims)  # the size of the concatenated latent (z_1, .., z_L)


BUILDERS = {"vae": VAE, "hvae": HierarchicalVAE, "vqvae": VQVAE}


def build_model(spec: ModelSpec) -> nn.Module:
    """The model a spec describes (``model.json`` holds the spec of a trained run)."""
    if spec.model not in BUILDERS:
        raise KlvaeError(f"model must be one of {', '.join(BUILDERS)}; got {spec.model!r}")
    return BUILDERS[spec.model](spec)
