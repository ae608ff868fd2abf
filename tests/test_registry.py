"""Registries and composed configs: entries, capabilities, one-line errors with the closest name,
and flat or nested configs that mean the same."""
from __future__ import annotations

import pytest
import yaml

from klvae import KlvaeError, TrainConfig
from klvae.config import flat_keys
from klvae.models import HVAEConfig, VAEConfig
from klvae.plugins import REGISTRIES
from klvae.registry import Registry


def test_an_entry_carries_its_builder_description_and_capabilities():
    registry = Registry("widget", "--widget")
    registry.register("round", "a round widget", dict, sides=0)

    @registry.register("square", "a square widget", sides=4)
    def square():
        return "square"

    assert registry["square"].builder() == "square" and registry["square"].sides == 4
    assert registry.names() == ("round", "square") and registry.where(lambda e: e.sides > 0) == ("square",)
    with pytest.raises(KlvaeError, match="widget 'round' is already registered"):
        registry.register("round", "again", dict)
    with pytest.raises(KlvaeError, match=r"widget must be one of round, square; got 'sqare' \(did you mean 'square'\?\)"):
        registry["sqare"]
    with pytest.raises(KlvaeError, match="one line"):
        registry.register("tri", "two\nlines", dict)


def test_every_built_in_entry_has_a_one_line_description():
    for registry in REGISTRIES.values():
        assert len(registry) > 0
        for entry in registry.entries():
            assert entry.description and "\n" not in entry.description, (registry.kind, entry.name)


def test_flat_and_nested_yaml_give_the_same_config(tmp_path):
    flat = {"data": "digits", "model": "hvae", "latent_dims": [4, 2], "objective": "iwae", "k": 3, "epochs": 2}
    nested = {"data": {"name": "digits"}, "model": {"name": "hvae", "latent_dims": [4, 2]},
              "objective": {"name": "iwae", "k": 3}, "trainer": {"epochs": 2}}
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    (tmp_path / "nested.yaml").write_text(yaml.safe_dump(nested))
    a, b = TrainConfig.from_yaml(tmp_path / "flat.yaml"), TrainConfig.from_yaml(tmp_path / "nested.yaml")
    assert a == b
    assert isinstance(a.model, HVAEConfig) and a.model.latent_dim == 6 and a.objective.k == 3
    assert a.latent_dims == [4, 2] and a.epochs == 2  # a flat key reads from its section
    assert TrainConfig.from_dict(a.to_dict()) == a == TrainConfig.from_dict(a.to_flat_dict())


def test_each_flat_key_belongs_to_one_section_and_the_model_owns_its_options():
    keys = flat_keys()
    assert keys["latent_dim"][0] == "model" and keys["beta"][0] == "objective" and keys["out"][0] == "output"
    assert keys["residual"][0] == "model" and "residual" not in {f.name for f in VAEConfig.options()}
    config = TrainConfig(latent_dim=5)
    assert isinstance(config.model, VAEConfig) and not isinstance(config.model, HVAEConfig)
    with pytest.raises(AttributeError, match="did you mean 'latent_dim'"):
        config.latent_dm


def test_a_nested_section_with_an_unknown_key_is_a_one_line_error():
    with pytest.raises(KlvaeError, match=r"unknown config key\(s\) trainer.epoch \(did you mean 'epochs'\?\)"):
        TrainConfig.from_dict({"trainer": {"epoch": 3}})
    with pytest.raises(KlvaeError, match=r"model.latnt_dim \(did you mean 'latent_dim'\?\)"):
        TrainConfig.from_dict({"model": {"name": "vae", "latnt_dim": 3}})
