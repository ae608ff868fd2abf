"""TrainConfig: YAML and flag values are coerced and validated once, with one-line errors."""
from __future__ import annotations

import pytest

from klvae import KlvaeError, TrainConfig


def test_yaml_values_and_overrides_become_typed_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: digits\nlatent_dim: 8\nhidden: [64, 32]\nbeta: 4\nlr: 1e-3\n")
    config = TrainConfig.from_yaml(path, epochs="7", beta="0.5")
    assert config.latent_dim == 8 and config.hidden == [64, 32]
    assert config.epochs == 7 and config.beta == 0.5 and isinstance(config.lr, float)


def test_round_trip_through_a_dict_keeps_every_field():
    config = TrainConfig(latent_dim=5, beta=2.0, hidden=[10], devices="2")
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"latent_dim": 0}, "latent_dim must be a positive integer"),
        ({"epochs": "2.5"}, "epochs must be of type int"),
        ({"beta": "abc"}, "beta must be of type float"),
        ({"beta": -1}, "beta must be >= 0"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"lr": 0}, r"lr must be in \(0, 10\)"),
        ({"val_fraction": 0.9}, r"val_fraction must be in \(0, 0.5\]"),
        ({"net": "resnet"}, "net must be one of auto, mlp, conv"),
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"model": "foo"}, "model must be one of vae"),
        ({"hidden": "a b"}, "hidden must be of type list"),
        ({"hidden": [0]}, "hidden must be a list of positive layer widths"),
        ({"devices": "two"}, "devices must be 'auto' or a positive integer"),
        ({"decoder_scale": -0.1}, "decoder_scale must be > 0"),
        ({"resume": "maybe"}, "resume must be of type bool"),
        ({"latent_dims": 3}, "latent_dims must be of type list"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_option(values, message):
    with pytest.raises(KlvaeError, match=message) as info:
        TrainConfig.from_dict(values)
    assert "\n" not in str(info.value)


def test_yaml_file_problems_are_errors(tmp_path):
    with pytest.raises(KlvaeError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("beta: [1,\n")
    with pytest.raises(KlvaeError, match="not valid YAML"):
        TrainConfig.from_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(KlvaeError, match="must hold a mapping"):
        TrainConfig.from_yaml(scalar)


def test_every_shipped_recipe_is_a_valid_config():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(recipes) >= 8
    for path in recipes:
        config = TrainConfig.from_yaml(path)
        if path.name.startswith("burda-1layer-"):  # Burda et al.'s 1-layer setting, as its comment says
            kind, k = path.stem.split("-")[2:]
            assert config.objective.name == ("iwae" if kind == "iwae" else "elbo") and config.k == int(k[1:])
            assert (config.hidden, config.latent_dim, config.batch_size, config.epochs) == ([200, 200], 50, 20, 3280)
