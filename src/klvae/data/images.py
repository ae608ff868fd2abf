"""Folders of PNG / JPEG / WebP images as (N, C, S, S) float32 splits in [0, 1], decoded with Pillow,
held in memory as uint8 or read from disk on access (:mod:`klvae.data.image_files`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from klvae.data.image_files import GREY_MODES, ImageFiles, decode_image, failure_reason, log_stderr, map_files
from klvae.data.splits import TEST_SEED, holdout, split_count
from klvae.errors import KlvaeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLORS = ("auto", "rgb", "grey")
CACHES = ("auto", "memory", "disk")
CACHE_LIMIT = 4 * 2**30  # bytes of uint8 pixels held in memory by cache="auto": CelebA at 64 px (2.5 GB) fits
MIN_IMAGES = 10
MIN_SIZE = 8
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class ImageOptions:
    """How image files become tensors.

    size: side S of the square images in pixels (centre-cropped to a square, then resized).
    color: "rgb" (C=3), "grey" (C=1) or "auto" (grey when every readable file is grey, else rgb).
    cache: "memory" (decode every file once at load into uint8), "disk" (decode on access) or
    "auto" (memory when N * C * S * S bytes <= CACHE_LIMIT, else disk).
    """

    size: int = 64
    color: str = "auto"
    cache: str = "auto"

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < MIN_SIZE:
            raise KlvaeError(f"image size must be an integer >= {MIN_SIZE} (pixels), got {self.size!r}; e.g. 64")
        if self.color not in COLORS:
            raise KlvaeError(f"unknown image color {self.color!r}; choose one of: {', '.join(COLORS)}")
        if self.cache not in CACHES:
            raise KlvaeError(f"unknown image cache {self.cache!r}; choose one of: {', '.join(CACHES)}")


@dataclass
class ImageSplits:
    """A folder's images in train / val / test splits.

    labels: (N,) int64 class indices (classes[i] names label i), (N, F) int64 {0, 1} attributes
    (attributes names column j), or None. skipped: "path: reason" of each file left out at load.
    """

    name: str
    train: ImageFiles
    val: ImageFiles
    test: ImageFiles
    train_labels: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    classes: list[str] | None
    attributes: list[str] | None
    skipped: list[str]


def check_headers(paths: Sequence[str], log: Callable[[str], None], skipped: list[str]) -> list[str | None]:
    """Each file's Pillow mode from its header alone, or None for a file that cannot be opened (then one
    line "path: reason" is logged and appended to skipped)."""

    def one(i: int) -> tuple[str | None, str]:
        try:
            if os.path.getsize(paths[i]) == 0:
                return None, "empty file (0 bytes)"
            with Image.open(paths[i]) as img:
                return img.mode, ""
        except Exception as e:
            return None, failure_reason(e)

    modes = []
    for path, (mode, reason) in zip(paths, map_files(one, len(paths))):
        if mode is None:
            _skip(f"{path}: {reason}", log, skipped)
        modes.append(mode)
    return modes


def _skip(line: str, log: Callable[[str], None], skipped: list[str]) -> None:
    skipped.append(line)
    log(f"skipped {line}")


def build_splits(name: str, parts: dict[str, tuple[list[str], np.ndarray | None]], modes: Sequence[str],
                 options: ImageOptions, log: Callable[[str], None], skipped: list[str],
                 classes: list[str] | None = None, attributes: list[str] | None = None) -> ImageSplits:
    """ImageSplits from the readable files of each split ("train", "val", "test": paths and labels);
    modes: every such file's mode, for color="auto". Memory mode decodes now and skips failures."""
    grey = options.color == "grey" or (options.color == "auto" and all(m in GREY_MODES for m in modes))
    channels, s = (1 if grey else 3), options.size
    total = sum(len(p) for p, _ in parts.values()) * channels * s * s
    memory = options.cache == "memory" or (options.cache == "auto" and total <= CACHE_LIMIT)
    out: dict[str, object] = {}
    for split, (paths, labels) in parts.items():
        data = None
        if memory:
            data, keep = _decode_all(paths, channels, s, log, skipped)
            paths = [paths[i] for i in keep]
            labels = None if labels is None else labels[keep]
        if not paths:
            raise KlvaeError(f"{name} has no readable images left in its {split} split; add or repair image files")
        out[split] = ImageFiles(paths, channels, s, data, log)
        out[f"{split}_labels"] = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64).copy())
    return ImageSplits(name=name, classes=classes, attributes=attributes, skipped=skipped, **out)


def _decode_all(paths: list[str], channels: int, size: int, log: Callable[[str], None],
                skipped: list[str]) -> tuple[torch.Tensor, list[int]]:
    """Every file as rows of a (N', C, S, S) uint8 tensor, and the indices of the N' that decoded."""
    data = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    rows = data.numpy()

    def one(i: int) -> str:
        try:
            rows[i] = decode_image(paths[i], channels, size)
        except Exception as e:
            return failure_reason(e)
        return ""

    reasons = map_files(one, len(paths))
    for path, reason in zip(paths, reasons):
        if reason:
            _skip(f"{path}: {reason}", log, skipped)
    keep = [i for i, r in enumerate(reasons) if not r]
    return (data if len(keep) == len(paths) else data[keep]), keep


def _walk(root: Path):
    """Paths of the image files under root (any depth; hidden files and folders skipped)."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (os.path.join(folder, f) for f in names
                    if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))


def is_image_folder(path: str | os.PathLike) -> bool:
    """Whether path is a directory holding at least one image file (at any depth)."""
    path = Path(path).expanduser()
    return path.is_dir() and next(_walk(path), None) is not None


def _classes(root: Path, files: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """(N,) labels and class names when every file lies in one of >= 2 first-level sub-folders."""
    tops = [Path(f).relative_to(root).parts for f in files]
    if any(len(p) < 2 for p in tops):
        return None, None
    classes = sorted({p[0] for p in tops})
    if len(classes) < 2:
        return None, None
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[p[0]] for p in tops], dtype=np.int64), classes


def load_image_folder(root: str | os.PathLike, options: ImageOptions = ImageOptions(), val_fraction: float = 0.1,
                      seed: int = 0, log: Callable[[str], None] = log_stderr) -> ImageSplits:
    """A folder of images (any depth) in splits: a fixed 10% test split (TEST_SEED), then val_fraction of
    the rest as val (seeded with seed). First-level sub-folders, when every image lies in one of >= 2 of
    them, are the classes. Unreadable files are skipped, each logged with its reason."""
    if not isinstance(options, ImageOptions):
        raise KlvaeError(f"options must be an ImageOptions, got {type(options).__name__}")
    if not 0 < val_fraction < 1:
        raise KlvaeError(f"val_fraction must be in (0, 1), got {val_fraction!r}; e.g. 0.1")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise KlvaeError(f"image folder not found: {root}; check the path")
    accepted = "/".join(IMAGE_SUFFIXES)
    files = sorted(_walk(root))
    if len(files) < MIN_IMAGES:
        raise KlvaeError(f"{root} holds {len(files)} image files ({accepted}, sub-folders included); at least "
                         f"{MIN_IMAGES} are needed to split train, val and test")
    labels, classes = _classes(root, files)
    skipped: list[str] = []
    modes = check_headers(files, log, skipped)
    good = np.array([i for i, m in enumerate(modes) if m is not None], dtype=np.int64)
    if len(good) == 0:
        raise KlvaeError(f"none of the {len(files)} image files in {root} can be read (e.g. {skipped[0]}); "
                         f"check that they are {accepted} images")
    if len(good) < MIN_IMAGES:
        raise KlvaeError(f"{root} holds {len(good)} readable images ({len(skipped)} skipped); at least "
                         f"{MIN_IMAGES} are needed to split train, val and test")
    y = None if labels is None else labels[good]
    rest, rest_y, test, test_y = holdout(good, y, split_count(len(good), TEST_FRACTION), TEST_SEED)
    train, train_y, val, val_y = holdout(rest, rest_y, split_count(len(rest), val_fraction), seed)
    parts = {s: ([files[i] for i in ix], yy) for s, ix, yy in
             (("train", train, train_y), ("val", val, val_y), ("test", test, test_y))}
    return build_splits(str(root), parts, [modes[i] for i in good], options, log, skipped, classes=classes)
