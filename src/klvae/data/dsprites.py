"""dSprites (Matthey et al. 2017): 64x64 binary sprites over five ground-truth factors, real and
generated, with the factors kept as labels (N, 5) int64 of class indices: shape, scale,
orientation, posX, posY (the official file's columns less the constant colour).

Two registered sources of 20,000 images each (a 64x64 float32 image takes 16 KB in a Dataset, so
20,000 take 330 MB; the full 737,280 would take 12 GB), with a fixed 10% test split:

- ``dsprites``: real images drawn uniformly from the full set: a fixed random sample (seed SEED)
  of the official file ``dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` when it is in
  the data folder, otherwise the shared subset ``dsprites/dsprites_random20k.npz`` (itself a
  uniform sample of that file);
- ``dsprites-generated``: images drawn by :func:`render` at 20,000 random factor combinations
  (seed SEED), needing no file.

The factorial grid subset ``dsprites/dsprites_grid.npz`` (46,080 images) is no training source
(755 MB as float32): with the generator and the official file it serves the disentanglement
metrics as a :class:`FactorData` that draws the image of any factor combination, see
:func:`factor_data`.

The generator turns each pixel on when its centre lies inside the sprite (no anti-aliasing), with
sizes and positions fitted to the real grid subset: the centre at 16 + 32 * pos pixels; a square
of side 19.2 * scale px; an ellipse of semi-axes (12.76, 7.215) * scale px; a heart, the curve
x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t scaled by (0.6, 0.662) * scale px; all
turned by the orientation, counter-clockwise on screen. Against the real grid (46,080 images),
and the random subset off its grid: 96% of squares, 93% of ellipses and 91% of hearts are the real
image exactly; the others differ in 1 to 3 edge pixels (squares up to a row of 12 to 23 pixels,
where an edge falls exactly on a row of pixel centres and the original broke the tie the other
way); white pixels per shape and scale agree within 0.2 on average, centroids within 0.01 px.
It is a reimplementation fitted to the images, not DeepMind's code.
"""
from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source, split_count, with_fixed_test
from klvae.errors import KlvaeError

FOLDER = "dsprites"
OFFICIAL = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
GRID, RANDOM = "dsprites_grid.npz", "dsprites_random20k.npz"
SIZE = 64
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1, 6)
ORIENTATIONS = np.linspace(0, 2 * np.pi, 40)  # 0 and 2 pi both present, as in the official file
POSITIONS = np.linspace(0, 1, 32)
N_IMAGES, TEST_FRACTION = 20_000, 0.1
SEED = 1234  # the sample of the official file and the generated factors: the same on every machine
CHUNK = 8192  # images decompressed at a time when reading rows of an .npz

# outlines fitted to the real grid subset (pixels, at scale 1; see the module docstring)
CENTRE, SPAN = 16.0, 32.0  # centre = CENTRE + SPAN * pos
SQUARE_HALF = 9.6
ELLIPSE_AXES = (12.76, 7.215)
HEART_SCALE, HEART_SHIFT = (0.6, 0.662), -1.437  # u = 0.6 x, v = -0.662 y - 1.437
HEART_ROWS = 0.005  # the heart's table step along v, in pixels at scale 1


# --- the official file and the shared subsets -------------------------------------------------


def read_dsprites(path: Path, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """imgs (N, 64, 64) uint8 in {0, 1} and factor classes (N, 5) int64 (shape, scale,
    orientation, posX, posY) of a dSprites .npz with the official keys (`imgs`,
    `latents_classes` (N, 6) whose first column is the constant colour).

    rows: sorted row indices to keep (None: all); the images are decompressed CHUNK at a time, so
    a sample of the 3 GB official array needs only the sample's memory.
    """
    classes = read_classes(path)
    if rows is not None:
        classes = classes[rows]
    imgs = _read_rows(path, "imgs", rows)
    if imgs.ndim != 3 or imgs.shape[1:] != (SIZE, SIZE) or len(imgs) != len(classes):
        raise KlvaeError(
            f"{path} holds imgs of shape {imgs.shape}; expected ({len(classes)}, 64, 64), "
            "one image per row of latents_classes"
        )
    if classes.min(initial=0) < 0 or np.any(classes.max(0, initial=0) >= FACTOR_SIZES):
        raise KlvaeError(f"{path} has factor classes outside the dSprites sizes {FACTOR_SIZES}")
    if imgs.max(initial=0) > 1:
        raise KlvaeError(f"{path} has image values above 1; dSprites images are 0 / 1")
    return imgs.astype(np.uint8, copy=False), classes


def read_classes(path: Path) -> np.ndarray:
    """The factor classes (N, 5) int64 of a dSprites .npz: its latents_classes (N, 6) less the
    constant colour column."""
    try:
        with np.load(path) as d:
            files = list(d.files)
            classes = np.asarray(d["latents_classes"]) if "latents_classes" in files else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise KlvaeError(f"{path} cannot be read as an .npz ({err}); download the file again") from None
    missing = [k for k in ("imgs", "latents_classes") if k not in files]
    if missing:
        raise KlvaeError(
            f"{path} has no array {missing[0]!r} (found {', '.join(files) or 'none'}); "
            "a dSprites file needs imgs (N, 64, 64) and latents_classes (N, 6)"
        )
    if classes.ndim != 2 or classes.shape[1] != 6 or not np.issubdtype(classes.dtype, np.integer):
        raise KlvaeError(f"{path} holds latents_classes of shape {classes.shape}; expected (N, 6) integers")
    return classes[:, 1:].astype(np.int64)


def _read_rows(path: Path, key: str, rows: np.ndarray | None) -> np.ndarray:
    """Rows of the array `key` (N, ...) of an .npz (all when rows is None)."""
    keep = None if rows is None else np.asarray(rows)
    parts = []
    for start, chunk in _chunks(path, key):
        if keep is None:
            parts.append(chunk.copy())
        else:
            lo, hi = np.searchsorted(keep, [start, start + len(chunk)])
            parts.append(chunk[keep[lo:hi] - start])
    return np.concatenate(parts) if parts else np.zeros((0, SIZE, SIZE), np.uint8)


def _chunks(path: Path, key: str):
    """(start, rows) of the array `key` of an .npz, CHUNK rows at a time, decompressed from the
    zip member as they are read (compressed or not): the whole array is never in memory."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise KlvaeError(f"{path}: {key} is a .npy of version {version}; expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject or not shape:
            raise KlvaeError(f"{path}: {key} must be a C-ordered numeric array with rows; got {shape}")
        n, row_shape = shape[0], shape[1:]
        per_row = dtype.itemsize * math.prod(row_shape)
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            buf = f.read((stop - start) * per_row)
            if len(buf) != (stop - start) * per_row:
                raise KlvaeError(f"{path} is truncated: {key} ends before row {stop} of {n}")
            yield start, np.frombuffer(buf, dtype).reshape(stop - start, *row_shape)


def _missing(data_dir: Path) -> KlvaeError:
    folder = data_dir / FOLDER
    return KlvaeError(
        f"dsprites file not found: {folder / OFFICIAL} (or the subset {folder / RANDOM}); put "
        "one there, set KLVAE_DATA or --data-dir, or use the generated source 'dsprites-generated'"
    )


def load_dsprites(data_dir: Path, download: bool = False) -> RawSplits:
    """N_IMAGES real dSprites images (N, 1, 64, 64) uint8 0/1 with their factor classes (N, 5):
    a SEED-fixed uniform sample of the official file if present, else the random 20k subset.
    The images stay uint8 (a quarter of float32) until the Dataset makes them float32."""
    official, subset = data_dir / FOLDER / OFFICIAL, data_dir / FOLDER / RANDOM
    if official.is_file():
        path = official
        n = len(read_classes(path))
        rows = np.sort(np.random.default_rng(SEED).choice(n, min(n, N_IMAGES), replace=False))
        imgs, classes = read_dsprites(path, rows)
    elif subset.is_file():
        path = subset
        imgs, classes = read_dsprites(path)
    else:
        raise _missing(data_dir)
    return with_fixed_test(str(path), imgs[:, None], classes, split_count(len(imgs), TEST_FRACTION))


# --- the generator ---------------------------------------------------------------------------


def sample_factors(n: int, rng: np.random.Generator, sizes: tuple[int, ...] = FACTOR_SIZES) -> np.ndarray:
    """n factor combinations (n, len(sizes)) int64, each class uniform and independent."""
    return rng.integers(0, sizes, size=(n, len(sizes)), dtype=np.int64)


def render(factors: np.ndarray, batch: int = 1024) -> np.ndarray:
    """dSprites-like images (N, 64, 64) bool of factor classes (N, 5) (shape, scale, orientation,
    posX, posY as in FACTOR_SIZES): a pixel is on when its centre lies inside the sprite."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != 5 or np.any(factors < 0) or np.any(factors >= FACTOR_SIZES):
        raise KlvaeError(
            f"factors must be classes of shape (N, 5) within {FACTOR_SIZES}; got shape {factors.shape}"
        )
    out = np.empty((len(factors), SIZE, SIZE), bool)
    for start in range(0, len(factors), batch):
        out[start:start + batch] = _render_batch(factors[start:start + batch])
    return out


def _render_batch(f: np.ndarray) -> np.ndarray:
    scale = SCALES[f[:, 1]].astype(np.float32)[:, None, None]
    theta = ORIENTATIONS[f[:, 2]]
    cos, sin = (np.float32(1) * t[:, None, None] for t in (np.cos(theta), np.sin(theta)))
    grid = np.arange(SIZE, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - (CENTRE + SPAN * POSITIONS[f[:, 3]]).astype(np.float32)[:, None, None]
    dy = grid[None, :, None] - (CENTRE + SPAN * POSITIONS[f[:, 4]]).astype(np.float32)[:, None, None]
    u = (cos * dx - sin * dy) / scale  # (N, 64, 64): the pixel in the sprite's frame, at scale 1
    v = (sin * dx + cos * dy) / scale
    shape = f[:, 0]
    img = np.zeros(u.shape, bool)
    for k, inside in enumerate((_in_square, _in_ellipse, _in_heart)):
        sel = shape == k
        if sel.any():
            img[sel] = inside(u[sel], v[sel])
    return img


def _in_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF


def _in_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = ELLIPSE_AXES
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _in_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    v0, inner, outer = _heart_table()
    row = np.clip(np.rint((v - v0) / HEART_ROWS).astype(np.int64), 0, len(inner) - 1)
    au = np.abs(u)
    return (au >= inner[row]) & (au <= outer[row])


_HEART: tuple[float, np.ndarray, np.ndarray] | None = None


def _heart_table() -> tuple[float, np.ndarray, np.ndarray]:
    """The heart as rows of v (step HEART_ROWS, from v0): a pixel at (u, v) is inside when
    inner <= |u| <= outer on its row (the heart is symmetric; above the notch its rows are two
    intervals, below it one, with inner 0). Built once from the right half of the curve."""
    global _HEART
    if _HEART is None:
        t = np.linspace(0, np.pi, 2001)  # the right half, from the notch (t = 0) to the tip
        x = HEART_SCALE[0] * 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        v = -HEART_SCALE[1] * y + HEART_SHIFT
        v0 = float(v.min()) - 1
        rows = v0 + HEART_ROWS * np.arange(int((v.max() + 1 - v0) / HEART_ROWS) + 1)
        a, b = v[:-1, None], v[1:, None]  # segments (S, 1) against rows (1, R)
        cross = (np.minimum(a, b) <= rows) & (rows < np.maximum(a, b))
        w = (rows - a) / np.where(b == a, 1, b - a)
        xs = np.where(cross, x[:-1, None] + w * (x[1:, None] - x[:-1, None]), np.nan)
        count = cross.sum(0)
        outer = np.nan_to_num(np.nanmax(np.where(cross, xs, -np.inf), axis=0), neginf=-1.0)
        inner = np.where(count >= 2, np.nanmin(np.where(cross, xs, np.inf), axis=0), 0.0)
        inner[count == 0] = 1.0  # empty rows: inner > outer
        _HEART = (v0, inner.astype(np.float32), outer.astype(np.float32))
    return _HEART


def load_generated(data_dir: Path | None = None, download: bool = False) -> RawSplits:
    """N_IMAGES generated images (N, 1, 64, 64) uint8 0/1 at SEED-fixed random factor classes
    (N, 5), kept as labels."""
    factors = sample_factors(N_IMAGES, np.random.default_rng(SEED))
    imgs = render(factors).astype(np.uint8)[:, None]
    return with_fixed_test("dsprites-generated", imgs, factors, split_count(N_IMAGES, TEST_FRACTION))


# --- images at any factor combination, for the disentanglement metrics --------------------------


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


def file_factor_data(path: Path, name: str) -> FactorData:
    """The real images of a dSprites .npz that holds a full factorial grid sorted by factor (the
    official file, or the shared grid subset, whose class indices 0..9 / 0..15 stand for the
    original orientation classes 0, 4, ..., 36 and position classes 0, 2, ..., 30). The images
    are kept bit-packed (512 bytes each: 24 MB for the grid subset, 377 MB for the official file)."""
    original = read_classes(path)
    values = tuple(np.unique(c) for c in original.T)
    sizes = tuple(len(v) for v in values)
    index = tuple(np.searchsorted(v, c) for v, c in zip(values, original.T))
    if len(original) != math.prod(sizes) or np.any(np.ravel_multi_index(index, sizes) != np.arange(len(original))):
        raise KlvaeError(
            f"{path} is not a full factorial grid sorted by factor ({len(original)} rows, sizes {sizes}); "
            "use dsprites-grid, the official file, or dsprites-generated"
        )
    packed = np.concatenate([np.packbits(c.reshape(len(c), -1) > 0, axis=1) for _, c in _chunks(path, "imgs")])

    def images_of(factors: np.ndarray) -> np.ndarray:
        rows = packed[np.ravel_multi_index(tuple(np.asarray(factors).T), sizes)]
        return np.unpackbits(rows, axis=1, count=SIZE * SIZE).reshape(-1, 1, SIZE, SIZE).astype(np.float32)

    return FactorData(name, sizes, images_of, classes=values)


FACTOR_DATA = ("dsprites-generated", "dsprites-grid", "dsprites")


def factor_data(name: str, data_dir: Path) -> FactorData:
    """FactorData by name: "dsprites-generated" (the generator, no file), "dsprites-grid" (the
    shared grid subset, data_dir/dsprites/dsprites_grid.npz) or "dsprites" (the official file,
    all 737,280 images; the random 20k subset is no grid and cannot serve)."""
    if name == "dsprites-generated":
        return generated_factor_data()
    if name not in FACTOR_DATA:
        raise KlvaeError(f"unknown factor data {name!r}; choose one of: {', '.join(FACTOR_DATA)}")
    path = data_dir / FOLDER / (GRID if name == "dsprites-grid" else OFFICIAL)
    if not path.is_file():
        raise KlvaeError(
            f"{name} file not found: {path}; put it there, set KLVAE_DATA or --data-dir, or use "
            "'dsprites-generated' (no file needed)"
        )
    return file_factor_data(path, name)


def factors_of(dataset, split: str = "test") -> tuple[np.ndarray, tuple[int, ...]]:
    """The factor classes (N, 5) int64 of a split of a dSprites Dataset, and their sizes."""
    labels = getattr(dataset, f"{split}_labels", None) if split in ("train", "val", "test") else None
    if labels is None or labels.ndim != 2 or labels.shape[1] != 5 or labels.is_floating_point():
        raise KlvaeError(
            f"{getattr(dataset, 'name', dataset)!r} has no dSprites factors in its {split!r} split; "
            "load 'dsprites' or 'dsprites-generated' and pick split train, val or test"
        )
    return labels.numpy().astype(np.int64), FACTOR_SIZES


DSPRITES = Source(
    "dsprites",
    "dSprites, 20,000 real 1x64x64 binary sprites (official file sample, else the random 20k subset), "
    "5 factors kept as labels",
    load_dsprites,
    "none",
)
GENERATED = Source(
    "dsprites-generated",
    "dSprites-like sprites drawn at 20,000 random factor combinations, 1x64x64 binary, 5 factors "
    "kept as labels (generated)",
    load_generated,
    "none",
)
