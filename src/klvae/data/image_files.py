"""One split of image files used as an (N, C, S, S) float32 tensor in [0, 1] (:class:`ImageFiles`),
and the decoding of one file with Pillow: EXIF orientation, mode, centre crop, resize."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import get_worker_info

from klvae.errors import KlvaeError

RESAMPLE = Image.Resampling.BICUBIC  # Pillow's resize widens the kernel when shrinking: antialiased
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16-bit grey: scaled by 255/65535
CHUNK = 64  # files per thread-pool task


def log_stderr(line: str) -> None:
    print(f"klvae: {line}", file=sys.stderr)


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


def failure_reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not a readable PNG, JPEG or WebP image"
    return str(e) or type(e).__name__


def map_files(fn: Callable[[int], object], n: int) -> list:
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

        map_files(one, len(rows))
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
                self._log(f"{self.files[j]} could not be decoded ({failure_reason(e)}); "
                          "the next readable image of its split is used in its place")
        raise KlvaeError(f"none of the {n} images of this split can be decoded (e.g. {self.files[i]}); "
                         "check the files")

    def subset(self, keep: torch.Tensor) -> "ImageFiles":
        """The rows where keep (N,) bool is True, still read lazily (cached pixels stay cached)."""
        rows = self._rows(keep)
        data = None if self.data is None else self.data[rows]
        return ImageFiles([self.files[i] for i in rows.tolist()], self.channels, self.side, data, self._log)

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
