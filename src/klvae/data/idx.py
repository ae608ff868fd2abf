"""MNIST and Fashion-MNIST from IDX files (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from klvae.data.download import IDX_STEMS, download_idx
from klvae.data.splits import RawSplits, Source
from klvae.errors import KlvaeError

SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of uint8 data with ndim dimensions (3: images, 1: labels).

    Checks the magic number (0x00000800 + ndim), the header and the exact data length.
    Returns a read-only uint8 array of the header's shape, e.g. (N, 28, 28).
    """
    path = Path(path)
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big")
    expected = 0x800 + ndim
    if len(data) >= 4 and magic != expected:
        raise KlvaeError(
            f"{path} has magic number 0x{magic:08x}, expected 0x{expected:08x} for "
            f"{ndim}-d uint8 IDX data; check the file name or download it again"
        )
    if len(data) < header:
        raise KlvaeError(
            f"{path} is truncated ({len(data)} bytes, shorter than its header); "
            "delete it and download it again"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = math.prod(dims)
    if len(data) - header != size:
        raise KlvaeError(
            f"{path} is truncated or corrupt ({len(data) - header} data bytes, header "
            f"{dims} needs {size}); delete it and download it again"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise KlvaeError(
            f"{path} is a truncated or corrupt gzip file ({e}); delete it and download it again"
        ) from e


def _locate(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(name: str, data_dir: Path) -> dict[str, Path] | None:
    """The 4 IDX files of name from the first folder that has them all, or None."""
    for folder in [data_dir / name, *SYSTEM_DIRS.get(name, [])]:
        found = {key: _locate(folder, stem) for key, stem in IDX_STEMS.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _missing_message(name: str, data_dir: Path) -> str:
    folders = " or ".join(str(f) for f in [data_dir / name, *SYSTEM_DIRS.get(name, [])])
    return (
        f"{name} files not found in {folders}; put the 4 IDX files there, "
        "set KLVAE_DATA or --data-dir, or pass --download"
    )


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) float32 in [0, 1] and labels (N,) int64 from two IDX files."""
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if len(x) != len(y):
        raise KlvaeError(
            f"{images} has {len(x)} images but {labels} has {len(y)} labels; "
            "one of them is from another data set, download both again"
        )
    return (x[:, None].astype(np.float32) / 255.0), y.astype(np.int64)


def load_idx(name: str, data_dir: Path, download: bool = False) -> RawSplits:
    """Load MNIST-like IDX data set name from data_dir/name (downloading when asked)."""
    files = find_idx_files(name, data_dir)
    if files is None:
        if not download:
            raise KlvaeError(_missing_message(name, data_dir))
        download_idx(name, data_dir)
        files = find_idx_files(name, data_dir)
        assert files is not None
    x_train, y_train = _read_pair(files["train_images"], files["train_labels"])
    x_test, y_test = _read_pair(files["test_images"], files["test_labels"])
    return RawSplits(str(files["train_images"].parent), x_train, x_test, y_train, y_test)


MNIST = Source(
    "mnist",
    "MNIST handwritten digits, 60,000 train + 10,000 test, 1x28x28 grey (IDX files)",
    lambda data_dir, download: load_idx("mnist", data_dir, download),
    "dynamic",
)
FASHION_MNIST = Source(
    "fashion-mnist",
    "Fashion-MNIST clothing images, 60,000 train + 10,000 test, 1x28x28 grey (IDX files)",
    lambda data_dir, download: load_idx("fashion-mnist", data_dir, download),
    "dynamic",
)
