"""The Python API: fit, evaluate and load, mirroring ``klvae train / evaluate``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from klvae.callbacks import Pictures, RunDirectory
from klvae.config import TrainConfig
from klvae.data import load_dataset
from klvae.data.dataset import class_count
from klvae.errors import KlvaeError
from klvae.evaluation import evaluate
from klvae.models import ModelSpec, build_model
from klvae.nets import pick_net
from klvae.run import CONFIG, METRICS, SPEC, WEIGHTS, load, save_config, save_spec
from klvae.training import VAETask, build_trainer, loader, resolve_likelihood

__all__ = ["evaluate", "fit", "load"]


def as_config(config: TrainConfig | dict[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return TrainConfig.from_yaml(config)


def is_primary_process() -> bool:
    """False in the extra processes that Lightning's DDP launcher starts for ranks > 0."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def check_out(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output that would damage what is there; changes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise KlvaeError(f"--out {run_dir} is an existing file; give a directory path")
    if resume:
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise KlvaeError(f"cannot resume: {last} not found; train into {run_dir} first, or drop --resume")
        return
    held = [n for n in (CONFIG, WEIGHTS, SPEC, METRICS, "checkpoints") if (run_dir / n).exists()]
    if held and not overwrite and is_primary_process():
        raise KlvaeError(
            f"{run_dir} already holds a run ({', '.join(held)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )


def check_resumable(run_dir: Path, spec: ModelSpec) -> None:
    """A resumed run must keep the architecture its checkpoint was trained with."""
    path = run_dir / SPEC
    if not path.is_file():
        return
    stored = {**ModelSpec(event_shape=spec.event_shape).to_dict(), **json.loads(path.read_text())}
    # a field that the run's model.json predates (e.g. condition) compares as its default
    changed = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in spec.to_dict().items() if stored.get(k) != v]
    if changed:
        raise KlvaeError(
            f"cannot resume {run_dir} with a different model ({'; '.join(changed)}); drop those options or train into a new --out"
        )


def start_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool) -> Path | None:
    """Clear a run being overwritten, write config.yaml; the checkpoint to resume from, if any."""
    if config.resume:
        return run_dir / "checkpoints" / "last.ckpt"
    if is_primary_process():
        if overwrite:
            for name in (CONFIG, WEIGHTS, SPEC, METRICS, "checkpoints"):
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
    return None


def fit(config: TrainConfig | dict[str, Any] | str | Path, overwrite: bool = False,
        callbacks: list[L.Callback] | None = None) -> Path:
    """Train a model as ``config`` says (a TrainConfig, a dict or a YAML path) into ``config.out``;
    returns the run directory. ``callbacks`` are extra Lightning callbacks.

    Everything is checked (options, data, model, devices) before the run directory is touched."""
    config = as_config(config)
    run_dir = Path(config.out)
    check_out(run_dir, config.resume, overwrite)
    L.seed_everything(config.seed, verbose=False)
    data = load_dataset(config.data, config.data_dir, config.binarize, config.val_fraction, config.seed,
                        download=config.download).without_classes(config.exclude_labels)
    conditioned = config.condition != "none"  # the model sees the class labels: the loaders yield (x, y)
    spec = ModelSpec(
        event_shape=list(data.event_shape), latent_dim=config.latent_dim, hidden=list(config.hidden),
        net=pick_net(tuple(data.event_shape), config.net), activation=config.activation,
        likelihood=resolve_likelihood(config.likelihood, data), decoder_scale=config.decoder_scale,
        min_scale=config.min_scale, model=config.model, latent=config.latent, prior=config.prior,
        prior_components=config.prior_components, sparsity=config.sparsity, decoder=config.decoder,
        condition=config.condition, num_classes=class_count(data) if conditioned else 0,
        conditional_prior=config.conditional_prior,
        latent_dims=list(config.latent_dims), residual=config.residual, kl_balance=config.kl_balance,
        codes=config.codes, positions=config.positions, commitment=config.commitment, quantizer=config.quantizer,
        temperature=config.temperature, temperature_steps=config.temperature_steps,
    )
    if config.resume:
        check_resumable(run_dir, spec)
    try:
        model = build_model(spec)
    except ValueError as err:
        raise KlvaeError(f"{err}; use --net mlp") from None
    if spec.prior == "vamp" and not config.resume:
        model.learned_prior.init_from(data.train[: spec.prior_components])
    task = VAETask(model, config, train_batch=data.train_batch, dataset_size=len(data.train))
    callbacks = [RunDirectory(run_dir, spec, config),
                 Pictures(run_dir, data.test, config.seed, data.test_labels if conditioned else None),
                 *(callbacks or [])]
    trainer = build_trainer(config, run_dir, callbacks)
    ckpt = start_run_dir(run_dir, config, overwrite)
    if is_primary_process():
        save_config(run_dir, config)
        save_spec(run_dir, spec)
    trainer.fit(task, loader(data.train, config.batch_size, True, data.train_labels if conditioned else None),
                loader(data.val, config.batch_size, False, data.val_labels if conditioned else None), ckpt_path=ckpt)
    return run_dir
