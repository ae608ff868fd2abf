"""digits (scikit-learn) and Frey Face: values, fixed test splits, seeds and binarisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from klvae.data import load_dataset
from klvae.data.frey import read_frey


def _all(ds) -> torch.Tensor:
    return torch.cat([ds.train, ds.val, ds.test])


@pytest.fixture(scope="module")
def frey_root(shared_data):
    return shared_data("frey-face", "frey_face.npz")


def test_digits_values_shapes_and_labels():
    ds = load_dataset("digits", binarize="none")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1350, 150, 297)
    assert ds.event_shape == (1, 8, 8) and not ds.binary
    x, y = load_digits(return_X_y=True)
    assert (_all(ds).double() * 16).round().sum().item() == x.sum()
    assert 0 <= _all(ds).min() and _all(ds).max() == 1
    labels = torch.cat([ds.train_labels, ds.val_labels, ds.test_labels])
    assert torch.bincount(labels).tolist() == np.bincount(y.astype(int)).tolist()


def test_same_seed_same_split_other_seed_other_val():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert torch.equal(a.val_labels, b.val_labels)
    assert not torch.equal(a.val_labels, c.val_labels)
    assert torch.equal(a.test, c.test)  # the test split and its binarisation ignore the seed


def test_dynamic_digits_binarise_val_and_test_once():
    ds = load_dataset("digits")
    grey = load_dataset("digits", binarize="none")
    assert ds.binarize == "dynamic" and ds.binary
    assert torch.equal(ds.train, grey.train)  # train stays grey in memory
    assert ((ds.test == 0) | (ds.test == 1)).all()
    assert (ds.test[grey.test == 0] == 0).all() and (ds.test[grey.test == 1] == 1).all()
    assert not torch.equal(ds.train_batch(ds.train), ds.train_batch(ds.train))


@pytest.mark.parametrize("name", ["digits", "frey-face"])
def test_static_binarisation_thresholds_at_half(name, shared_data):
    root = shared_data("frey-face", "frey_face.npz") if name == "frey-face" else None
    static = load_dataset(name, data_dir=root, binarize="static", seed=1)
    grey = load_dataset(name, data_dir=root, binarize="none", seed=1)
    assert static.binarize == "static" and static.binary
    for s, g in ((static.train, grey.train), (static.val, grey.val), (static.test, grey.test)):
        assert torch.equal(s, (g > 0.5).float())
    assert torch.equal(static.train_batch(static.train), static.train)


def test_frey_face_values_match_the_published_facts(frey_root):
    ds = load_dataset("frey-face", data_dir=frey_root)
    assert (len(ds.train) + len(ds.val) + len(ds.test)) == 1965
    assert ds.event_shape == (1, 28, 20) and ds.train_labels is None
    assert ds.binarize == "none" and not ds.binary
    assert (_all(ds).double() * 255).round().sum().item() == 169_968_741
    first = read_frey(frey_root / "frey-face" / "frey_face.npz")[0, 0, :6]
    assert first.tolist() == [81, 136, 167, 185, 187, 193]
    # rows keep their order, so frame 0 leads whichever split holds it
    leads = [(t[0, 0, 0, :6] * 255).round().tolist() for t in (ds.train, ds.val, ds.test)]
    assert first.tolist() in leads


def test_frey_face_test_split_is_fixed(frey_root):
    a = load_dataset("frey-face", data_dir=frey_root, seed=0, val_fraction=0.2)
    b = load_dataset("frey-face", data_dir=frey_root, seed=9, val_fraction=0.1)
    assert torch.equal(a.test, b.test) and len(a.test) == 196
    assert len(a.val) == 354 and len(b.val) == 177
