"""The in-memory Dataset and its binarisation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from klvae.data.splits import RawSplits, check_finite, check_sizes, split_validation
from klvae.errors import KlvaeError

BINARIZE_MODES = ("auto", "dynamic", "static", "none")
EVAL_BINARIZE_SEED = 0  # val and test of a "dynamic" data set are drawn once with this seed
STATIC_THRESHOLD = 0.5


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli(p) draw per element, as ``u < p`` with u ~ U[0, 1): the same distribution as
    ``torch.bernoulli`` at a fraction of its cost on the CPU, which matters once per training step."""
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return (u < p).to(p.dtype)


@dataclass(repr=False)
class Dataset:
    """Train / val / test tensors of one data set, held in memory.

    train, val, test: (N, *event) float32 (grey images in [0, 1]), or for photographs
    :class:`~klvae.data.images.ImageFiles` that read as such a tensor; labels: (N,) int64 class
    labels, (N, F) float32 ground-truth factors (the angles of `pendulum` / `arm`), (N, F) int64
    binary attributes named by ``attributes`` (CelebA's), or None.
    binarize is the resolved mode: "dynamic" (train stays grey and is resampled per batch by
    `train_batch`; val and test were drawn once), "static" (all thresholded at 0.5) or "none".
    binary is True when the model should use a Bernoulli likelihood.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    binarize: str
    binary: bool
    attributes: list[str] | None = None  # names of the columns of (N, F) binary attribute labels (CelebA's)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. (1, 28, 28)."""
        return tuple(self.train.shape[1:])

    def value_range(self) -> tuple[float, float]:
        """(low, high) of the training data: the tensor's, or the range an image reader gives."""
        if isinstance(self.train, torch.Tensor):
            return float(self.train.min()), float(self.train.max())
        return self.train.value_range

    def train_batch(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (B, *event) as the model trains on it: a fresh Bernoulli draw when dynamic, else x.

        generator must live on x's device (None: torch's default generator).
        """
        if self.binarize == "dynamic":
            return bernoulli_draw(x, generator)
        return x

    def without_classes(self, labels: list[int]) -> "Dataset":
        """This data set with the classes ``labels`` left out of train and val; test keeps every
        class (leave-one-class-out anomaly detection scores it). Binarised draws are kept as they
        are, so val and test stay the evaluation copies. No labels given: self unchanged."""
        if not labels:
            return self
        present = class_labels(self)
        missing = sorted(set(labels) - set(present))
        if missing:
            raise KlvaeError(
                f"exclude_labels {missing} are not classes of {self.name} (its classes: "
                f"{', '.join(map(str, present))}); choose among them"
            )
        out = torch.tensor(sorted(set(labels)))
        keep_train = ~torch.isin(self.train_labels, out)
        keep_val = ~torch.isin(self.val_labels, out)
        if not keep_train.any() or not keep_val.any():
            raise KlvaeError(
                f"exclude_labels {sorted(set(labels))} leave no {self.name} data to train or validate on; keep more classes"
            )
        return replace(self, train=_rows(self.train, keep_train), train_labels=self.train_labels[keep_train],
                       val=_rows(self.val, keep_val), val_labels=self.val_labels[keep_val])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, s))}" for s in ("train", "val", "test"))
        return (
            f"Dataset(name={self.name!r}, {sizes}, event_shape={self.event_shape}, "
            f"binarize={self.binarize!r}, binary={self.binary})"
        )


def _rows(x, keep: torch.Tensor):
    """The rows of x where keep (N,) is True: a tensor's, or images read from files kept lazy."""
    return x[keep] if isinstance(x, torch.Tensor) else x.subset(keep)


def class_labels(data: Dataset) -> list[int]:
    """The sorted class labels of data's splits; KlvaeError when it has no class labels."""
    parts = [y for y in (data.train_labels, data.val_labels, data.test_labels) if y is not None]
    if not parts or any(y.is_floating_point() or y.ndim != 1 for y in parts):
        raise KlvaeError(
            f"{data.name} has no class labels, so none can be excluded; drop exclude_labels or use "
            "a labelled data set (e.g. mnist, or an .npz file with a 'y' array)"
        )
    return torch.unique(torch.cat(parts)).tolist()


def class_count(data: Dataset) -> int:
    """C, for the integer class labels 0..C-1 of data's splits: what a conditional model is
    conditioned on (``condition: label``); KlvaeError naming the fix when data has none."""
    parts = [data.train_labels, data.val_labels, data.test_labels]
    if any(y is None or y.is_floating_point() or y.ndim != 1 for y in parts):
        raise KlvaeError(
            f"condition label needs integer class labels in every split, and {data.name} has none; use a labelled "
            "data set (digits, mnist, fashion-mnist, or an .npz file with a 'y' array) or --condition none"
        )
    low = min(int(y.min()) for y in parts if len(y))
    if low < 0:
        raise KlvaeError(f"condition label needs class labels 0..C-1; {data.name} has label {low}; relabel the data")
    return max(int(y.max()) for y in parts if len(y)) + 1


def attribute_count(data: Dataset) -> int:
    """F, for the (N, F) binary attribute labels of data's splits (CelebA's 40): what a model
    conditioned on attributes reads; KlvaeError naming the fix when data have none."""
    if not data.attributes:
        raise KlvaeError(f"condition attributes needs binary attribute labels, and {data.name} has none; use a data set "
                         "with attributes (celeba, or a folder in CelebA's layout) or --condition label / none")
    return len(data.attributes)


def make_dataset(
    name: str, raw: RawSplits, binarize: str, default_binarize: str, val_fraction: float, seed: int
) -> Dataset:
    """Validate raw, split off val (seeded) and binarise: the Dataset load_dataset returns."""
    check_finite(raw)
    raw = split_validation(raw, val_fraction, seed)
    check_sizes(raw)
    mode = default_binarize if binarize == "auto" else binarize
    already_binary = all(_is_binary(a) for a in raw.arrays())
    if already_binary:
        mode = "none"
    elif mode != "none":
        _check_unit_interval(raw, mode)
    train, val, test = (_tensor(a) for a in (raw.train, raw.val, raw.test))
    if mode == "static":
        train, val, test = (_threshold(t) for t in (train, val, test))
    elif mode == "dynamic":
        g = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
        test = torch.bernoulli(test, generator=g)  # test first: its draw ignores the val split
        val = torch.bernoulli(val, generator=g)
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=test,
        train_labels=_labels(raw.train_labels),
        val_labels=_labels(raw.val_labels),
        test_labels=_labels(raw.test_labels),
        binarize=mode,
        binary=already_binary or mode in ("dynamic", "static"),
    )


def _is_binary(a: np.ndarray) -> bool:
    return bool(np.all((a == 0) | (a == 1)))


def _check_unit_interval(raw: RawSplits, mode: str) -> None:
    lo = min(float(a.min()) for a in raw.arrays())
    hi = max(float(a.max()) for a in raw.arrays())
    if lo < 0 or hi > 1:
        raise KlvaeError(
            f"binarize={mode!r} needs values in [0, 1] but {raw.source} spans [{lo:g}, {hi:g}]; "
            "rescale the data or use binarize='none'"
        )


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def _threshold(x: torch.Tensor) -> torch.Tensor:
    return (x > STATIC_THRESHOLD).to(torch.float32)


def _labels(y: np.ndarray | None) -> torch.Tensor | None:
    """Class labels as int64; real-valued ground truth (e.g. the angles of `pendulum`) as float32."""
    if y is None:
        return None
    dtype = np.float32 if np.issubdtype(np.asarray(y).dtype, np.floating) else np.int64
    return torch.from_numpy(np.asarray(y, dtype=dtype).copy())
