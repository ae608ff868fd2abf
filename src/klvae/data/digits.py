"""scikit-learn's 8x8 digits: a small data set that needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source, with_fixed_test

N_TEST = 297  # leaves 1,500 for train and val


def load_digits(data_dir: Path | None = None, download: bool = False) -> RawSplits:
    """The 1,797 digits as (N, 1, 8, 8) float32 in [0, 1] (grey levels 0..16 divided by 16).

    A fixed test split of 297 images (seed 0, independent of the run seed); labels 0..9.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    x = (x.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return with_fixed_test("digits", x, y.astype(np.int64), N_TEST)


SOURCE = Source(
    "digits",
    "scikit-learn's handwritten digits, 1,797 images 1x8x8 with labels (no download needed)",
    load_digits,
    "dynamic",
)
