"""Binarized MNIST: the real npz (checked against its facts) and small .amat files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from klvae.data import load_dataset
from klvae.errors import KlvaeError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def binarized(shared_data):
    root = shared_data("binarized-mnist", "binarized_mnist.npz")
    return root, load_dataset("binarized-mnist", data_dir=root)


def test_official_split_and_counts_of_ones(binarized):
    _, ds = binarized
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50000, 10000, 10000)
    assert ds.event_shape == (1, 28, 28) and ds.train.dtype == torch.float32
    ones = [int(t.sum().item()) for t in (ds.train, ds.val, ds.test)]
    assert ones == [5_118_041, 1_028_036, 1_038_896]
    assert all(((t == 0) | (t == 1)).all() for t in (ds.train, ds.val, ds.test))


def test_binary_data_needs_no_binarisation(binarized):
    _, ds = binarized
    assert ds.binarize == "none" and ds.binary
    x = ds.train[:16]
    assert torch.equal(ds.train_batch(x, torch.Generator().manual_seed(0)), x)


def test_options_do_not_change_the_official_split(binarized):
    root, ds = binarized
    other = load_dataset("binarized-mnist", data_dir=root, binarize="dynamic", val_fraction=0.3,
                         seed=7)
    assert other.binarize == "none" and other.binary
    assert torch.equal(other.val, ds.val) and torch.equal(other.test, ds.test)


def test_inferred_labels_sum_to_mnist_counts(binarized):
    _, ds = binarized
    counts = torch.bincount(torch.cat([ds.train_labels, ds.val_labels]), minlength=10)
    assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert ds.test_labels[:5].tolist() == [0] * 5  # the test set is ordered by digit


def _images(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 784)) < 0.2).astype(np.uint8)


def _write_text_amat(path, x: np.ndarray) -> None:
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in x))


def test_text_amat_files(tmp_path):
    folder = tmp_path / "binarized-mnist"
    folder.mkdir()
    splits = {"train": _images(6, 0), "valid": _images(3, 1), "test": _images(4, 2)}
    for split, x in splits.items():
        _write_text_amat(folder / f"binarized_mnist_{split}.amat", x)
    ds = load_dataset("binarized-mnist", data_dir=tmp_path)
    for got, split in ((ds.train, "train"), (ds.val, "valid"), (ds.test, "test")):
        np.testing.assert_array_equal(got.numpy().reshape(-1, 784), splits[split])
    assert ds.train_labels is None and ds.binary and ds.binarize == "none"


@pytest.mark.parametrize("key", ["X", "data"])
def test_matlab_files_named_amat(tmp_path, key):
    folder = tmp_path / "binarized-mnist"
    folder.mkdir()
    splits = {"train": _images(5, 3), "valid": _images(2, 4), "test": _images(2, 5)}
    for split, x in splits.items():
        scipy.io.savemat(folder / f"binarized_mnist_{split}.amat", {key: x})
        assert (folder / f"binarized_mnist_{split}.amat").read_bytes().startswith(b"MATLAB")
    ds = load_dataset("binarized-mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.test.numpy().reshape(-1, 784), splits["test"])
    np.testing.assert_array_equal(ds.val.numpy().reshape(-1, 784), splits["valid"])


def test_ragged_amat_is_an_error(tmp_path):
    folder = tmp_path / "binarized-mnist"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        _write_text_amat(folder / f"binarized_mnist_{split}.amat", _images(3, 0))
    with open(folder / "binarized_mnist_valid.amat", "a") as f:
        f.write("0 1 0\n")
    with pytest.raises(KlvaeError, match=r"binarized_mnist_valid\.amat is not a valid \.amat file"):
        load_dataset("binarized-mnist", data_dir=tmp_path)


def test_grey_values_are_an_error(tmp_path):
    folder = tmp_path / "binarized-mnist"
    folder.mkdir()
    np.savez(folder / "binarized_mnist.npz", train=_images(4, 0) * 3, valid=_images(2, 1),
             test=_images(2, 2))
    with pytest.raises(KlvaeError, match="holds values other than 0 and 1"):
        load_dataset("binarized-mnist", data_dir=tmp_path)


def test_missing_key_and_missing_files_are_errors(tmp_path):
    folder = tmp_path / "binarized-mnist"
    with pytest.raises(KlvaeError, match="binarized-mnist not found in .*binarized_mnist.npz"):
        load_dataset("binarized-mnist", data_dir=tmp_path)
    folder.mkdir()
    np.savez(folder / "binarized_mnist.npz", train=_images(4, 0), test=_images(2, 2))
    with pytest.raises(KlvaeError, match="lacks the array.* valid"):
        load_dataset("binarized-mnist", data_dir=tmp_path)
