"""The IDX parser and the MNIST-like loaders on small files written here."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from klvae.data import idx, load_dataset
from klvae.data.idx import read_idx
from klvae.errors import KlvaeError


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_values_and_shape(tmp_path, idx_tools, compress):
    a = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    path = idx_tools.write_idx(tmp_path / "x-idx3-ubyte", a, compress)
    assert path.suffix == (".gz" if compress else "")
    np.testing.assert_array_equal(read_idx(path, 3), a)


def test_read_idx_labels(tmp_path, idx_tools):
    y = np.array([5, 0, 4, 1, 9], np.uint8)
    np.testing.assert_array_equal(read_idx(idx_tools.write_idx(tmp_path / "y", y), 1), y)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_idx_is_an_error_naming_the_file(tmp_path, idx_tools, compress):
    data = idx_tools.idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100]
    path = tmp_path / ("short.gz" if compress else "short")
    path.write_bytes(gzip.compress(data) if compress else data)
    msg = r"short(\.gz)? is truncated or corrupt .*download it again"
    with pytest.raises(KlvaeError, match=msg):
        read_idx(path, 3)


def test_header_shorter_than_declared_is_an_error(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(KlvaeError, match="truncated"):
        read_idx(path, 3)


def test_cut_gzip_stream_is_an_error(tmp_path, idx_tools):
    full = gzip.compress(idx_tools.idx_bytes(np.ones((50, 28, 28), np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(KlvaeError, match=r"cut\.gz is a truncated or corrupt gzip file"):
        read_idx(path, 3)


def test_bad_magic_number_is_an_error(tmp_path, idx_tools):
    labels = idx_tools.write_idx(tmp_path / "labels", np.arange(6, dtype=np.uint8))
    with pytest.raises(KlvaeError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(labels, 3)


def test_mnist_from_small_gz_files(tmp_path, idx_tools):
    arrays = idx_tools.write_set(tmp_path / "mnist", n_train=20, n_test=5)
    ds = load_dataset("mnist", data_dir=tmp_path, binarize="none", val_fraction=0.25)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 5)
    assert ds.event_shape == (1, 28, 28) and ds.train.dtype == torch.float32
    assert ds.train_labels.dtype == torch.int64
    expected_test = arrays["t10k-images-idx3-ubyte"][:, None] / 255.0
    np.testing.assert_allclose(ds.test.numpy(), expected_test, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # train and val partition the training file, each keeping its row order
    both = torch.cat([ds.train, ds.val]) * 255
    got = sorted(map(tuple, both.round().to(torch.uint8).reshape(20, -1).tolist()))
    want = sorted(map(tuple, arrays["train-images-idx3-ubyte"].reshape(20, -1).tolist()))
    assert got == want


def test_uncompressed_files_are_accepted(tmp_path, idx_tools):
    arrays = idx_tools.write_set(tmp_path / "mnist", compress=False)
    ds = load_dataset("mnist", data_dir=tmp_path, binarize="none")
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_image_and_label_counts_must_agree(tmp_path, idx_tools):
    idx_tools.write_set(tmp_path / "mnist")
    idx_tools.write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(KlvaeError, match="has 5 images but .* has 4 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_files_name_the_folder_and_the_fixes(tmp_path):
    msg = (r"mnist files not found in .*mnist; put the 4 IDX files there, "
           r"set KLVAE_DATA or --data-dir, or pass --download")
    with pytest.raises(KlvaeError, match=msg):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_mnist_falls_back_to_the_system_folder(tmp_path, idx_tools, monkeypatch):
    system = tmp_path / "usr-share" / "fashion-mnist"
    arrays = idx_tools.write_set(system, seed=3)
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", [system])
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(KlvaeError, match="mnist files not found"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


def test_file_that_is_not_idx_is_an_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(KlvaeError, match="magic number 0x89504e47"):
        read_idx(path, 3)
