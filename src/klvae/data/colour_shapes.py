"""Colour shapes: generated 32x32 RGB images of one square, disc or triangle, no file needed.

Images (N, 3, 32, 32) float32 of 8-bit values k/255, each drawn from 12 generative factors, the
columns of a factor row (FACTOR_NAMES), in pixels or in [0, 1] colour units, independent but for
the foreground's distance from the background:

- ``shape``: 0 square, 1 disc, 2 triangle (SHAPES), uniform; the class label;
- ``fg_r, fg_g, fg_b``: the shape's colour, 8-bit values k/255, uniform over the RGB cube among
  the colours at Euclidean distance >= MIN_CONTRAST from the background;
- ``bg_r, bg_g, bg_b``: the background colour, 8-bit values k/255, uniform;
- ``size``: s, the half-width of the shape's bounding box, uniform in SIZE_RANGE px: a square of
  side 2s (area 4 s^2), a disc of radius s (area pi s^2), an upright isosceles triangle with its
  apex at the top centre of the box and its base the box's bottom edge (area 2 s^2);
- ``x, y``: the box's centre in px from the image's top-left corner (pixel i spans [i, i + 1)),
  uniform among the positions that keep the box at least MARGIN px inside the image;
- ``shade, shade_angle``: a soft linear light across the whole image, zero at the shape's
  centre: at pixel centre p, lift = shade * <(cos a, sin a), p - (x, y)> / 32, and a colour v
  becomes v + lift (1 - v) where lift > 0 (towards white), v (1 + lift) where lift < 0 (towards
  black); shade uniform in [0, MAX_SHADE], shade_angle a uniform in [0, 2 pi).

Edges are anti-aliased: a pixel's coverage is the fraction of its SUPERSAMPLE x SUPERSAMPLE
sub-pixel centres inside the shape, its colour coverage * fg + (1 - coverage) * bg before the
light; the result is quantised to 8-bit values, round(255 v) / 255. The split is fixed: N_TRAIN
(20,000) training and N_TEST (2,000) test images, each from its own seeded generator, the same on
every call; labels (N,) int64 are the shape, `load_factors` gives every factor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source
from klvae.errors import KlvaeError

SIZE = 32
SHAPES = ("square", "disc", "triangle")
FACTOR_NAMES = ("shape", "fg_r", "fg_g", "fg_b", "bg_r", "bg_g", "bg_b", "x", "y", "size", "shade",
                "shade_angle")
N_TRAIN, N_TEST = 20_000, 2_000
SEED = 4321  # the factors of the train (stream 0) and test (stream 1) images
SIZE_RANGE = (4.0, 10.0)  # px, the bounding box's half-width: boxes of 8 to 20 px in a 32 px image
MARGIN = 1.0  # px between the box and the image border
MIN_CONTRAST = 0.4  # RGB distance between shape and background, so every shape stays visible
MAX_SHADE = 0.35  # the light's strength: |lift| < 0.35 * sqrt(2) < 0.5, a soft gradient
SUPERSAMPLE = 4
CANDIDATES = 16  # foreground draws per image to meet MIN_CONTRAST (all fail with p < 1e-9)
BATCH = 1024  # images rendered at a time: (BATCH, 128, 32) int16 sub-pixel counts, 8 MB


def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """n factor rows (n, 12) float32, columns FACTOR_NAMES, drawn as the module docstring says."""
    shape = rng.integers(0, len(SHAPES), n)
    bg = rng.integers(0, 256, (n, 3)) / 255.0
    fg = _contrasting(bg, rng.integers(0, 256, (n, CANDIDATES, 3)) / 255.0)
    size = rng.uniform(*SIZE_RANGE, n)
    low, span = size + MARGIN, SIZE - 2 * (size + MARGIN)
    xy = low[:, None] + span[:, None] * rng.uniform(0, 1, (n, 2))
    shade = rng.uniform(0, MAX_SHADE, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([shape, fg, bg, xy, size, shade, angle]).astype(np.float32)


def _contrasting(bg: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The first of candidates (n, K, 3) at distance >= MIN_CONTRAST from bg (n, 3), else the farthest."""
    dist = np.linalg.norm(candidates - bg[:, None], axis=2)  # (n, K)
    ok = dist >= MIN_CONTRAST
    pick = np.where(ok.any(1), ok.argmax(1), dist.argmax(1))
    return candidates[np.arange(len(bg)), pick]


def render(factors: np.ndarray) -> np.ndarray:
    """Images (N, 3, 32, 32) float32 of 8-bit values k/255 for factor rows (N, 12) (FACTOR_NAMES)."""
    f = np.asarray(factors, np.float32)
    if f.ndim != 2 or f.shape[1] != len(FACTOR_NAMES) or not np.isin(f[:, 0], np.arange(len(SHAPES))).all():
        raise KlvaeError(f"factors must have shape (N, {len(FACTOR_NAMES)}) with shape classes 0..{len(SHAPES) - 1} "
                         f"in column 0 (columns {', '.join(FACTOR_NAMES)}); got shape {f.shape}")
    out = np.empty((len(f), 3, SIZE, SIZE), np.float32)
    for start in range(0, len(f), BATCH):
        out[start:start + BATCH] = _render_batch(f[start:start + BATCH])
    return out


def _render_batch(f: np.ndarray) -> np.ndarray:
    cover = coverage(f)[:, None]  # (n, 1, 32, 32)
    fg, bg = f[:, 1:4, None, None], f[:, 4:7, None, None]  # (n, 3, 1, 1)
    lift = _lift(f)[:, None]  # (n, 1, 32, 32)
    up, down = np.maximum(lift, 0), np.minimum(lift, 0)
    # v + up (1 - v) + down v = v (1 - up + down) + up, in 8-bit units, in place on (n, 3, 32, 32)
    img = cover * (fg - bg)
    img += bg
    img *= 255 * (1 - up + down)
    img += 255 * up
    np.rint(img, out=img)
    img /= np.float32(255)
    return img


def _lift(f: np.ndarray) -> np.ndarray:
    """The light's lift (n, 32, 32) at each pixel centre."""
    centre = np.arange(SIZE, dtype=np.float32) + 0.5
    cos, sin = np.cos(f[:, 11])[:, None, None], np.sin(f[:, 11])[:, None, None]
    dx = centre[None, None, :] - f[:, 7, None, None]
    dy = centre[None, :, None] - f[:, 8, None, None]
    return f[:, 10, None, None] * (cos * dx + sin * dy) / SIZE


def coverage(factors: np.ndarray) -> np.ndarray:
    """The fraction (N, 32, 32) float32 of each pixel's sub-pixel centres inside the shape.

    Row by row of sub-pixels: the shape meets a sub-pixel row in one interval [x - h, x + h]
    (half_width), so a pixel's count on that row is how many of its sub-pixel columns the interval
    holds, computed from the interval's first and last sub-pixel column without a 2-D mask.
    """
    f = np.asarray(factors, np.float64)  # float64 on the (n, 128) rows: edges decided as exactly as they can be
    sub = (np.arange(SIZE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # (128,) px
    h = half_width(f[:, 0].astype(np.int64)[:, None], sub[None, :] - f[:, 8, None], f[:, 9, None])  # (n, 128)
    v = SUPERSAMPLE * f[:, 7, None] - 0.5  # sub-pixel column k is inside when |k - v| <= 4 h
    first = np.ceil(v - SUPERSAMPLE * h).astype(np.int16)
    stop = np.where(h >= 0, np.floor(v + SUPERSAMPLE * h) + 1, first).astype(np.int16)  # one past the last
    start = SUPERSAMPLE * np.arange(SIZE, dtype=np.int16)  # (32,) each pixel's first sub-pixel column
    counts = _clip(stop[:, :, None] - start) - _clip(first[:, :, None] - start)  # (n, 128, 32)
    rows = counts.reshape(len(f), SIZE, SUPERSAMPLE, SIZE).sum(2, dtype=np.int16)
    return rows.astype(np.float32) / SUPERSAMPLE**2


def _clip(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, SUPERSAMPLE, out=a)


def half_width(shape: np.ndarray, dy: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Half the width (px) of each shape's cut at height dy (px below its centre; any broadcastable
    shapes), -1 where the cut misses it: square |dy| <= s; disc of radius s; triangle with its apex
    s above the centre and its base s below."""
    h = np.select([shape == 0, shape == 1], [s + 0 * dy, np.sqrt(np.maximum(s**2 - dy**2, 0))], (dy + s) / 2)
    return np.where(np.abs(dy) <= s, h, -1)


def load_factors() -> tuple[np.ndarray, np.ndarray]:
    """The factor rows (N, 12) float32 of the train and test images `load_colour_shapes` returns."""
    return (sample_factors(N_TRAIN, np.random.default_rng((SEED, 0))),
            sample_factors(N_TEST, np.random.default_rng((SEED, 1))))


def load_colour_shapes(data_dir: Path, download: bool = False) -> RawSplits:
    """Colour shapes, generated (data_dir and download unused): train (20000, 3, 32, 32) and test
    (2000, 3, 32, 32) float32 of values k/255; labels (N,) int64, the shape (0 square, 1 disc,
    2 triangle)."""
    train, test = load_factors()
    return RawSplits("colour-shapes (generated)", render(train), render(test),
                     train[:, 0].astype(np.int64), test[:, 0].astype(np.int64))


SOURCE = Source(
    "colour-shapes",
    "Colour shapes, 22,000 generated 3x32x32 RGB squares, discs and triangles on coloured, lit backgrounds "
    "(labels: shape)",
    load_colour_shapes,
    "none",
)
