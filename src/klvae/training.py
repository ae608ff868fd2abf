"""Training with Lightning: a thin LightningModule around the registered objective, and the
Trainer that runs it (:func:`klvae.fit` ties it together).

The module holds the research code's one step (:meth:`VAETask._common_step`, shared by training
and validation), the optimisation with its non-finite guard, and the epoch means of the
objective's terms. The KL diagnostics and the collapse policy are callbacks
(:mod:`klvae.kl_callbacks`); the run directory's files are :class:`klvae.callbacks.RunDirectory`'s.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from klvae.epoch_metrics import ColumnMeans
from klvae.loaders import IndexedTensor, loader, unpack
from klvae.objectives import Breakdown, ObjectiveContext, objective_column, objective_of
from klvae.schedules import KLSchedule
from klvae.step_guard import NonFiniteGuard, guarded_step
from klvae.trainer import build_trainer, quiet_lightning

__all__ = ["IndexedTensor", "StepRecords", "VAETask", "build_trainer", "iwae_stages", "loader", "objective_column",
           "quiet_lightning", "unpack"]


@dataclass
class StepRecords:
    """The training steps of an epoch: their numbers and, per step, (loss, recon, kl, skipped) as
    one device tensor (S, 4) (recon and kl are batch means, nats; skipped is 1.0 for a skipped step)."""

    steps: list[int]
    values: torch.Tensor


class VAETask(L.LightningModule):
    """One optimisation step of the registered objective (``config.objective``); the maths lives in
    :mod:`klvae.objectives`, the KL weight of each step in :mod:`klvae.schedules`.

    Manual optimisation lets a step whose loss or gradient is not finite be skipped and counted on
    the device (:mod:`klvae.step_guard`); ``max_bad_steps`` consecutive ones stop the run with a
    message naming the step. ``val_row`` collects the figures of the epoch's validation: the
    module's means, then the diagnostics callbacks' columns."""

    def __init__(self, model: torch.nn.Module, config, train_batch=None, dataset_size: int = 1):
        super().__init__()
        self.model = model
        self.config = config
        self.train_batch = train_batch  # x -> what the model trains on (e.g. a fresh binarisation)
        self.objective = objective_of(config)
        make_critic = self.objective.get("critic")
        self.critic = make_critic(model) if make_critic else None
        self.context = ObjectiveContext(config, KLSchedule.from_config(config), dataset_size, config.free_bits,
                                        self.critic)
        self.automatic_optimization = False
        self.guard = NonFiniteGuard(config.max_bad_steps, skip_threshold=config.skip_threshold)
        self.train_means = ColumnMeans(self.columns("train"))
        self.val_means = ColumnMeans(self.columns("val"))
        self.val_row: dict[str, float] = {}
        self._steps: list[int] = []  # the epoch's steps, their batch sizes and records (see take_steps)
        self._sizes: list[int] = []
        self._records: list[torch.Tensor] = []
        self._restored: dict | None = None
        self._guarded: list[torch.nn.Parameter] | None = None  # the model's, listed once for the guard

    # --- what the objective and the schedule say ------------------------------------------------------
    @property
    def schedule(self) -> KLSchedule:
        return self.context.schedule

    @property
    def free_bits(self) -> float:
        """The free-bits floor in force (nats per group); --on-collapse free-bits raises it."""
        return self.context.free_bits

    @free_bits.setter
    def free_bits(self, value: float) -> None:
        self.context.free_bits = float(value)

    def columns(self, stage: str) -> list[str]:
        """The metrics.csv columns of the objective's epoch means: ``train_*`` or ``val_*``."""
        extra = self.objective.get("train_extra") if stage == "train" else self.objective.get("monitor", "val_elbo")
        base = [f"{stage}_elbo", f"{stage}_recon", f"{stage}_kl"]
        return base + ([extra] if extra and extra not in base else [])

    # --- the shared step ----------------------------------------------------------------------------
    def _common_step(self, x: torch.Tensor, y: torch.Tensor | None) -> Breakdown:
        return self.objective.builder(self.context, self.model, x, y, self.global_step)

    def training_step(self, batch, batch_idx: int) -> None:
        """``steps_per_execution`` optimisation steps: the loader's chunk split into batches in order
        (the steps a loader of single batches would give)."""
        x, y = unpack(batch)
        if self.train_batch is not None:
            x = self.train_batch(x)
        size = self.config.batch_size
        for i in range(0, len(x), size):
            self._optimise(x[i:i + size], None if y is None else y[i:i + size])

    def _optimise(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        step = self.global_step
        out = self._common_step(x, y)
        opt = self.model_optimizer()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(out.loss)
        if self._guarded is None:
            self._guarded = list(self.model.parameters())
        bad = self.guard.judge(out.loss, self._guarded, step)
        guarded_step(opt, bad)
        if out.critic_loss is not None:  # its raw optimiser: global_step counts the model's steps
            critic = self.optimizers()[1].optimizer
            critic.zero_grad(set_to_none=True)
            self.manual_backward(out.critic_loss)
            guarded_step(critic, bad)
        extras = [out.value(c.split("_", 1)[1]).detach().mean() for c in self.train_means.columns[3:]]
        self._steps.append(step)
        self._sizes.append(len(x))
        self._records.append(torch.stack([out.loss.detach(), out.recon.detach().mean(), out.kl.detach().mean(),
                                          bad, *extras]))
        self.guard.stop_if_tripped(step, self.current_epoch)

    def validation_step(self, batch, batch_idx: int) -> Breakdown:
        out = self._common_step(*unpack(batch))
        values = [out.value(c.split("_", 1)[1]) for c in self.val_means.columns]
        self.val_means.update(torch.stack(values, 1))  # (N, C)
        return out  # the diagnostics callbacks read it in on_validation_batch_end

    # --- epochs ---------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.guard.to(self.device, self._restored)
        self._restored = None

    def on_train_epoch_start(self) -> None:
        self.val_row = {}

    def on_validation_epoch_end(self) -> None:
        row = self.val_means.row()
        self.val_means.reset()
        if not row:
            return
        self.val_row.update(row)
        self.log("val_elbo", row["val_elbo"], prog_bar=True)
        self.log("val_kl", row["val_kl"], prog_bar=True)
        self.log("val_objective", row[objective_column(self.config)])

    def on_train_epoch_end(self) -> None:
        self.guard.stop_if_tripped(max(self.global_step - 1, 0), self.current_epoch, force=True)
        for scheduler in [s for s in [self.lr_schedulers()] if s is not None]:
            scheduler.step()  # manual optimisation steps schedulers itself

    def train_row(self) -> dict[str, float]:
        """The epoch means over data points of the training terms (train_elbo, train_recon,
        train_kl, the extra) from the step records so far; skipped steps count for nothing."""
        if not self._records:
            return {}
        records = torch.stack(self._records)
        kept = torch.tensor(self._sizes, dtype=torch.float64, device=records.device) * (1 - records[:, 3].double())
        recon, kl = records[:, 1:2], records[:, 2:3]  # the columns: elbo, recon, kl, then the extra
        self.train_means.reset()
        self.train_means.update(torch.cat([recon - kl, recon, kl, records[:, 4:]], 1), kept)
        return self.train_means.row()

    def skipped_steps(self) -> int:
        return self.guard.state_dict()["skipped_steps"]

    def take_steps(self) -> StepRecords:
        """The training steps since the last call: (loss, recon, kl, skipped) of each."""
        steps, records = self._steps, self._records
        self._steps, self._sizes, self._records = [], [], []
        return StepRecords(steps, torch.stack(records)[:, :4] if records else torch.zeros(0, 4))

    # --- optimisers and checkpoints --------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.config
        fused = self.device.type in ("cpu", "cuda")
        optimizers = [torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=fused)]
        if self.critic is not None:
            make = getattr(self.critic, "optimizer", None)
            optimizers.append(make(fused) if make else torch.optim.Adam(self.critic.parameters(), lr=cfg.lr))
        if cfg.lr_schedule == "constant":
            return optimizers
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(optimizers[0], iwae_stages)]

    def model_optimizer(self):
        """The optimiser of the VAE (an objective with a critic has a second one)."""
        opts = self.optimizers()
        return opts[0] if isinstance(opts, list) else opts

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """What a resumed run needs beyond the weights: the guard's counters, the free-bits floor in
        force and the random number generators' states (so a resumed run draws what the
        uninterrupted one would have)."""
        checkpoint["klvae"] = {**self.guard.state_dict(), "free_bits": self.free_bits, "rng": rng_states()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("klvae", {})
        self._restored = state
        self.guard.to(self.guard.skipped.device, state)
        self.free_bits = state.get("free_bits", self.free_bits)
        if "rng" in state:
            set_rng_states(state["rng"])


def rng_states() -> dict:
    """The states of Python's, NumPy's and torch's generators (CUDA's when it is in use), in the
    types a ``weights_only`` checkpoint load accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def iwae_stages(epoch: int) -> float:
    """The learning-rate factor of Burda et al. (2015): stage i = 1..8 runs 3^(i-1) epochs at
    10^(-(i-1)/7) times the base rate (3,280 epochs in all); later epochs stay in stage 8."""
    stage, end = 1, 1
    while epoch >= end and stage < 8:
        stage += 1
        end += 3 ** (stage - 1)
    return 10 ** (-(stage - 1) / 7)
