"""User data from .npy, .npz or .csv files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from klvae.data.splits import RawSplits, split_count, with_fixed_test
from klvae.errors import KlvaeError

SUFFIXES = (".npy", ".npz", ".csv")
DATA_KEYS = ("x", "data")  # npz: the first of these present, else the first array
LABEL_KEYS = ("y", "labels")  # npz: optional (N,) integer labels
MIN_ROWS = 10
TEST_FRACTION = 0.1


def load_file(path: str | Path) -> RawSplits:
    """Rows of a user file as (N, D), (N, 1, H, W) or (N, C, H, W) float32.

    A fixed 10% test split (seed 0, independent of the run seed).
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise KlvaeError(
            f"unsupported data file type {path.suffix!r} ({path}); use one of: "
            f"{', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise KlvaeError(f"data file not found: {path}; check the path")
    try:
        x, labels = _read(path)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise KlvaeError(f"cannot read {path} ({e}); check that the file is intact") from e
    except ValueError as e:
        if isinstance(e, KlvaeError):
            raise
        raise KlvaeError(f"cannot read {path} ({e}); save it as a numeric array") from e
    x = _as_images(_as_float(x, path), path)
    if len(x) < MIN_ROWS:
        raise KlvaeError(
            f"{path} has {len(x)} rows; at least {MIN_ROWS} are needed to split train, "
            "val and test"
        )
    if labels is not None and labels.shape != (len(x),):
        raise KlvaeError(
            f"{path} has labels of shape {labels.shape} for {len(x)} rows; "
            "labels must have shape (N,)"
        )
    return with_fixed_test(str(path), x, labels, split_count(len(x), TEST_FRACTION))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        return _read_npz(path)
    return read_csv(path), None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as d:
        if not d.files:
            raise KlvaeError(f"{path} holds no arrays; save the data as key 'x'")
        key = next((k for k in DATA_KEYS if k in d.files), d.files[0])
        label_key = next((k for k in LABEL_KEYS if k in d.files and k != key), None)
        labels = None if label_key is None else d[label_key]
        if labels is not None and labels.dtype.kind not in "iu":
            raise KlvaeError(
                f"{path} has labels {label_key!r} of type {labels.dtype}; labels must be integers"
            )
        return d[key], labels


def read_csv(path: Path) -> np.ndarray:
    """A comma-separated numeric file as (N, D) float64; a non-numeric first row is a header."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    header = int(bool(first.strip()) and not _numeric(first.split(",")))
    try:
        return np.loadtxt(path, delimiter=",", comments=None, skiprows=header, ndmin=2)
    except ValueError as e:
        _raise_bad_line(path, header)
        raise KlvaeError(f"{path} is not a numeric csv ({e}); fix the file") from e


def _numeric(fields: list[str]) -> bool:
    try:
        [float(v) for v in fields]
    except ValueError:
        return False
    return True


def _raise_bad_line(path: Path, header: int) -> None:
    """Raise KlvaeError naming the first non-numeric or ragged line of a csv."""
    width = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno <= header or not line.strip():
                continue
            fields = line.split(",")
            if not _numeric(fields):
                raise KlvaeError(
                    f"{path} line {lineno} is not numeric ({line.strip()[:40]!r}); the csv "
                    "must hold numbers separated by commas, with at most one header row"
                )
            if width is not None and len(fields) != width:
                raise KlvaeError(
                    f"{path} line {lineno} has {len(fields)} values where earlier lines have "
                    f"{width}; every row needs the same number of columns"
                )
            width = len(fields)


def _as_float(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise KlvaeError(f"{path} holds {x.dtype} values; save the data as a numeric array")
    return x.astype(np.float32)


def _as_images(x: np.ndarray, path: Path) -> np.ndarray:
    """(N, D) and (N, C, H, W) as they are; (N, H, W) -> (N, 1, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim in (2, 4):
        return x
    raise KlvaeError(
        f"{path} holds an array of shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W)"
    )
