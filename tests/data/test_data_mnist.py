"""MNIST and Fashion-MNIST from the real files, checked against their published facts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klvae.data import load_dataset
from klvae.data.idx import read_idx

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_root(shared_data):
    return shared_data("mnist", *IDX_FILES)


@pytest.fixture(scope="module")
def mnist(mnist_root):
    return load_dataset("mnist", data_dir=mnist_root, binarize="dynamic", seed=0)


@pytest.fixture(scope="module")
def fashion(shared_data):
    root = shared_data("fashion-mnist", *IDX_FILES)
    return root, load_dataset("fashion-mnist", data_dir=root, binarize="none", seed=0)


def test_mnist_label_order_matches_the_published_facts(mnist_root, mnist):
    train_labels = read_idx(mnist_root / "mnist" / IDX_FILES[1], 1)
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist_split_sizes_shapes_and_label_counts(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (54000, 6000, 10000)
    assert mnist.event_shape == (1, 28, 28) and mnist.train.dtype == torch.float32
    labels = torch.cat([mnist.train_labels, mnist.val_labels])
    assert labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels).tolist() == MNIST_TEST_COUNTS


def test_mnist_train_and_val_are_the_seeded_holdout_of_the_training_file(mnist_root, mnist):
    """val: 6,000 rows picked by a permutation seeded 0; train (grey): the rest, in order."""
    raw = read_idx(mnist_root / "mnist" / IDX_FILES[0], 3)
    val_rows = np.sort(np.random.default_rng(0).permutation(60000)[:6000])
    keep = np.setdiff1d(np.arange(60000), val_rows)
    train_pixels = (mnist.train[:, 0] * 255).round().to(torch.uint8)
    assert torch.equal(train_pixels, torch.from_numpy(raw[keep]))
    grey_val = torch.from_numpy(raw[val_rows])[:, None]
    assert (mnist.val[grey_val == 0] == 0).all() and (mnist.val[grey_val == 255] == 1).all()
    labels = read_idx(mnist_root / "mnist" / IDX_FILES[1], 1)
    assert mnist.val_labels.tolist() == labels[val_rows].tolist()


def test_mnist_mean_pixel_over_the_whole_training_file(mnist_root):
    raw = read_idx(mnist_root / "mnist" / IDX_FILES[0], 3)
    assert raw.shape == (60000, 28, 28)
    assert round(float(raw.mean(dtype=np.float64)) / 255, 4) == 0.1307


def test_dynamic_binarisation_draws_fresh_binary_batches(mnist):
    assert mnist.binarize == "dynamic" and mnist.binary
    g = torch.Generator().manual_seed(123)
    a, b = mnist.train_batch(mnist.train, g), mnist.train_batch(mnist.train, g)
    assert not torch.equal(a, b)
    for draw in (a, b):
        assert ((draw == 0) | (draw == 1)).all() and draw.any()
        assert abs(draw.mean().item() - mnist.train.mean().item()) < 1e-3
    again = mnist.train_batch(mnist.train[:100], torch.Generator().manual_seed(123))
    assert torch.equal(again, a[:100])  # a seeded generator reproduces the draw


def test_dynamic_val_and_test_are_binary_with_the_grey_mean(mnist_root, mnist):
    for split in (mnist.val, mnist.test):
        assert ((split == 0) | (split == 1)).all() and split.any()
    grey_test = read_idx(mnist_root / "mnist" / IDX_FILES[2], 3).astype(np.float64) / 255
    assert abs(mnist.test.double().mean().item() - grey_test.mean()) < 1e-3
    assert abs(mnist.val.double().mean().item() - 0.1307) < 3e-3


def test_dynamic_val_and_test_are_the_same_on_every_load(mnist_root, mnist):
    again = load_dataset("mnist", data_dir=mnist_root, binarize="dynamic", seed=0)
    assert torch.equal(again.val, mnist.val) and torch.equal(again.test, mnist.test)
    assert torch.equal(again.train, mnist.train)
    assert torch.equal(again.val_labels, mnist.val_labels)


def test_fashion_mnist_matches_the_published_facts(fashion):
    root, ds = fashion
    train_labels = read_idx(root / "fashion-mnist" / IDX_FILES[1], 1)
    assert train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert ds.test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    labels = torch.cat([ds.train_labels, ds.val_labels])
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    grey_levels = sum((t * 255).round().double().sum().item() for t in (ds.train, ds.val))
    assert round(grey_levels / (60000 * 784 * 255), 4) == 0.2860
    assert grey_levels == int(
        read_idx(root / "fashion-mnist" / IDX_FILES[0], 3).sum(dtype=np.int64))


def test_binarize_none_keeps_fashion_grey(fashion):
    _, ds = fashion
    assert ds.binarize == "none" and not ds.binary
    assert torch.equal(ds.train_batch(ds.train[:8]), ds.train[:8])
    assert ds.train.min() == 0 and ds.train.max() == 1
