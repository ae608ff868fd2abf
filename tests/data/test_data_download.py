"""download_idx with a stand-in for urlopen: no test touches the network."""

from __future__ import annotations

import gzip
import hashlib
import io
from urllib.error import URLError

import numpy as np
import pytest

from klvae.data import download, load_dataset
from klvae.data.download import IDX_STEMS, download_idx
from klvae.errors import KlvaeError


@pytest.fixture
def fake_mirror(monkeypatch, idx_tools):
    """Serve a tiny MNIST set as the mnist mirror, with matching md5s; records the URLs asked."""
    rng = np.random.default_rng(1)
    arrays = {
        IDX_STEMS["train_images"]: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        IDX_STEMS["train_labels"]: rng.integers(0, 10, 10, dtype=np.uint8),
        IDX_STEMS["test_images"]: rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        IDX_STEMS["test_labels"]: rng.integers(0, 10, 4, dtype=np.uint8),
    }
    served = {f"https://mirror.test/{stem}.gz": gzip.compress(idx_tools.idx_bytes(a))
              for stem, a in arrays.items()}
    asked: list[str] = []

    def urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(served[url])

    monkeypatch.setattr(download, "urlopen", urlopen)
    monkeypatch.setitem(download.MIRRORS, "mnist", "https://mirror.test/")
    md5 = {url.rsplit("/", 1)[1]: hashlib.md5(data).hexdigest() for url, data in served.items()}
    monkeypatch.setitem(download.MD5, "mnist", md5)
    return arrays, asked


def test_download_writes_verified_files(tmp_path, fake_mirror):
    arrays, asked = fake_mirror
    folder = download_idx("mnist", tmp_path)
    assert folder == tmp_path / "mnist" and len(asked) == 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.gz" for s in arrays)
    ds = load_dataset("mnist", data_dir=tmp_path, binarize="none")
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays[IDX_STEMS["test_labels"]])


def test_download_keeps_files_already_there(tmp_path, fake_mirror, idx_tools):
    _, asked = fake_mirror
    idx_tools.write_idx(tmp_path / "mnist" / IDX_STEMS["test_labels"], np.zeros(4, np.uint8),
                        compress=False)
    download_idx("mnist", tmp_path)
    assert len(asked) == 3 and not any("t10k-labels" in url for url in asked)


def test_load_dataset_downloads_only_when_asked(tmp_path, fake_mirror):
    _, asked = fake_mirror
    with pytest.raises(KlvaeError, match="pass --download"):
        load_dataset("mnist", data_dir=tmp_path)
    assert asked == []
    ds = load_dataset("mnist", data_dir=tmp_path, download=True)
    assert len(asked) == 4 and len(ds.test) == 4


def test_md5_mismatch_is_an_error_and_leaves_no_file(tmp_path, fake_mirror, monkeypatch):
    monkeypatch.setitem(download.MD5["mnist"], "train-images-idx3-ubyte.gz", "0" * 32)
    with pytest.raises(KlvaeError, match=r"train-images-idx3-ubyte\.gz has md5 [0-9a-f]{32}, "
                                         r"expected 0{32}; try again"):
        download_idx("mnist", tmp_path)
    assert not any("train-images" in p.name for p in (tmp_path / "mnist").iterdir())


def test_network_failure_is_an_error(tmp_path, monkeypatch):
    def urlopen(url, timeout):
        raise URLError("no route to host")

    monkeypatch.setattr(download, "urlopen", urlopen)
    with pytest.raises(KlvaeError, match="could not download .*no route to host.*by hand"):
        download_idx("fashion-mnist", tmp_path)
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_unknown_download_name_is_an_error(tmp_path):
    with pytest.raises(KlvaeError, match="no download for 'frey-face'; choose one of: mnist"):
        download_idx("frey-face", tmp_path)


def test_canonical_checksums_cover_every_file():
    for name in ("mnist", "fashion-mnist"):
        assert sorted(download.MD5[name]) == sorted(f"{s}.gz" for s in IDX_STEMS.values())
    assert download.MD5["mnist"]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
