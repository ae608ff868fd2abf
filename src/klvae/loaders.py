"""Loaders that batch an in-memory tensor by indexing: one indexing op per batch, no per-sample
collate."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from klvae.errors import KlvaeError


MAX_WORKERS = 4


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


def loader(x: torch.Tensor, batch_size: int, shuffle: bool, labels: torch.Tensor | None = None,
           bucket: int | None = None, workers: int | None = None) -> DataLoader:
    """Batches of x: (N, *event), or of (x, labels) pairs when ``labels`` (N,) are given (a
    conditional model); Lightning swaps in a DistributedSampler under DDP. Rows of token ids
    (int64, padded with 0) are shuffled in buckets of similar length: consecutive runs of
    ``bucket`` rows (the training batch) hold texts of about one length. x may be any object read
    like a tensor (images read from disk on indexing); ``workers`` processes read its batches
    (None: :func:`worker_count`)."""
    workers = worker_count(x) if workers is None else workers
    reading = {"num_workers": workers, "persistent_workers": workers > 0, "collate_fn": _keep}
    if shuffle and not x.is_floating_point() and x.dim() == 2:
        sampler = BucketSampler((x != 0).sum(1), bucket or batch_size)
        return DataLoader(IndexedTensor(x, labels), batch_size=batch_size, sampler=sampler, **reading)
    return DataLoader(IndexedTensor(x, labels), batch_size=batch_size, shuffle=shuffle, **reading)


def worker_count(x) -> int:
    """Reading processes for x: none for data in memory, up to MAX_WORKERS for data read from disk."""
    if getattr(x, "cached", True):
        return 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1)))


class BucketSampler(Sampler[int]):
    """Each epoch: a random permutation, cut into pools of ``POOL`` batches; each pool sorted by
    length and cut into batches of ``batch`` rows; the full batches in random order, the short
    ones last. A batch then pads little, and the order still changes every epoch."""

    POOL = 50

    def __init__(self, lengths: torch.Tensor, batch: int):
        self.lengths, self.batch = lengths, batch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths))
        batches = []
        for pool in order.split(self.POOL * self.batch):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += list(pool.split(self.batch))
        full = [batches[i] for i in torch.randperm(len(batches)).tolist() if len(batches[i]) == self.batch]
        for b in full + [b for b in batches if len(b) < self.batch]:  # a short batch last: the rest stay aligned
            yield from b.tolist()


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of a loader's batch; labels None for a batch of x alone."""
    return (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
