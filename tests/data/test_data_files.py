"""User data files: .npy, .npz and .csv, their shapes, splits and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klvae.data import load_dataset
from klvae.errors import KlvaeError


def _rows(ds) -> list[tuple]:
    both = torch.cat([ds.train, ds.val, ds.test]).flatten(1)
    return sorted(map(tuple, both.tolist()))


def test_npy_rows_are_split_without_loss(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 2)
    assert ds.event_shape == (3,) and ds.binarize == "none" and not ds.binary
    assert ds.train_labels is None and ds.name == str(tmp_path / "x.npy")
    assert _rows(ds) == sorted(map(tuple, x.tolist()))
    other = load_dataset(tmp_path / "x.npy", seed=5)
    assert torch.equal(other.test, ds.test)  # the test split ignores the run seed


@pytest.mark.parametrize("shape, event", [((12, 5, 4), (1, 5, 4)), ((12, 3, 5, 4), (3, 5, 4))])
def test_image_arrays_get_a_channel_axis(tmp_path, shape, event):
    np.save(tmp_path / "img.npy", np.random.default_rng(1).random(shape))
    ds = load_dataset(str(tmp_path / "img.npy"))
    assert ds.event_shape == event and ds.train.dtype == torch.float32


def test_npz_prefers_key_x_and_reads_labels(tmp_path):
    x = np.arange(60, dtype=np.float64).reshape(30, 2)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", other=np.zeros((30, 9)), x=x, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.event_shape == (2,)
    for data, labels in ((ds.train, ds.train_labels), (ds.test, ds.test_labels)):
        np.testing.assert_array_equal(labels.numpy(), (data[:, 0].numpy() / 2).astype(int) % 3)


def test_npz_falls_back_to_its_first_array(tmp_path):
    np.savez(tmp_path / "d.npz", first=np.ones((10, 4)), second=np.zeros((10, 2)))
    assert load_dataset(str(tmp_path / "d.npz")).event_shape == (4,)


def test_binary_file_uses_bernoulli_without_binarising(tmp_path):
    x = (np.random.default_rng(2).random((40, 6)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "b.npy", x)
    ds = load_dataset(str(tmp_path / "b.npy"), binarize="dynamic")
    assert ds.binary and ds.binarize == "none"


def test_binarising_needs_values_in_unit_interval(tmp_path):
    np.save(tmp_path / "z.npy", np.linspace(-1, 2, 30).reshape(15, 2))
    with pytest.raises(KlvaeError, match=r"binarize='static' needs values in \[0, 1\] .*\[-1, 2\]"):
        load_dataset(str(tmp_path / "z.npy"), binarize="static")
    np.save(tmp_path / "u.npy", np.linspace(0, 1, 30).reshape(15, 2))
    assert load_dataset(str(tmp_path / "u.npy"), binarize="dynamic").binarize == "dynamic"


def test_csv_with_and_without_header(tmp_path):
    x = np.round(np.random.default_rng(3).random((12, 3)), 4)
    body = "".join(",".join(map(str, r)) + "\n" for r in x)
    (tmp_path / "h.csv").write_text("a,b,c\n" + body)
    (tmp_path / "n.csv").write_text(body)
    for name in ("h.csv", "n.csv"):
        ds = load_dataset(str(tmp_path / name))
        assert ds.event_shape == (3,)
        assert _rows(ds) == sorted(map(tuple, x.astype(np.float32).tolist()))


def test_non_numeric_csv_names_the_line(tmp_path):
    lines = ["a,b"] + [f"{i},{i}" for i in range(12)]
    lines[3] = "1,oops"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(KlvaeError, match=r"bad\.csv line 4 is not numeric \('1,oops'\)"):
        load_dataset(str(tmp_path / "bad.csv"))


def test_ragged_csv_names_the_line(tmp_path):
    lines = [f"{i},{i}" for i in range(12)]
    lines[6] = "1,2,3"
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(KlvaeError, match="line 7 has 3 values where earlier lines have 2"):
        load_dataset(str(tmp_path / "r.csv"))


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_non_finite_values_are_an_error(tmp_path, suffix):
    x = np.ones((20, 3))
    x[4, 1], x[9, 2] = np.nan, np.inf
    path = tmp_path / f"nan{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savetxt(path, x, delimiter=",")
    with pytest.raises(KlvaeError, match=r"nan\.(npy|csv) contains 2 non-finite values"):
        load_dataset(str(path))


def test_too_few_rows_is_an_error(tmp_path):
    np.save(tmp_path / "few.npy", np.ones((5, 2)))
    with pytest.raises(KlvaeError, match="has 5 rows; at least 10"):
        load_dataset(str(tmp_path / "few.npy"))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(KlvaeError, match=r"data file not found: .*nothere\.npy; check the path"):
        load_dataset(str(tmp_path / "nothere.npy"))


def test_bad_contents_are_errors(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]] * 12))
    with pytest.raises(KlvaeError, match="holds <U1 values; save the data as a numeric array"):
        load_dataset(str(tmp_path / "s.npy"))
    np.save(tmp_path / "v.npy", np.ones(30))
    with pytest.raises(KlvaeError, match=r"shape \(30,\); expected \(N, D\)"):
        load_dataset(str(tmp_path / "v.npy"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(KlvaeError, match="cannot read .*broken.npz"):
        load_dataset(str(tmp_path / "broken.npz"))
    (tmp_path / "x.json").write_text("[1, 2]\n")  # (a .txt file is text: one sentence per line)
    with pytest.raises(KlvaeError, match=r"unsupported data file type '\.json'"):
        load_dataset(str(tmp_path / "x.json"))
