"""Binarized MNIST with the fixed binarisation of Larochelle & Murray (50k / 10k / 10k)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, Source
from klvae.errors import KlvaeError

FOLDER = "binarized-mnist"
NPZ = "binarized_mnist.npz"
AMAT = "binarized_mnist_{}.amat"
SPLITS = ("train", "valid", "test")
PIXELS = 784


def load_binarized(data_dir: Path, download: bool = False) -> RawSplits:
    """Read data_dir/binarized-mnist: binarized_mnist.npz, else the three .amat files.

    Uses the official train / valid / test split; images (N, 1, 28, 28) float32 in {0, 1}.
    Labels come only from an npz holding `<split>_labels_inferred` (derived, not official).
    """
    folder = data_dir / FOLDER
    if (folder / NPZ).is_file():
        arrays, labels = read_npz(folder / NPZ)
    elif all((folder / AMAT.format(s)).is_file() for s in SPLITS):
        arrays, labels = [read_amat(folder / AMAT.format(s)) for s in SPLITS], [None] * 3
    else:
        raise KlvaeError(
            f"binarized-mnist not found in {folder}; put {NPZ} or "
            f"{AMAT.format('{train,valid,test}')} there, or set KLVAE_DATA or --data-dir "
            "(this data set has no --download)"
        )
    train, valid, test = (a.reshape(-1, 1, 28, 28).astype(np.float32) for a in arrays)
    return RawSplits(str(folder), train, test, labels[0], labels[2], valid, labels[1])


def read_npz(path: Path) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Arrays train / valid / test (N, 784) of path, and their inferred labels where present."""
    with np.load(path) as d:
        missing = [s for s in SPLITS if s not in d.files]
        if missing:
            raise KlvaeError(
                f"{path} lacks the array(s) {', '.join(missing)}; it needs keys "
                "train, valid and test of shape (N, 784)"
            )
        arrays = [_check(d[s], path) for s in SPLITS]
        labels = [d[f"{s}_labels_inferred"] if f"{s}_labels_inferred" in d.files else None
                  for s in SPLITS]
    return arrays, labels


def read_amat(path: Path) -> np.ndarray:
    """One split (N, 784) uint8 from a .amat file: text rows of 784 0/1 values, or MATLAB v5."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"MATLAB"):
        return _check(_read_matlab(path), path)
    return _check(_parse_text(data, path), path)


def _read_matlab(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    mat = loadmat(path)
    keys = [k for k in mat if not k.startswith("__")]
    key = "X" if "X" in mat else (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise KlvaeError(
            f"{path} is a MATLAB file with arrays {keys}; it needs one array named 'X'"
        )
    return np.asarray(mat[key])


def _parse_text(data: bytes, path: Path) -> np.ndarray:
    try:
        return np.loadtxt(io.BytesIO(data), dtype=np.float32, ndmin=2)
    except ValueError as e:
        reason = str(e).split(";")[0]
        raise KlvaeError(
            f"{path} is not a valid .amat file ({reason}); download it again"
        ) from e


def _check(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != PIXELS:
        raise KlvaeError(
            f"{path} holds an array of shape {x.shape}, expected (N, {PIXELS}); "
            "check that it is binarized MNIST"
        )
    if not np.all((x == 0) | (x == 1)):
        raise KlvaeError(
            f"{path} holds values other than 0 and 1; binarized-mnist must be binary, "
            "use `mnist` for grey images"
        )
    return x


SOURCE = Source(
    "binarized-mnist",
    "MNIST with the fixed binarisation of Larochelle & Murray, 50,000 / 10,000 / 10,000 "
    "(official split)",
    load_binarized,
    "none",
)
