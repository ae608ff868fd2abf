"""Lightning callbacks that keep the run directory current: metrics, best weights, pictures."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from klvae.generation import interpolate, reconstruct, sample
from klvae.report.plots import drawable, save_curves, save_grid
from klvae.run import read_metrics, save_model, write_metrics


class RunDirectory(L.Callback):
    """Keeps metrics.csv (one row per epoch) and model.safetensors (best validation ELBO) current."""

    def __init__(self, run_dir: Path, spec, resume: bool):
        self.run_dir, self.spec = run_dir, spec
        self.rows = read_metrics(run_dir) if resume else []
        finite = [r["val_elbo"] for r in self.rows if math.isfinite(r.get("val_elbo", math.nan))]
        self.best = max(finite, default=-math.inf)

    def on_train_epoch_end(self, trainer: L.Trainer, task: VAETask) -> None:
        row = {"epoch": task.current_epoch + 1, "step": trainer.global_step, "beta": task.config.beta,
               **task.train_row(), **getattr(task, "val_row", {}), "skipped_steps": task.skipped_steps}
        task.log("train_elbo", row["train_elbo"], prog_bar=True)
        if trainer.is_global_zero:
            self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
            write_metrics(self.run_dir, self.rows)
            val = row.get("val_elbo", math.nan)
            if math.isfinite(val) and val > self.best:
                self.best = val
                save_model(self.run_dir, task.model, self.spec)


class Pictures(L.Callback):
    """At the end of training: samples.png, reconstructions.png, interpolation.png, curves.png."""

    def __init__(self, run_dir: Path, test: torch.Tensor, seed: int):
        self.run_dir, self.test, self.seed = run_dir, test, seed

    def on_fit_end(self, trainer: L.Trainer, task) -> None:
        if not trainer.is_global_zero:
            return
        write_pictures(self.run_dir, task.model, self.test, self.seed)


def write_pictures(run_dir: Path, model, x: torch.Tensor, seed: int) -> None:
    """The standard pictures of a run from held-out data x: (N, *event); image pictures only when
    the data are images."""
    model.eval()
    if drawable(x.shape[1:]):
        x = x[:16].to(next(model.parameters()).device)
        save_grid(run_dir / "samples.png", sample(model, 64, seed))
        save_grid(run_dir / "reconstructions.png", torch.cat([x, reconstruct(model, x)]), rows=2)
        save_grid(run_dir / "interpolation.png", interpolate(model, x[0], x[1], 10), rows=1)
    rows = read_metrics(run_dir)
    if rows:
        save_curves(run_dir / "curves.png", rows)
