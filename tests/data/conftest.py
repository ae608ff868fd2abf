"""Fixtures for the data tests: where the real data sets are, and small IDX writers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def idx_bytes(a: np.ndarray) -> bytes:
    """a (uint8, any ndim) as IDX bytes: magic 0x0800 + ndim, big-endian dims, data."""
    header = struct.pack(">I", 0x800 + a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + np.ascontiguousarray(a, np.uint8).tobytes()


def write_idx(path: Path, a: np.ndarray, compress: bool = True) -> Path:
    """Write a as an IDX file at path (+ '.gz' when compress). Returns the path written."""
    data = idx_bytes(a)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_fake_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, compress: bool = True,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny MNIST-like set of the 4 IDX files into folder; returns its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, a in arrays.items():
        write_idx(folder / stem, a, compress)
    return arrays


@pytest.fixture(scope="session")
def idx_tools() -> SimpleNamespace:
    """The IDX writers above, for tests that build small files in tmp_path."""
    return SimpleNamespace(idx_bytes=idx_bytes, write_idx=write_idx, write_set=write_fake_idx_set)
