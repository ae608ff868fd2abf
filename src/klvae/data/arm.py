"""Procedural directional data: a pendulum (one joint) or a two-link planar arm rendered to
28x28 images from joint angles, which are kept as ground truth (labels of shape (N, links)).

The drawing is seen through a camera blur (a Gaussian point-spread function of BLUR pixels). Without
it a thin link at two angles more than ~10 degrees apart shares no pixels, every image is equally far
from every other, and the images carry no trace of the circle they come from (the principal
components' spectrum is flat); with it, nearby angles give overlapping images, as they do in a real
camera. A latent on the circle or the sphere should recover these angles; see
:func:`klvae.evaluation.directional.circular_correlation`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from klvae.data.splits import RawSplits, Source, with_fixed_test

SIZE = 28
N_IMAGES, N_TEST = 12_000, 2_000
THICKNESS = 1.1  # half-width of a link in pixels
BLUR = 2.0  # standard deviation of the camera's point-spread function in pixels
SEED = 1234  # the images are the same on every machine


def render(angles: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Images (N, 1, size, size) in [0, 1] of a chain of links from the centre; angles (N, L) in
    radians, each relative to the previous link (the first to the downward vertical). Links have
    equal length summing to 0.42 of the image side; edges are anti-aliased, then blurred by the
    camera (BLUR) and scaled so that each image's brightest pixel is 1."""
    n, links = angles.shape
    length = 0.42 * size / links
    centre = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (P, 2)
    start = np.full((n, 2), centre, dtype=np.float32)
    heading = np.zeros(n, dtype=np.float32)
    ink = np.zeros((n, pixels.shape[0]), dtype=np.float32)
    for k in range(links):
        heading = heading + angles[:, k]
        end = start + length * np.stack([np.sin(heading), np.cos(heading)], axis=1)
        ink = np.maximum(ink, _segment_ink(pixels, start, end))
        start = end
    seen = gaussian_filter(ink.reshape(n, 1, size, size), (0, 0, BLUR, BLUR), mode="constant")
    return seen / seen.max(axis=(1, 2, 3), keepdims=True)


def _segment_ink(pixels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of a thick segment a -> b at every pixel: (N, P)."""
    ab = b - a  # (N, 2)
    ap = pixels[None, :, :] - a[:, None, :]  # (N, P, 2)
    t = np.clip((ap * ab[:, None, :]).sum(-1) / (ab * ab).sum(-1, keepdims=True), 0, 1)
    dist = np.linalg.norm(ap - t[..., None] * ab[:, None, :], axis=-1)
    return np.clip(THICKNESS + 0.5 - dist, 0, 1)


def make_arm(links: int):
    def load(data_dir: Path | None = None, download: bool = False) -> RawSplits:
        rng = np.random.default_rng(SEED + links)
        angles = rng.uniform(-np.pi, np.pi, size=(N_IMAGES, links)).astype(np.float32)
        return with_fixed_test("pendulum" if links == 1 else "arm", render(angles), angles, N_TEST)

    return load


PENDULUM = Source(
    "pendulum",
    "a pendulum rendered at 12,000 uniform angles, 1x28x28, angle kept as ground truth (generated)",
    make_arm(1),
    "dynamic",
)
ARM = Source(
    "arm",
    "a two-link planar arm at 12,000 uniform joint-angle pairs, 1x28x28, angles kept (generated)",
    make_arm(2),
    "dynamic",
)
