"""Lightning callbacks that keep the run directory current: metrics, best weights, pictures."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from klvae.generation import interpolate, reconstruct, sample
from klvae.report.plots import drawable, save_curves, save_grid
from klvae.run import STEPS, read_metrics, save_model, write_metrics
from klvae.training import objective_column


class RunDirectory(L.Callback):
    """Keeps metrics.csv (one row per epoch), steps.csv (one row per optimisation step), the
    TensorBoard logs and model.safetensors (best validation ELBO) current."""

    def __init__(self, run_dir: Path, spec, config):
        self.run_dir, self.spec = run_dir, spec
        self.rows = read_metrics(run_dir) if config.resume else []
        self.steps = read_metrics(run_dir, STEPS) if config.resume else []
        self.column = objective_column(config)
        finite = [r[self.column] for r in self.rows if math.isfinite(r.get(self.column, math.nan))]
        self.best = max(finite, default=-math.inf)

    def on_fit_start(self, trainer: L.Trainer, task) -> None:
        if self.rows:  # a resumed run keeps the free bits that --on-collapse free-bits switched on
            task.free_bits = max(task.free_bits, self.rows[-1].get("free_bits", 0.0))

    def on_train_epoch_end(self, trainer: L.Trainer, task) -> None:
        last_step = max(trainer.global_step - 1, 0)
        capacity = task.schedule.capacity(last_step)
        row = {"epoch": task.current_epoch + 1, "step": trainer.global_step, "beta": task.schedule.weight(last_step),
               **({"capacity": capacity} if capacity is not None else {}), "free_bits": task.free_bits,
               "lr": task.model_optimizer().param_groups[0]["lr"],
               **task.train_row(), **getattr(task, "val_row", {}), "skipped_steps": task.skipped_steps}
        task.log("train_elbo", row["train_elbo"], prog_bar=True)
        steps = [{**s, "epoch": row["epoch"]} for s in task.take_steps()]
        if trainer.is_global_zero:
            self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
            write_metrics(self.run_dir, self.rows)
            first = steps[0]["step"] if steps else math.inf
            self.steps = [s for s in self.steps if s["step"] < first] + steps
            write_metrics(self.run_dir, self.steps, STEPS)
            log_tensorboard(trainer, row, steps)
            val = row.get(self.column, math.nan)
            if math.isfinite(val) and val > self.best:
                self.best = val
                save_model(self.run_dir, task.model, self.spec)


def log_tensorboard(trainer: L.Trainer, row: dict, steps: list[dict]) -> None:
    """The epoch's row and every step's KL weight, loss, recon and KL, into TensorBoard."""
    if trainer.logger is None:
        return
    writer = trainer.logger.experiment
    for s in steps:
        for key in ("kl_weight", "capacity", "loss", "recon", "kl"):
            if key in s:
                writer.add_scalar(f"step/{key}", s[key], s["step"])
    for key, value in row.items():
        if key not in ("epoch", "step") and isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"epoch/{key}", value, row["epoch"])
    writer.flush()


class Pictures(L.Callback):
    """At the end of training: samples.png, reconstructions.png, interpolation.png, curves.png."""

    def __init__(self, run_dir: Path, test: torch.Tensor, seed: int, labels: torch.Tensor | None = None):
        self.run_dir, self.test, self.seed, self.labels = run_dir, test, seed, labels

    def on_fit_end(self, trainer: L.Trainer, task) -> None:
        if not trainer.is_global_zero:
            return
        write_pictures(self.run_dir, task.model, self.test, self.seed, self.labels)


def write_pictures(run_dir: Path, model, x: torch.Tensor, seed: int, labels: torch.Tensor | None = None) -> None:
    """The standard pictures of a run from held-out data x: (N, *event); image pictures only when
    the data are images. ``labels`` (N,): the class labels of x, for a conditional model."""
    model.eval()
    if drawable(x.shape[1:]):
        x = x[:16].to(next(model.parameters()).device)
        y = labels[:16] if labels is not None else None
        save_grid(run_dir / "samples.png", sample(model, 64, seed))
        save_grid(run_dir / "reconstructions.png", torch.cat([x, reconstruct(model, x, y)]), rows=2)
        ends = y[:2] if y is not None else None
        save_grid(run_dir / "interpolation.png", interpolate(model, x[0], x[1], 10, condition=ends), rows=1)
    rows = read_metrics(run_dir)
    if rows:
        save_curves(run_dir / "curves.png", rows)
