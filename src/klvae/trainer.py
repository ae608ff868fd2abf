"""The Lightning Trainer of a run: devices, precision, checkpoints, early stopping, the KL
diagnostics and collapse callbacks, TensorBoard; one-line errors for a setup that cannot run."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException

from klvae.errors import KlvaeError
from klvae.kl_callbacks import CollapsePolicy, KLDiagnostics

CLUSTER_VARIABLES = ("MASTER_ADDR", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")
PROGRESS_EVERY = 10  # batches between progress-bar redraws (each redraw costs more than a small step)


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners and tips out of the user's terminal (warnings stay)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # epoch figures are reduced across ranks by torchmetrics before they are logged
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # steps: see RunDirectory


def build_trainer(config, run_dir: Path, callbacks: list) -> L.Trainer:
    """The Trainer of ``config``: the KL diagnostics and the collapse policy first, then
    ``callbacks``, then checkpoints (best and last by the objective's validation column) and early
    stopping."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    quiet_lightning()
    callbacks = [KLDiagnostics(), CollapsePolicy(config), *callbacks,
                 ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_objective", mode="max",
                                 save_last=True)]
    if config.patience:
        callbacks.append(EarlyStopping(monitor="val_objective", mode="max", patience=config.patience))
    if config.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_EVERY))
    devices = config.devices if config.devices == "auto" else int(config.devices)
    if config.num_nodes > 1 and not any(v in os.environ for v in CLUSTER_VARIABLES):
        raise KlvaeError(
            f"num_nodes={config.num_nodes} needs a cluster launch (torchrun, SLURM, or MASTER_ADDR/NODE_RANK/"
            "WORLD_SIZE set on every node); start klvae that way or use --num-nodes 1"
        )
    try:
        return L.Trainer(
            max_epochs=config.epochs, accelerator=config.accelerator, devices=devices,
            num_nodes=config.num_nodes, strategy=config.strategy, precision=config.precision,
            callbacks=callbacks, logger=TensorBoardLogger(run_dir, name="tensorboard", version=""),
            log_every_n_steps=10**9,  # steps reach TensorBoard from the step records, once per epoch
            default_root_dir=run_dir, enable_progress_bar=config.progress, enable_model_summary=False,
            num_sanity_val_steps=0, deterministic=False,
        )
    except (ValueError, RuntimeError, ImportError, MisconfigurationException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KlvaeError(
            f"cannot set up training on accelerator={config.accelerator}, devices={config.devices}, "
            f"strategy={config.strategy}, num_nodes={config.num_nodes}, precision={config.precision}: "
            f"{first[:300]}; check --accelerator/--devices/--strategy/--num-nodes/--precision"
        ) from None
