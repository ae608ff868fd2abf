"""Raw arrays as a source returns them, and the shared split and validation steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klvae.errors import KlvaeError

TEST_SEED = 0  # fixed test splits never depend on the run seed
MIN_SPLIT_SIZE = 1


@dataclass
class RawSplits:
    """A source's arrays before validation split and binarisation.

    train, test: (N, *event) float32; labels: (N,) integers or None.
    val is set only when the source ships an official validation split.
    source names the file or data set in error messages.
    """

    source: str
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    val: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    def arrays(self) -> list[np.ndarray]:
        """The data arrays present (train, test and val if any)."""
        return [a for a in (self.train, self.test, self.val) if a is not None]


@dataclass(frozen=True)
class Source:
    """A registered data set: `load(data_dir, download)` returns its RawSplits."""

    name: str
    description: str
    load: Callable[[Path, bool], RawSplits]
    default_binarize: str


def split_count(n: int, fraction: float) -> int:
    """How many of n rows a fraction takes: at least 1, at most n - 1."""
    return min(max(1, int(round(n * fraction))), max(n - 1, 1))


def holdout(
    x: np.ndarray, labels: np.ndarray | None, n_out: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Move n_out random rows of x (N, ...) out, chosen by a permutation seeded with seed.

    Both parts keep the original row order. Returns (x_keep, labels_keep, x_out, labels_out).
    """
    perm = np.random.default_rng(seed).permutation(len(x))
    out, keep = np.sort(perm[:n_out]), np.sort(perm[n_out:])
    if labels is None:
        return x[keep], None, x[out], None
    return x[keep], labels[keep], x[out], labels[out]


def with_fixed_test(
    source: str, x: np.ndarray, labels: np.ndarray | None, n_test: int
) -> RawSplits:
    """RawSplits whose test split is n_test rows of x chosen with the fixed TEST_SEED."""
    train, train_labels, test, test_labels = holdout(x, labels, n_test, TEST_SEED)
    return RawSplits(source, train, test, train_labels, test_labels)


def split_validation(raw: RawSplits, val_fraction: float, seed: int) -> RawSplits:
    """Hold out val_fraction of train as val (seeded), unless raw has an official val split."""
    if raw.val is not None:
        return raw
    n_val = split_count(len(raw.train), val_fraction)
    train, train_labels, val, val_labels = holdout(raw.train, raw.train_labels, n_val, seed)
    return RawSplits(
        raw.source, train, raw.test, train_labels, raw.test_labels, val, val_labels
    )


def check_finite(raw: RawSplits) -> None:
    """Raise KlvaeError when any array of raw holds NaN or Inf."""
    bad = sum(int(np.count_nonzero(~np.isfinite(a))) for a in raw.arrays())
    if bad:
        raise KlvaeError(
            f"{raw.source} contains {bad} non-finite values (NaN or Inf); "
            "remove or impute them before loading"
        )


def check_sizes(raw: RawSplits) -> None:
    """Raise KlvaeError when a split has fewer than MIN_SPLIT_SIZE rows."""
    for split, a in (("train", raw.train), ("val", raw.val), ("test", raw.test)):
        if a is not None and len(a) < MIN_SPLIT_SIZE:
            raise KlvaeError(
                f"{raw.source} has {len(a)} samples in its {split} split; "
                f"each split needs at least {MIN_SPLIT_SIZE}, so provide more data"
            )
