"""LFW faces: the 25x25 grey crops of scikit-image's `skimage.data.lfw_subset()`, no download.

That array ships inside the scikit-image wheel (data/lfw_subset.npy): (200, 25, 25) float64
(its docstring says uint8) in [0, 1], 0 and 1 both present. Its first 100 images are faces
randomly chosen from Labeled Faces in the Wild (Huang et al.), its last 100 non-faces cropped
from the backgrounds of the same photographs, all resized to 25x25. The values are not 8-bit
levels k/255 (fewer than a third lie on that grid; most are k/765, grey means of 8-bit colour), so
they are rounded to the nearest k/255 (by at most half a level) for the likelihoods of 8-bit pixels.

Two sources, each with a fixed 10% test split (TEST_SEED) and no labels: ``lfw-faces`` (the
faces) and ``lfw-nonfaces`` (the background crops: out-of-distribution data for the anomaly
scores of a model trained on faces). scikit-image is an optional dependency.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source, split_count, with_fixed_test
from klvae.errors import KlvaeError

N_FACES = 100  # rows 0..99 of lfw_subset are faces, rows 100..199 non-faces
SHAPE = (200, 25, 25)
TEST_FRACTION = 0.1


def lfw_subset(name: str) -> np.ndarray:
    """scikit-image's lfw_subset (200, 25, 25) float64 in [0, 1]; name is the data set asking,
    for the error raised when scikit-image is missing."""
    try:
        from skimage.data import lfw_subset as read
    except ImportError:
        raise KlvaeError(f"{name} needs scikit-image: pip install scikit-image") from None
    x = np.asarray(read())
    if x.shape != SHAPE:
        raise KlvaeError(f"skimage.data.lfw_subset() returned shape {x.shape}, expected {SHAPE}; "
                         "install scikit-image >= 0.22")
    return x


def _load(name: str, rows: slice) -> RawSplits:
    x = (np.rint(lfw_subset(name)[rows, None] * 255) / 255).astype(np.float32)  # (100, 1, 25, 25), k/255
    return with_fixed_test(f"{name} (skimage.data.lfw_subset)", x, None, split_count(len(x), TEST_FRACTION))


def load_faces(data_dir: Path, download: bool = False) -> RawSplits:
    """The 100 faces (data_dir and download unused): train (90, 1, 25, 25) and test (10, 1, 25, 25)
    float32 in [0, 1]; no labels."""
    return _load("lfw-faces", slice(0, N_FACES))


def load_nonfaces(data_dir: Path, download: bool = False) -> RawSplits:
    """The 100 non-faces, split like `load_faces`: train (90, 1, 25, 25), test (10, 1, 25, 25)."""
    return _load("lfw-nonfaces", slice(N_FACES, None))


SOURCE = Source(
    "lfw-faces",
    "LFW faces, 100 grey 1x25x25 face crops from scikit-image's lfw_subset (needs scikit-image)",
    load_faces,
    "none",
)
NONFACES = Source(
    "lfw-nonfaces",
    "LFW non-faces, 100 grey 1x25x25 background crops from scikit-image's lfw_subset, out-of-distribution "
    "data for lfw-faces (needs scikit-image)",
    load_nonfaces,
    "none",
)
