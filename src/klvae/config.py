"""The training configuration, composed of typed sections: data, model, objective, schedule,
collapse, trainer and output. The model section is the chosen model's own config class (it lives
beside the model and validates itself); the other sections are defined here and validate their own
fields; :class:`TrainConfig` checks what one section asks of another. Each is validated once, on
construction.

YAML files and keyword arguments may be flat (``latent_dim: 8``, as every recipe in ``configs/``)
or nested by section (``model: {name: vae, latent_dim: 8}``); each flat key belongs to exactly one
section, and ``data``, ``model`` and ``objective`` given as a name select that section's ``name``.
Field metadata (``help``, and ``registry`` or ``choices``) is what ``klvae train --help`` shows.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from klvae import checks
from klvae.config_sections import (
    CollapseConfig, DataConfig, ObjectiveConfig, OutputConfig, ScheduleConfig, TrainerConfig, coerce, default_of,
)
from klvae.data import data_kind
from klvae.errors import KlvaeError
from klvae.models import MODELS, model_config
from klvae.registry import did_you_mean

SECTIONS = {"data": DataConfig, "objective": ObjectiveConfig, "schedule": ScheduleConfig, "collapse": CollapseConfig,
            "trainer": TrainerConfig, "output": OutputConfig}
SELECTORS = ("data", "model", "objective")  # a flat key of this name is the section's ``name``


@dataclass
class _ModelChoice:
    """The ``model`` key: which registered model (its own config class holds the rest)."""

    name: str = field(default="vae", metadata=checks.doc("the model", registry=MODELS))


def flat_keys() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every flat key -> (section, field), the model options of every registered model included."""
    keys: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            keys[section if f.name == "name" else f.name] = (section, f)
    keys["model"] = ("model", fields(_ModelChoice)[0])
    for entry in MODELS.entries():
        for f in entry.config.options():
            keys.setdefault(f.name, ("model", f))
    return keys


@dataclass(init=False)
class TrainConfig:
    """Everything a training run needs; ``config.yaml`` in a run directory holds one of these.

    ``TrainConfig(latent_dim=8, epochs=3)`` takes flat keys, ``TrainConfig(model=VAEConfig(...))``
    sections; reading a flat key (``config.latent_dim``) reads it from its section.
    Units: ``beta`` weighs the KL (nats); ``lr`` is Adam's step size; ``epochs`` are full passes.
    """

    data: DataConfig
    model: Any  # the chosen model's config class (klvae.models.MODELS[name].config)
    objective: ObjectiveConfig
    schedule: ScheduleConfig
    collapse: CollapseConfig
    trainer: TrainerConfig
    output: OutputConfig

    def __init__(self, **values: Any):
        sections = _sections(values)
        for name, value in sections.items():
            object.__setattr__(self, name, value)
        self.validate()

    def __getattr__(self, key: str) -> Any:  # a flat key, read from its section
        if key.startswith("_") or key in SECTIONS or key == "model":
            raise AttributeError(key)
        section = _section_of(type(self.__dict__.get("model")), key)
        if section is None:
            raise AttributeError(f"TrainConfig has no option {key!r}{did_you_mean(key, list(flat_keys()))}")
        return getattr(self.__dict__[section], key)

    def validate(self) -> None:
        """What one section asks of another (each section validated its own fields)."""
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise KlvaeError(f"{name} must be a {cls.__name__}; got {type(getattr(self, name)).__name__}")
        entry = MODELS[self.model.name]
        if not isinstance(self.model, entry.config):
            raise KlvaeError(f"model must be a {entry.config.__name__} for model {self.model.name}")
        self.objective.check_with(self.schedule, self.model)
        _check_model_training(entry, self.model, self.objective, self.schedule, self.trainer)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """A config from a YAML file (flat or nested); ``overrides`` (flat keys) win over it."""
        path = Path(path)
        if not path.is_file():
            raise KlvaeError(f"config file {path} not found; pass an existing YAML file to --config")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise KlvaeError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]}); fix its syntax") from None
        if not isinstance(values, dict):
            raise KlvaeError(f"config file {path} must hold a mapping of option: value; got {type(values).__name__}")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Nested by section; the model section without what comes from the data."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        out["model"] = {"name": self.model.name, **{f.name: getattr(self.model, f.name) for f in self.model.options()}}
        return {k: out[k] for k in ("data", "model", "objective", "schedule", "collapse", "trainer", "output")}

    def to_flat_dict(self) -> dict[str, Any]:
        """One key per option, as the flat YAML files write them."""
        flat = {}
        for section, values in self.to_dict().items():
            flat.update({(section if k == "name" else k): v for k, v in values.items()})
        return flat

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with flat keys changed."""
        return TrainConfig.from_dict({**self.to_flat_dict(), **changes})


@functools.lru_cache(maxsize=None)
def _section_of(model_class: type, key: str) -> str | None:
    """The section holding field ``key`` when the model section is a ``model_class`` (cached:
    training reads flat keys every step)."""
    for section, cls in (*SECTIONS.items(), ("model", model_class)):
        if dataclasses.is_dataclass(cls) and key in {f.name for f in fields(cls)}:
            return section
    return None


def _sections(values: dict[str, Any]) -> dict[str, Any]:
    """The section objects from flat and nested values (flat keys win over nested ones)."""
    nested: dict[str, dict[str, Any]] = {name: {} for name in (*SECTIONS, "model")}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in nested and isinstance(value, dict):
            nested[key].update(value)
        elif key in nested and dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested[key].update({f.name: getattr(value, f.name) for f in fields(value)})
        else:
            flat[key] = value
    keys = flat_keys()
    unknown = sorted(k for k in flat if k not in keys)
    model_keys = {f.name for e in MODELS.entries() for f in fields(e.config)} | {"model"}
    for section, given in nested.items():
        known = {f.name for f in fields(SECTIONS[section])} if section in SECTIONS else model_keys
        unknown += [f"{section}.{k}" for k in given if k not in known]
    if unknown:
        hints = "".join(did_you_mean(k.split(".")[-1], list(keys)) for k in unknown)
        raise KlvaeError(f"unknown config key(s) {', '.join(unknown)}{hints}; valid keys: {', '.join(sorted(keys))}")
    for key, value in flat.items():
        section, f = keys[key]
        nested[section][f.name] = value
    built = {name: cls(**{k: coerce(cls, k, v, name if k == "name" else k) for k, v in nested[name].items()})
             for name, cls in SECTIONS.items()}
    built["model"] = _model_section(nested["model"], data_kind(built["data"].name))
    return built


def _model_section(values: dict[str, Any], kind: str = "arrays"):
    """The chosen model's config from its options; an option of another model is a KlvaeError
    unless it holds that model's default (older config.yaml files hold every model's options).
    No model named: the first registered model that reads the data's ``kind`` (vae for arrays,
    seqvae for text)."""
    values = dict(values)
    name = values.pop("name", values.pop("model", None)) or MODELS.where(lambda e: e.get("reads", "arrays") == kind)[0]
    entry = MODELS[name]
    own = {f.name: f for f in fields(entry.config)}
    owners: dict[str, list[str]] = {}  # option -> the other models that have it, while none holds it at its default
    for other in MODELS.entries():
        for f in fields(other.config):
            if f.name in own or f.name not in values or owners.get(f.name, True) is None:
                continue
            owners[f.name] = None if coerce(other.config, f.name, values[f.name]) == default_of(f) else [
                *owners.get(f.name, []), other.name]
    used = {k: v for k, v in owners.items() if v}
    if used:
        first = next(iter(used.values()))[0]
        are = "are options" if len(used) > 1 else "is an option"
        raise KlvaeError(f"{', '.join(used)} {are} of --model {' or '.join(dict.fromkeys(sum(used.values(), [])))}; "
                         f"add --model {first} or drop them")
    chosen = {k: coerce(entry.config, k, v) for k, v in values.items() if k in own}
    return model_config({**chosen, "name": name})


def _check_model_training(entry, model, objective: ObjectiveConfig, schedule: ScheduleConfig,
                          trainer: TrainerConfig) -> None:
    """What the model allows of the training options (its registry entry's capabilities)."""
    allowed = entry.get("objectives")
    if (allowed is not None and objective.name not in allowed) or (objective.dreg and not entry.get("dreg")):
        raise KlvaeError(f"model {entry.name} trains with --objective {' or '.join(allowed)}"
                         f"{' (without --dreg)' if not entry.get('dreg') else ''}; got objective "
                         f"{objective.name!r}{', dreg' if objective.dreg else ''}")
    if (objective.free_bits and not entry.get("free_bits")) or (
            schedule.is_capacity() and not entry.get("capacity")):
        raise KlvaeError(f"model {entry.name} trains without --free-bits or --kl-schedule capacity; got free_bits "
                         f"{objective.free_bits}, kl_schedule {schedule.kl_schedule!r}")
    if model.condition != "none" and (not entry.get("conditional") or objective.name != "elbo"):
        conditional = ", ".join(MODELS.where(lambda e: bool(e.get("conditional"))))
        raise KlvaeError(f"condition {model.condition} trains model {conditional} with objective elbo; got model "
                         f"{entry.name!r}, objective {objective.name!r}; use --model vae --objective elbo or "
                         "--condition none")
    if trainer.baseline and entry.get("baseline") is None:
        with_baseline = ", ".join(MODELS.where(lambda e: e.get("baseline") is not None))
        raise KlvaeError(f"model {entry.name} has no baseline to train; drop --baseline (models with one: "
                         f"{with_baseline})")
    if getattr(model, "kl_balance", False) and objective.name != "elbo":
        raise KlvaeError("kl_balance weighs the layers' KL terms of --objective elbo; drop --kl-balance or use it")


__all__ = ["CollapseConfig", "DataConfig", "ObjectiveConfig", "OutputConfig", "ScheduleConfig", "TrainConfig",
           "TrainerConfig", "checks", "field"]
