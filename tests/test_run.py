"""The run directory: atomic writes, loading without pickle, and clear errors for damaged runs."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from klvae import KlvaeError, load
from klvae.config import TrainConfig
from klvae.models import ModelSpec, build_model
from klvae.run import atomic_save, atomic_write, save_config, save_model


def write_run(run_dir):
    spec = ModelSpec(event_shape=[1, 8, 8], latent_dim=3, hidden=[16])
    model = build_model(spec)
    save_config(run_dir, TrainConfig(latent_dim=3, hidden=[16]))
    save_model(run_dir, model, spec)
    return model


def test_saved_model_loads_back_with_equal_weights_and_no_pickle(tmp_path):
    model = write_run(tmp_path)
    loaded = load(tmp_path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert set(load_file(tmp_path / "model.safetensors")) == set(model.state_dict())
    assert json.loads((tmp_path / "model.json").read_text())["latent_dim"] == 3


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "metrics.csv", "old\n")

    def explode(buf):
        buf.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save(target, explode)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_damaged_weights_are_a_one_line_error(tmp_path):
    write_run(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(KlvaeError, match="cannot load the model .*retrain"):
        load(tmp_path)


def test_a_directory_that_is_not_a_run_is_named_with_what_is_missing(tmp_path):
    with pytest.raises(KlvaeError, match="missing config.yaml, model.safetensors, model.json"):
        load(tmp_path)
    with pytest.raises(KlvaeError, match="does not exist"):
        load(tmp_path / "nope")
