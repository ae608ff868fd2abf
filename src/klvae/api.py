"""The Python API: fit, evaluate and load, mirroring ``klvae train / evaluate``."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch

from klvae.callbacks import Pictures, RunDirectory
from klvae.config import TrainConfig
from klvae.data import load_dataset
from klvae.data.dataset import class_count
from klvae.errors import KlvaeError
from klvae.evaluation import evaluate
from klvae.evaluation.anomaly import score
from klvae.likelihoods import resolve_likelihood
from klvae.models import build_model
from klvae.models.parts import CUSTOM, record_parts
from klvae.priors import PRIORS
from klvae.run import CONFIG, RunDir, load
from klvae.training import VAETask, build_trainer, loader
from klvae.verbs import compare, disentanglement, interpolate, reconstruct, report, sample, traverse

__all__ = ["compare", "disentanglement", "evaluate", "fit", "interpolate", "load", "reconstruct", "report", "sample",
           "score", "train_config", "traverse"]


def as_config(config: TrainConfig | dict[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return TrainConfig.from_yaml(config)


def train_config(config_file: str | Path | None = None, **flags: Any) -> TrainConfig:
    """The config ``klvae train`` runs: a YAML file with the flags over it; resuming (``resume``)
    a run with no file given: the run's stored config with the flags over it."""
    if config_file:
        return TrainConfig.from_yaml(config_file, **flags)
    run = RunDir(flags.get("out", ""))
    if flags.get("resume") and run.file(CONFIG).is_file():
        return TrainConfig.from_yaml(run.file(CONFIG), **flags)
    return TrainConfig.from_dict(flags)


def is_primary_process() -> bool:
    """False in the extra processes that Lightning's DDP launcher starts for ranks > 0."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def fit(config: TrainConfig | dict[str, Any] | str | Path, overwrite: bool = False,
        callbacks: list[L.Callback] | None = None, encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None, prior: torch.nn.Module | None = None,
        likelihood: torch.nn.Module | None = None) -> Path:
    """Train a model as ``config`` says (a TrainConfig, a dict or a YAML path) into ``config.output.out``;
    returns the run directory. ``callbacks`` are extra Lightning callbacks.

    ``encoder``, ``decoder``, ``prior``, ``likelihood``: your own ``nn.Module``s in place of the
    registered parts (see :class:`klvae.models.VAE` for what each maps); the run records them as
    "custom", and ``klvae.load`` then needs the same modules passed again (a run directory never
    names code to import).

    Everything is checked (options, data, model, devices) before the run directory is touched."""
    config = as_config(config)
    parts = {"encoder": encoder, "decoder": decoder, "prior": prior, "likelihood": likelihood}
    run = RunDir(config.output.out)
    run.check_start(config.output.resume, overwrite, is_primary_process())
    L.seed_everything(config.trainer.seed, verbose=False)
    source = config.data
    data = load_dataset(source.name, source.data_dir, source.binarize, source.val_fraction, config.trainer.seed,
                        download=source.download).without_classes(source.exclude_labels)
    conditioned = config.model.condition != "none"  # the model sees the class labels: the loaders yield (x, y)
    chosen = record_parts({k: getattr(config.model, k) for k in ("likelihood", "net", "prior")}, parts)
    if chosen["likelihood"] != CUSTOM:
        chosen["likelihood"] = resolve_likelihood(chosen["likelihood"], data)
    spec = dataclasses.replace(config.model, event_shape=list(data.event_shape),
                               num_classes=class_count(data) if conditioned else 0, **chosen)
    if config.output.resume:
        run.check_resumable(spec)
    model = build(spec, parts)
    if spec.prior in PRIORS and PRIORS[spec.prior].get("init_from_data") and not config.output.resume:
        model.learned_prior.init_from(data.train[: spec.prior_components])  # e.g. VampPrior's pseudo-inputs
    task = VAETask(model, config, train_batch=data.train_batch, dataset_size=len(data.train))
    callbacks = [RunDirectory(run.path, spec, config),
                 Pictures(run.path, data.test, config.trainer.seed, data.test_labels if conditioned else None),
                 *(callbacks or [])]
    trainer = build_trainer(config, run.path, callbacks)
    if is_primary_process():
        if overwrite and not config.output.resume:
            run.clear()
        run.save_config(config)
        run.save_spec(spec)
    ckpt = run.last_checkpoint if config.output.resume else None
    batch = config.trainer.batch_size
    chunk = batch * config.trainer.steps_per_execution  # VAETask.training_step splits it into batches
    trainer.fit(task, loader(data.train, chunk, True, data.train_labels if conditioned else None),
                loader(data.val, batch, False, data.val_labels if conditioned else None), ckpt_path=ckpt)
    return run.path


def build(spec, parts: dict | None = None) -> torch.nn.Module:
    """The model of a spec, with the parts passed from Python; a model too large to allocate or a
    body that does not fit the data is a one-line KlvaeError."""
    try:
        return build_model(spec, **(parts or {}))
    except ValueError as err:
        raise KlvaeError(f"{err}; use --net mlp") from None
    except (RuntimeError, MemoryError) as err:
        if "alloc" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(err))
        size = f"{int(asked.group(1)) / 1e9:,.1f} GB for one tensor" if asked else "more memory than there is"
        raise KlvaeError(f"the model is too large to allocate: it asked for {size}; lower --latent-dim, --hidden "
                         "or --codes") from None
