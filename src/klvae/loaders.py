"""Loaders that batch an in-memory tensor by indexing: one indexing op per batch, no per-sample
collate."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from klvae.errors import KlvaeError


class IndexedTensor(Dataset):
    """A tensor served by whole batches: the DataLoader's fetcher calls ``__getitems__`` with the
    sampler's batch of indices, so one indexing op replaces a per-sample loop and collate. With
    ``labels`` (N,) a batch is the tuple (x, labels) of the same rows."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is not None and len(labels) != len(x):
            raise KlvaeError(f"labels must hold one entry per data point ({len(x)}); got {len(labels)}")
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] if self.labels is None else (self.x[i], self.labels[i])

    def __getitems__(self, idx: list[int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(idx)
        return self.x[rows] if self.labels is None else (self.x[rows], self.labels[rows])


def _keep(batch):
    return batch


def loader(x: torch.Tensor, batch_size: int, shuffle: bool, labels: torch.Tensor | None = None) -> DataLoader:
    """Batches of x: (N, *event), or of (x, labels) pairs when ``labels`` (N,) are given (a
    conditional model); Lightning swaps in a DistributedSampler under DDP."""
    return DataLoader(IndexedTensor(x, labels), batch_size=batch_size, shuffle=shuffle, collate_fn=_keep)


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of a loader's batch; labels None for a batch of x alone."""
    return (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
