"""Data sets as in-memory tensors: registry, loaders, splits and binarisation.

>>> ds = load_dataset("digits", binarize="dynamic", seed=0)
>>> ds.train.shape, ds.binary
(torch.Size([1350, 1, 8, 8]), True)
"""

from klvae.data.dataset import BINARIZE_MODES, Dataset
from klvae.data.registry import data_kind, list_datasets, load_dataset, resolve_data_dir

__all__ = ["BINARIZE_MODES", "Dataset", "data_kind", "list_datasets", "load_dataset", "resolve_data_dir"]
