"""Models: each a small ``nn.Module`` exposing encode / decode / prior as distributions."""
from klvae.models.vae import VAE, ModelSpec

MODELS = {"vae": "VAE with any --latent family and --prior; beta > 1 gives a beta-VAE"}

__all__ = ["MODELS", "VAE", "ModelSpec", "build_model"]


def build_model(spec: ModelSpec) -> VAE:
    """The model a spec describes (``model.json`` holds the spec of a trained run)."""
    return VAE(spec)
