"""load_dataset's options, the registry and the data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from klvae.data import BINARIZE_MODES, Dataset, list_datasets, load_dataset, resolve_data_dir
from klvae.errors import KlvaeError

NAMES = ["digits", "mnist", "fashion-mnist", "binarized-mnist", "frey-face", "pendulum", "arm", "dsprites",
         "dsprites-generated", "colour-shapes", "lfw-faces", "lfw-nonfaces", "wordnet-definitions", "wordnet-examples",
         "moses", "celeba"]


def test_list_datasets_names_and_descriptions():
    entries = list_datasets()
    assert [name for name, _ in entries] == NAMES
    assert all(isinstance(d, str) and d and "\n" not in d for _, d in entries)


def test_binarize_modes():
    assert BINARIZE_MODES == ("auto", "dynamic", "static", "none")


def test_unknown_name_lists_the_choices():
    msg = (r"unknown dataset 'mnits' \(did you mean 'mnist'\?\); "
           r"choose one of: digits, mnist, .*klvae datasets")
    with pytest.raises(KlvaeError, match=msg):
        load_dataset("mnits")


def test_names_are_case_and_underscore_tolerant():
    assert load_dataset("DIGITS").name == "digits"


@pytest.mark.parametrize("mode", ["dyn", "Dynamic", "", None])
def test_bad_binarize_is_an_error(mode):
    msg = "unknown binarize mode .*; choose one of: auto, dynamic, static, none"
    with pytest.raises(KlvaeError, match=msg):
        load_dataset("digits", binarize=mode)


@pytest.mark.parametrize("fraction", [0, 0.6, -0.1, float("nan"), True, "0.1", None])
def test_bad_val_fraction_is_an_error(fraction):
    with pytest.raises(KlvaeError, match=r"val_fraction must be in \(0, 0.5\]"):
        load_dataset("digits", val_fraction=fraction)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed_is_an_error(seed):
    with pytest.raises(KlvaeError, match="seed must be a non-negative integer"):
        load_dataset("digits", seed=seed)


def test_val_fraction_sets_the_val_size():
    ds = load_dataset("digits", val_fraction=0.5)
    assert (len(ds.train), len(ds.val)) == (750, 750)


def test_options_are_checked_before_files_are_read(tmp_path):
    with pytest.raises(KlvaeError, match="val_fraction"):
        load_dataset("mnist", data_dir=tmp_path, val_fraction=0.9)


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("KLVAE_DATA", raising=False)
    assert resolve_data_dir() == Path("data")
    monkeypatch.setenv("KLVAE_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    assert resolve_data_dir("~/d") == Path.home() / "d"


def test_env_variable_reaches_load_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("KLVAE_DATA", str(tmp_path))
    with pytest.raises(KlvaeError, match=f"frey-face file not found: {tmp_path}"):
        load_dataset("frey-face")


def test_dataset_repr_and_train_batch():
    x = torch.full((4, 3), 0.5)
    ds = Dataset("toy", x, x[:1], x[:1], None, None, None, binarize="none", binary=False)
    assert repr(ds) == ("Dataset(name='toy', train=4, val=1, test=1, event_shape=(3,), "
                        "binarize='none', binary=False)")
    assert ds.train_batch(x) is x
    ds.binarize = "dynamic"
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(ds.train_batch(x, g1), ds.train_batch(x, g2))
