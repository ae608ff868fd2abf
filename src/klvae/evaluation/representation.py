"""Representations for the disentanglement metrics: a callable from observations (N, ...) to
codes (N, D), the codes it gives for factor combinations of a FactorData (drawn CHUNK_IMAGES at a
time), and the representation of a trained klvae model (its posterior points).

The metrics never look at an image: a representation receives what ``data.images_of`` returns, so
any factor-to-observation map and any encoder will do (the tests use the factors themselves).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from klvae.errors import KlvaeError

Representation = Callable[[np.ndarray], np.ndarray]  # observations (N, ...) -> codes (N, D)
CHUNK_IMAGES = 4096  # observations drawn and encoded at a time (64 MB of 64x64 float32 images)


def encode_in_chunks(representation: Representation, data, factors: np.ndarray) -> np.ndarray:
    """Codes (N, D) float64 of the observations data.images_of(factors) for factors (N, F),
    CHUNK_IMAGES at a time."""
    parts = []
    for start in range(0, len(factors), CHUNK_IMAGES):
        codes = np.asarray(representation(data.images_of(factors[start:start + CHUNK_IMAGES])), np.float64)
        if codes.ndim != 2 or len(codes) != len(factors[start:start + CHUNK_IMAGES]):
            raise KlvaeError(f"representation must return codes of shape (N, D); got {codes.shape}")
        parts.append(codes)
    return np.concatenate(parts)


def sample_codes(representation: Representation, data, n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """n random factor combinations and their codes: (codes (n, D), factors (n, F))."""
    factors = data.sample_factors(n, rng)
    return encode_in_chunks(representation, data, factors), factors


def model_representation(model, batch_size: int = 512) -> Representation:
    """images (N, *event) float32 -> codes (N, D) float64 of a klvae model: its posterior point
    model.family.point(q(z|x)), the mean (the mode direction of a spherical latent, the mode
    angles of a von Mises one). Call it with the model in eval mode."""
    param = next(model.parameters())

    def represent(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
                out.append(model.family.point(model.encode(x.to(param.device, param.dtype))).double().cpu().numpy())
        return np.concatenate(out)

    return represent
