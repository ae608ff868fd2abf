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

This module reads the files and registers the sources. The factor grid and the generator live in
:mod:`klvae.data.dsprites_render`, FactorData in :mod:`klvae.data.factor_grid`; both are
re-exported here.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from klvae.data.dsprites_render import (
    FACTOR_NAMES, FACTOR_SIZES, ORIENTATIONS, POSITIONS, SCALES, SHAPES, SIZE, render, sample_factors,
)
from klvae.data.factor_grid import FactorData, generated_factor_data
from klvae.data.splits import RawSplits, Source, split_count, with_fixed_test
from klvae.errors import KlvaeError

__all__ = ["CHUNK", "DSPRITES", "FACTOR_DATA", "FACTOR_NAMES", "FACTOR_SIZES", "FOLDER", "GENERATED", "GRID",
           "N_IMAGES", "OFFICIAL", "ORIENTATIONS", "POSITIONS", "RANDOM", "SCALES", "SEED", "SHAPES", "SIZE",
           "TEST_FRACTION", "FactorData", "factor_data", "factors_of", "file_factor_data", "generated_factor_data",
           "load_dsprites", "load_generated", "read_classes", "read_dsprites", "render", "sample_factors"]

FOLDER = "dsprites"
OFFICIAL = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
GRID, RANDOM = "dsprites_grid.npz", "dsprites_random20k.npz"
N_IMAGES, TEST_FRACTION = 20_000, 0.1
SEED = 1234  # the sample of the official file and the generated factors: the same on every machine
CHUNK = 8192  # images decompressed at a time when reading rows of an .npz



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


# --- the generated source (the generator: klvae.data.dsprites_render) --------------------------


def load_generated(data_dir: Path | None = None, download: bool = False) -> RawSplits:
    """N_IMAGES generated images (N, 1, 64, 64) uint8 0/1 at SEED-fixed random factor classes
    (N, 5), kept as labels."""
    factors = sample_factors(N_IMAGES, np.random.default_rng(SEED))
    imgs = render(factors).astype(np.uint8)[:, None]
    return with_fixed_test("dsprites-generated", imgs, factors, split_count(N_IMAGES, TEST_FRACTION))


# --- images at any factor combination, for the disentanglement metrics --------------------------


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
