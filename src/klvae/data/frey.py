"""Frey Face: 1,965 grey 28x20 frames of one face (Kingma & Welling's second data set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source, split_count, with_fixed_test
from klvae.errors import KlvaeError

FOLDER = "frey-face"
NPZ = "frey_face.npz"
TEST_FRACTION = 0.1


def read_frey(path: Path) -> np.ndarray:
    """The `images` array (N, 28, 20) uint8 of a frey_face.npz."""
    with np.load(path) as d:
        if "images" not in d.files:
            raise KlvaeError(
                f"{path} has no array 'images' (found {', '.join(d.files) or 'none'}); "
                "it needs images of shape (N, 28, 20)"
            )
        x = d["images"]
    if x.ndim != 3 or x.shape[1:] != (28, 20):
        raise KlvaeError(f"{path} holds images of shape {x.shape}; expected (N, 28, 20)")
    return x


def load_frey(data_dir: Path, download: bool = False) -> RawSplits:
    """Frey Face from data_dir/frey-face/frey_face.npz: (N, 1, 28, 20) float32 in [0, 1].

    A fixed 10% test split (seed 0, independent of the run seed); no labels.
    """
    path = data_dir / FOLDER / NPZ
    if not path.is_file():
        raise KlvaeError(
            f"frey-face file not found: {path}; put {NPZ} (array 'images', (1965, 28, 20) "
            "uint8) there, or set KLVAE_DATA or --data-dir (this data set has no --download)"
        )
    x = read_frey(path)[:, None].astype(np.float32) / 255.0
    return with_fixed_test(str(path), x, None, split_count(len(x), TEST_FRACTION))


SOURCE = Source(
    "frey-face",
    "Frey Face, 1,965 grey frames of one face, 1x28x20 (Gaussian likelihood by default)",
    load_frey,
    "none",
)
