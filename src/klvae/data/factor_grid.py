"""What the disentanglement metrics read of a data set: a :class:`FactorData`, a factor grid that
draws the image of any factor combination on demand, so a metric can fix one factor and vary the
others. The generator's needs no file; the real images of a grid file are read by
:func:`klvae.data.dsprites.file_factor_data`, and :func:`klvae.data.dsprites.factor_data` picks
one by name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klvae.data.dsprites_render import FACTOR_NAMES, FACTOR_SIZES, render, sample_factors


@dataclass(frozen=True)
class FactorData:
    """A factor grid with an image for every combination, drawn on demand: what the
    disentanglement metrics need to fix one factor and vary the others.

    factor_sizes: classes per factor; images_of: factor classes (N, F) int -> images
    (N, 1, 64, 64) float32 in {0, 1}; classes: for a sub-grid of a file, the original dSprites
    class behind each class index of each factor (None where they are the same).
    """

    name: str
    factor_sizes: tuple[int, ...]
    images_of: Callable[[np.ndarray], np.ndarray]
    factor_names: tuple[str, ...] = FACTOR_NAMES
    classes: tuple[np.ndarray, ...] | None = None

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n combinations (n, F) int64, each factor uniform over its classes."""
        return sample_factors(n, rng, self.factor_sizes)


def generated_factor_data() -> FactorData:
    """The generator over the full dSprites grid (3, 6, 40, 32, 32): no file needed."""
    return FactorData("dsprites-generated", FACTOR_SIZES, lambda f: render(f)[:, None].astype(np.float32))
