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
from klvae.data.tokens import TokenDataset
from klvae.errors import KlvaeError
from klvae.evaluation import evaluate
from klvae.evaluation.anomaly import score
from klvae.likelihoods import resolve_likelihood
from klvae.models import MODELS, build_model
from klvae.models.conditional import CONDITIONS
from klvae.models.parts import CUSTOM, record_parts
from klvae.priors import PRIORS
from klvae.run import BASELINE, CONFIG, RunDir, load
from klvae.training import VAETask, build_trainer, loader
from klvae.verbs import (
    compare, disentanglement, fit_sampler, interpolate, molecules, reconstruct, report, sample, texts, traverse,
)

__all__ = ["compare", "disentanglement", "evaluate", "fit", "fit_sampler", "interpolate", "load", "molecules",
           "reconstruct", "report", "sample", "score", "texts", "train_config", "traverse"]


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
    data = config.data.load(config.trainer.seed).without_classes(config.data.exclude_labels)
    spec = model_spec(config.model, data, parts)
    condition = CONDITIONS[config.model.condition]  # a conditional model reads the labels: the loaders yield (x, y)
    labels = {split: condition.read(getattr(data, f"{split}_labels")) for split in ("train", "val", "test")}
    if config.output.resume:
        run.check_resumable(spec)
    model = build(spec, parts)
    if spec.prior in PRIORS and PRIORS[spec.prior].get("init_from_data") and not config.output.resume:
        model.learned_prior.init_from(data.train[: spec.prior_components])  # e.g. VampPrior's pseudo-inputs
    task = VAETask(model, config, train_batch=data.train_batch, dataset_size=len(data.train))
    callbacks = [RunDirectory(run.path, spec, config),
                 Pictures(run.path, data.test, config.trainer.seed, labels["test"]),
                 *(callbacks or [])]
    trainer = build_trainer(config, run.path, callbacks)
    if is_primary_process():
        if overwrite and not config.output.resume:
            run.clear()
        run.save_config(config)
        run.save_spec(spec)
        if isinstance(data, TokenDataset):
            run.save_vocabulary(data.codec)
    ckpt = run.last_checkpoint if config.output.resume else None
    batch = config.trainer.batch_size
    chunk = batch * config.trainer.steps_per_execution  # VAETask.training_step splits it into batches
    workers = config.data.workers
    trainer.fit(task, loader(data.train, chunk, True, labels["train"], bucket=batch, workers=workers),
                loader(data.val, batch, False, labels["val"], workers=workers), ckpt_path=ckpt)
    if config.trainer.baseline and is_primary_process():
        changes = MODELS[config.model.name].baseline
        fit(config.replace(**changes, baseline=False, out=str(run.file(BASELINE))), overwrite=True)
    return run.path


def model_spec(model, data, parts: dict):
    """The model config as trained: what the data tell (their shape, classes, vocabulary) and the
    parts passed from Python recorded as "custom"; a model that cannot read these data is a
    one-line KlvaeError."""
    reads, kind = MODELS[model.name].get("reads", "arrays"), "tokens" if isinstance(data, TokenDataset) else "arrays"
    if reads != kind:
        readers = ", ".join(MODELS.where(lambda e: e.get("reads", "arrays") == kind))
        raise KlvaeError(f"model {model.name} reads {reads} but {data.name} holds {kind}; use --model {readers}")
    names = {f.name for f in dataclasses.fields(model)}
    chosen = record_parts({k: getattr(model, k) for k in ("likelihood", "net", "prior") if k in names}, parts)
    if chosen.get("likelihood", CUSTOM) != CUSTOM:
        chosen["likelihood"] = resolve_likelihood(chosen["likelihood"], data)
    facts = {"event_shape": list(data.event_shape), "vocab_size": len(data.codec.vocabulary) if kind == "tokens" else 0,
             "num_classes": CONDITIONS[model.condition].width(data)}
    return dataclasses.replace(model, **chosen, **{k: v for k, v in facts.items() if k in names})


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
