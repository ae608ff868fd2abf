"""Folders of PNG / JPEG / WebP images as (N, C, S, S) float32 splits in [0, 1], decoded with Pillow,
held in memory as uint8 or read from disk on access."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import get_worker_info

from klvae.data.splits import TEST_SEED, holdout, split_count
from klvae.errors import KlvaeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLORS = ("auto", "rgb", "grey")
CACHES = ("auto", "memory", "disk")
CACHE_LIMIT = 4 * 2**30  # bytes of uint8 pixels held in memory by cache="auto": CelebA at 64 px (2.5 GB) fits
MIN_IMAGES = 10
MIN_SIZE = 8
TEST_FRACTION = 0.1
RESAMPLE = Image.Resampling.BICUBIC  # Pillow's resize widens the kernel when shrinking: antialiased
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16-bit grey: scaled by 255/65535
CHUNK = 64  # files per thread-pool task


def log_stderr(line: str) -> None:
    print(f"klvae: {line}", file=sys.stderr)


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


def decode_image(path: str | os.PathLike, channels: int, size: int) -> np.ndarray:
    """One file as (C, S, S) uint8: EXIF orientation applied, converted to L (C=1) or RGB (C=3, alpha
    dropped), centre-cropped to a square, resized to S x S (antialiased bicubic). Raises on a bad file."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
    if img.mode in WIDE_MODES:
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8))
    mode = "L" if channels == 1 else "RGB"
    img = img if img.mode == mode else img.convert(mode)
    w, h = img.size
    m = min(w, h)
    left, top = (w - m) // 2, (h - m) // 2
    img = img.crop((left, top, left + m, top + m)).resize((size, size), RESAMPLE)
    a = np.array(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not a readable PNG, JPEG or WebP image"
    return str(e) or type(e).__name__


def _map(fn: Callable[[int], object], n: int) -> list:
    """[fn(0), ..., fn(n - 1)], in threads when n is large (Pillow releases the GIL while decoding)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = 1 if get_worker_info() is not None else min(16, cpus)  # DataLoader workers decode alone
    if workers == 1 or n < 2 * CHUNK:
        return [fn(i) for i in range(n)]
    chunks = [range(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    with ThreadPoolExecutor(workers) as pool:
        return [r for part in pool.map(lambda c: [fn(i) for i in c], chunks) for r in part]


class ImageFiles:
    """One split's images, used like an (N, C, S, S) float32 tensor in [0, 1] whose rows are read on
    indexing: x[i] -> (C, S, S); x[a:b], x[list], x[LongTensor], x[BoolTensor] -> (B, C, S, S);
    x.float() and x.to(...) -> the whole split as a tensor. Backed by `data`, a uint8 (N, C, S, S)
    tensor, when cached; else each access decodes the files, and a file that fails is logged once and
    replaced by the next readable file of the split. Picklable (DataLoader workers) when `log` is."""

    def __init__(self, files: Sequence[str], channels: int, side: int, data: torch.Tensor | None = None,
                 log: Callable[[str], None] = log_stderr):
        if data is not None and tuple(data.shape) != (len(files), channels, side, side):
            raise KlvaeError(f"cached images of shape {tuple(data.shape)} do not match {len(files)} files of "
                             f"({channels}, {side}, {side}); decode them again")
        self.files, self.channels, self.side = list(files), channels, side
        self.data, self._log, self._bad = data, log, set()

    shape = property(lambda self: torch.Size((len(self.files), self.channels, self.side, self.side)))
    dtype = property(lambda self: torch.float32)
    device = property(lambda self: torch.device("cpu"))
    ndim = property(lambda self: 4)
    cached = property(lambda self: self.data is not None)
    value_range = (0.0, 1.0)  # 8-bit pixels k/255

    def dim(self) -> int:
        return 4

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def is_floating_point(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # x[rows, ...]: rows first, the rest on the tensor they give
            head = self[key[0]]
            return head[key[1:]] if head.dim() == 3 else head[(slice(None),) + key[1:]]
        rows = self._rows(key)
        if self.data is not None:
            return self.data[rows].float() / 255
        return self._stack([rows])[0] if isinstance(rows, int) else self._stack(rows.tolist())

    def _rows(self, key) -> int | torch.Tensor:
        """key as one row number or a (B,) LongTensor of rows, each in [0, N)."""
        n = len(self)
        t = torch.arange(*key.indices(n)) if isinstance(key, slice) else torch.as_tensor(key)
        if t.dtype == torch.bool:
            if t.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},), got {tuple(t.shape)}")
            return t.nonzero().flatten()
        t = t.long() if t.numel() == 0 else t
        if t.is_floating_point() or t.is_complex() or t.ndim > 1:
            raise IndexError(f"images are indexed by an integer, a slice or a 1-d index, got {key!r}")
        if not bool(((t >= -n) & (t < n)).all()):
            raise IndexError(f"an index is out of range for {n} images")
        t = t.long() % n
        return int(t) if t.ndim == 0 else t

    def _stack(self, rows: list[int]) -> torch.Tensor:
        """The files of rows decoded as a (B, C, S, S) float32 tensor."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)

        def one(k: int) -> None:
            out[k] = self._decode(rows[k])

        _map(one, len(rows))
        return torch.from_numpy(out).float() / 255

    def _decode(self, i: int) -> np.ndarray:
        """Row i as (C, S, S) uint8; a file that fails is logged once and the next readable one used."""
        n = len(self.files)
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return decode_image(self.files[j], self.channels, self.side)
            except Exception as e:  # any decoding failure: never stop an epoch for one file
                self._bad.add(j)
                self._log(f"{self.files[j]} could not be decoded ({_reason(e)}); "
                          "the next readable image of its split is used in its place")
        raise KlvaeError(f"none of the {n} images of this split can be decoded (e.g. {self.files[i]}); "
                         "check the files")

    def float(self) -> torch.Tensor:
        """The whole split as an (N, C, S, S) float32 tensor in [0, 1]."""
        return self.data.float() / 255 if self.data is not None else self._stack(list(range(len(self))))

    def to(self, *args, **kwargs) -> torch.Tensor:
        """The whole split materialised, then moved or cast as torch.Tensor.to does."""
        return self.float().to(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        try:
            pickle.dumps(self._log)
        except Exception:  # a lambda or a closure: workers log to stderr instead
            state["_log"] = log_stderr
        return state

    def __repr__(self) -> str:
        where = "memory" if self.cached else "disk"
        return f"ImageFiles({len(self)} files, shape={tuple(self.shape)}, in {where})"


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
            return None, _reason(e)

    modes = []
    for path, (mode, reason) in zip(paths, _map(one, len(paths))):
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
            return _reason(e)
        return ""

    reasons = _map(one, len(paths))
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
