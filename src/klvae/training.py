"""Training with Lightning: a thin LightningModule around the objective, loaders that batch an
in-memory tensor by indexing, and the Trainer that runs them (:func:`klvae.fit` ties it together)."""
from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset

from klvae.diagnostics import CollapseWarning, active_units, collapse_verdict, mutual_information, off_fraction
from klvae.errors import KlvaeError
from klvae.models.conditional import given
from klvae.objectives import Discriminator, elbo, factorvae_loss, iwae_bound, iwae_objective, tcvae_loss
from klvae.schedules import KLSchedule

MI_POINTS = 1000  # validation points whose aggregated posterior gives I(x; z) each epoch
FREE_BITS_ON_COLLAPSE = 0.5  # nats per group, switched on by --on-collapse free-bits


class IndexedTensor(Dataset):
    """A tensor served by whole batches: the DataLoader's fetcher calls ``__getitems__`` with the
    sampler's batch of indices, so one indexing op replaces a per-sample loop and collate. With
    ``labels`` (N,) a batch is the tuple (x, labels) of the same rows."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is not None and len(labels) != len(x):
            raise KlvaeError(f"labels must hold one entry per data point ({len(x)}); got {len(labels)}")
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] if self.labels is None else (self.x[i], self.labels[i])

    def __getitems__(self, idx: list[int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(idx)
        return self.x[rows] if self.labels is None else (self.x[rows], self.labels[rows])


def _keep(batch):
    return batch


def loader(x: torch.Tensor, batch_size: int, shuffle: bool, labels: torch.Tensor | None = None) -> DataLoader:
    """Batches of x: (N, *event), or of (x, labels) pairs when ``labels`` (N,) are given (a
    conditional model); Lightning swaps in a DistributedSampler under DDP."""
    return DataLoader(IndexedTensor(x, labels), batch_size=batch_size, shuffle=shuffle, collate_fn=_keep)


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of a loader's batch; labels None for a batch of x alone."""
    return (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)


class VAETask(L.LightningModule):
    """One optimisation step of the (beta-)ELBO; the maths lives in :mod:`klvae.objectives`, the
    KL weight of each step in :mod:`klvae.schedules`.

    Manual optimisation lets a step whose loss or gradient is not finite be skipped and counted;
    ``max_bad_steps`` consecutive ones stop the run with a message naming the step. After each
    validation epoch the KL diagnostics (per-dimension KL, active units, I(x; z), the aggregated
    posterior's KL) give a collapse verdict, acted on as ``on_collapse`` says.
    """

    def __init__(self, model: torch.nn.Module, config, train_batch=None, dataset_size: int = 1):
        super().__init__()
        self.model = model
        self.config = config
        self.train_batch = train_batch  # x -> what the model trains on (e.g. a fresh binarisation)
        self.dataset_size = dataset_size  # N of the training set, for beta-TCVAE's estimator
        self.discriminator = Discriminator(model.latent_dim) if config.objective == "factorvae" else None
        self.automatic_optimization = False
        self.bad_in_a_row = 0
        self.skipped_steps = 0
        self.train_sums = torch.zeros(5)  # sums of elbo, recon, kl, the IWAE bound or the TC; count
        self.val_parts: list[tuple] = []
        self.mi_x: list[torch.Tensor] = []
        self.mi_y: list[torch.Tensor] = []  # the labels of mi_x (a conditional model)
        self.schedule = KLSchedule.from_config(config)
        self.free_bits = config.free_bits
        self.collapsed_epochs = 0  # consecutive collapsed epochs at full KL weight
        self.steps: list[tuple[int, float, float, torch.Tensor]] = []  # step, weight, capacity, (loss, recon, kl)

    def configure_optimizers(self):
        cfg = self.config
        fused = self.device.type in ("cpu", "cuda")
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=fused)
        if self.discriminator is not None:  # Kim & Mnih's settings for the critic
            critic = torch.optim.Adam(self.discriminator.parameters(), lr=1e-4, betas=(0.5, 0.9))
            return [opt, critic]
        if cfg.lr_schedule == "constant":
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, iwae_stages)}

    def model_optimizer(self):
        """The optimiser of the VAE (FactorVAE's critic has a second one)."""
        opts = self.optimizers()
        return opts[0] if isinstance(opts, list) else opts

    def on_train_epoch_end(self) -> None:
        for scheduler in [s for s in [self.lr_schedulers()] if s is not None]:
            scheduler.step()  # manual optimisation steps schedulers itself

    def on_train_epoch_start(self) -> None:
        self.train_sums = torch.zeros(5, device=self.device)

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = unpack(batch)
        if self.train_batch is not None:
            x = self.train_batch(x)
        cfg = self.config
        step = self.global_step
        weight, capacity = self.schedule.weight(step), self.schedule.capacity(step)
        z = None
        if cfg.objective == "iwae":
            iwae = iwae_objective(self.model, x, cfg.k, cfg.dreg, cfg.kl_estimator, cfg.kl_samples)
            terms, loss, extra = iwae.first, iwae.loss(), iwae.bound
        elif cfg.objective == "tcvae":
            loss, terms, parts = tcvae_loss(self.model, x, cfg.beta, self.dataset_size)
            extra = parts.tc
        elif cfg.objective == "factorvae":
            loss, terms, extra, z = factorvae_loss(self.model, self.discriminator, x, cfg.beta)
        else:
            terms = elbo(self.model, x, cfg.kl_estimator, cfg.kl_samples, cfg.k, **given(y))
            loss, extra = terms.loss(weight, capacity, self.free_bits, cfg.free_bits_group), terms.elbo
        opt = self.model_optimizer()
        if not torch.isfinite(loss):
            return self._skip("loss")
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            return self._skip("gradient")
        opt.step()
        if z is not None:  # the critic's step; its raw optimiser, so global_step counts the model's steps
            critic = self.optimizers()[1].optimizer
            critic.zero_grad(set_to_none=True)
            self.manual_backward(self.discriminator.loss(z))
            critic.step()
        self.bad_in_a_row = 0
        with torch.no_grad():
            e, r, k = terms.elbo.sum(), terms.recon.sum(), terms.kl.sum()
            self.train_sums += torch.stack([e, r, k, extra.detach().sum(), e.new_tensor(float(len(x)))])
            n = float(len(x))
            self.steps.append((step, weight, math.nan if capacity is None else capacity,
                               torch.stack([loss.detach(), r / n, k / n])))

    def take_steps(self) -> list[dict[str, float]]:
        """The per-step records since the last call (step, kl_weight, capacity, loss, recon, kl)."""
        steps, self.steps = self.steps, []
        values = torch.stack([v for *_, v in steps]).tolist() if steps else []
        return [{"step": s, "kl_weight": w, **({"capacity": c} if c == c else {}), "loss": v[0], "recon": v[1],
                 "kl": v[2]} for (s, w, c, _), v in zip(steps, values)]

    def _skip(self, what: str) -> None:
        self.skipped_steps += 1
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.config.max_bad_steps:
            raise KlvaeError(
                f"the {what} was NaN/Inf for {self.bad_in_a_row} steps in a row (last at step {self.global_step}, "
                f"epoch {self.current_epoch}); lower --lr, check the data, or raise --min-scale"
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = unpack(batch)
        terms = elbo(self.model, x, self.config.kl_estimator, self.config.kl_samples, **given(y))
        per_dim = terms.kl_per_dim.sum(0) if terms.kl_per_dim is not None else None
        off = off_fraction(terms.q)
        bound = iwae_bound(self.model, x, self.config.k, **given(y)).sum() if self.config.objective == "iwae" \
            else terms.elbo.sum()
        layers = getattr(terms, "kl_per_layer", None)  # hierarchical models: (N, L)
        self.val_parts.append((terms.elbo.sum(), terms.recon.sum(), terms.kl.sum(), len(x), per_dim, terms.q.mean,
                               off.sum() if off is not None else None, bound,
                               layers.sum(0) if layers is not None else None))
        held = sum(len(m) for m in self.mi_x)
        if held < MI_POINTS:
            self.mi_x.append(x[: MI_POINTS - held])
            if y is not None:
                self.mi_y.append(y[: MI_POINTS - held])

    def on_validation_epoch_end(self) -> None:
        parts, self.val_parts = self.val_parts, []
        if not parts:
            return
        sums = torch.stack([torch.stack([p[0], p[1], p[2], p[0].new_tensor(float(p[3])), p[7]]) for p in parts]).sum(0)
        loc = torch.cat([p[5] for p in parts])
        per_dim = torch.stack([p[4] for p in parts]).sum(0) if parts[0][4] is not None else None
        if self.trainer.world_size > 1:  # every rank saw a shard of the validation set
            sums = self.all_gather(sums).sum(0)
            loc = self.all_gather(loc).flatten(0, 1)
            per_dim = self.all_gather(per_dim).sum(0) if per_dim is not None else None
        n = sums[3]
        self.val_row = {"val_elbo": (sums[0] / n).item(), "val_recon": (sums[1] / n).item(),
                        "val_kl": (sums[2] / n).item(), "active_units": active_units(loc)}
        if self.config.objective == "iwae":
            self.val_row["val_iwae"] = (sums[4] / n).item()
        if per_dim is not None:
            self.val_row.update({f"kl_dim_{i}": v for i, v in enumerate((per_dim / n).tolist())})
        if parts[0][8] is not None:  # the KL of each latent layer
            per_layer = torch.stack([p[8] for p in parts]).sum(0)
            per_layer = self.all_gather(per_layer).sum(0) if self.trainer.world_size > 1 else per_layer
            self.val_row.update({f"kl_layer_{i}": v for i, v in enumerate((per_layer / n).tolist())})
        if getattr(self.model.spec, "model", "vae") == "vqvae":  # how evenly the codes are used
            from klvae.models.vqvae import code_perplexity

            self.val_row["val_perplexity"] = code_perplexity(loc).item()
        if parts[0][6] is not None:  # spike-and-slab: expected fraction of dimensions switched off
            off = torch.stack([p[6] for p in parts]).sum()
            off = self.all_gather(off).sum() if self.trainer.world_size > 1 else off
            self.val_row["val_off_fraction"] = (off / n).item()
        mi_x, self.mi_x = torch.cat(self.mi_x), []
        mi_y, self.mi_y = (torch.cat(self.mi_y) if self.mi_y else None), []
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the diagnostic draws its own z; training's RNG is untouched
            torch.manual_seed(self.current_epoch)
            mi = torch.tensor(mutual_information(self.model, mi_x, **given(mi_y)), device=self.device)
        if self.trainer.world_size > 1:
            mi = self.all_gather(mi).mean(0)
        self.val_row.update({"val_mi": mi[0].item(), "val_agg_kl": mi[1].item()})
        self.judge_collapse()
        self.log("val_elbo", self.val_row["val_elbo"], prog_bar=True)
        self.log("val_kl", self.val_row["val_kl"], prog_bar=True)
        self.log("val_objective", self.val_row[objective_column(self.config)])

    def judge_collapse(self) -> None:
        """The collapse verdict of this epoch (column ``collapsed``). A collapse that lasts
        ``collapse_patience`` epochs once the KL schedule has reached full weight is warned about
        and acted on as ``on_collapse`` says; a recovery from it is reported too (early epochs often
        pass through a collapsed state)."""
        cfg, row = self.config, self.val_row
        collapsed, message = collapse_verdict(row["val_kl"], row["active_units"], self.model.latent_dim,
                                              cfg.collapse_kl, cfg.collapse_units)
        row["collapsed"] = int(collapsed)
        settled = self.schedule.settled(max(self.global_step - 1, 0))
        if not collapsed and self.collapsed_epochs >= cfg.collapse_patience and self.trainer.is_global_zero:
            warnings.warn(f"epoch {self.current_epoch + 1}: the posterior has recovered: {message[len('no collapse: '):]}",
                          CollapseWarning, stacklevel=1)
        self.collapsed_epochs = self.collapsed_epochs + 1 if collapsed and settled else 0
        if self.collapsed_epochs != cfg.collapse_patience:
            return
        action = {"warn": "", "stop": "; stopping (--on-collapse stop)",
                  "free-bits": f"; free bits of {FREE_BITS_ON_COLLAPSE} nats switched on (--on-collapse free-bits)"}
        if self.trainer.is_global_zero:
            warnings.warn(f"epoch {self.current_epoch + 1}: {message}{action[cfg.on_collapse]}", CollapseWarning,
                          stacklevel=1)
        if cfg.on_collapse == "stop":
            self.trainer.should_stop = True
        elif cfg.on_collapse == "free-bits":
            self.free_bits = max(self.free_bits, FREE_BITS_ON_COLLAPSE)

    def train_row(self) -> dict[str, float]:
        sums = self.train_sums
        if self.trainer.world_size > 1:
            sums = self.all_gather(sums).sum(0)
        n = max(sums[4].item(), 1.0)
        row = {"train_elbo": sums[0].item() / n, "train_recon": sums[1].item() / n, "train_kl": sums[2].item() / n}
        if self.config.objective == "iwae":
            row["train_iwae"] = sums[3].item() / n
        elif self.config.objective in ("tcvae", "factorvae"):
            row["train_tc"] = sums[3].item() / n  # the total correlation the objective estimates
        return row


def iwae_stages(epoch: int) -> float:
    """The learning-rate factor of Burda et al. (2015): stage i = 1..8 runs 3^(i-1) epochs at
    10^(-(i-1)/7) times the base rate (3,280 epochs in all); later epochs stay in stage 8."""
    stage, end = 1, 1
    while epoch >= end and stage < 8:
        stage += 1
        end += 3 ** (stage - 1)
    return 10 ** (-(stage - 1) / 7)


def objective_column(config) -> str:
    """The metrics.csv column that picks the best epoch and early-stops: the validation value of
    the trained objective (val_elbo, or val_iwae with the training K)."""
    return "val_iwae" if config.objective == "iwae" else "val_elbo"


def resolve_likelihood(requested: str, dataset) -> str:
    """'bernoulli' for binary or binarised data, else 'gaussian', unless requested."""
    if requested == "auto":
        return "bernoulli" if dataset.binary else "gaussian"
    if requested == "bernoulli":
        lo, hi = float(dataset.train.min()), float(dataset.train.max())
        if lo < 0 or hi > 1:
            raise KlvaeError(
                f"likelihood bernoulli needs data in [0, 1]; {dataset.name} spans [{lo:g}, {hi:g}]; use --likelihood gaussian"
            )
    return requested


CLUSTER_VARIABLES = ("MASTER_ADDR", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners and tips out of the user's terminal (warnings stay)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # epoch metrics are gathered across ranks by hand (all_gather) before they are logged
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # steps: see RunDirectory


def build_trainer(config, run_dir: Path, callbacks: list) -> L.Trainer:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    quiet_lightning()
    callbacks = [*callbacks, ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                                             monitor="val_objective", mode="max", save_last=True)]
    if config.patience:
        callbacks.append(EarlyStopping(monitor="val_objective", mode="max", patience=config.patience))
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
            log_every_n_steps=10**9,  # steps reach TensorBoard from steps.csv's records, once per epoch
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
