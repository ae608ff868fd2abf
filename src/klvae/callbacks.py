"""Lightning callbacks that keep the run directory current: metrics, steps, TensorBoard, best
weights, pictures."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import lightning as L
import torch

from klvae.generation import interpolate, reconstruct, sample
from klvae.objectives import objective_column
from klvae.report.plots import drawable, save_curves, save_grid
from klvae.run import STEPS, RunDir, atomic_write

STEP_VALUES = ("loss", "recon", "kl")  # the columns of a step record after its number and KL weight


class StepsFile:
    """steps.csv, one row per optimisation step, grown by appending each epoch's rows (flushed and
    fsynced) rather than rewritten. A resumed run truncates it to the size it had when its
    checkpoint was written, which also drops a row half-written by a killed process."""

    def __init__(self, run: RunDir):
        self.run, self.path = run, run.file(STEPS)
        self.columns: list[str] = []

    def start(self, columns: list[str]) -> None:
        """A new file holding the header alone."""
        self.columns = list(columns)
        atomic_write(self.path, ",".join(self.columns) + "\r\n")

    def resume(self, size: int | None, before_step: int, columns: list[str]) -> None:
        """Keep the first ``size`` bytes (the checkpoint's), or without a size (a checkpoint that
        predates it) the rows of steps before ``before_step``; a missing file starts anew."""
        if not self.path.is_file():
            return self.start(columns)
        with self.path.open(newline="") as fh:
            self.columns = next(csv.reader(fh), None) or list(columns)
        if size is not None:
            if self.path.stat().st_size > size:
                os.truncate(self.path, size)
            return None
        self.run.write_metrics([r for r in self.run.metrics(STEPS) if r["step"] < before_step], STEPS)
        return None

    def append(self, rows: list[list]) -> int:
        """Append ``rows`` (in :attr:`columns` order) durably; the file's new size in bytes."""
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        with self.path.open("a", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
            return fh.tell()


class RunDirectory(L.Callback):
    """Keeps metrics.csv (one row per epoch, rewritten: it is small), steps.csv (one row per
    optimisation step, appended), the TensorBoard logs (written once per epoch) and
    model.safetensors (best value of the objective's validation column) current. What a resumed
    run needs of it (the best value, steps.csv's size) goes into the checkpoint."""

    def __init__(self, run_dir: Path, spec, config):
        self.run, self.spec, self.resume = RunDir(run_dir), spec, config.resume
        self.rows = self.run.metrics() if config.resume else []
        self.column = objective_column(config)
        finite = [r[self.column] for r in self.rows if math.isfinite(r.get(self.column, math.nan))]
        self.best = max(finite, default=-math.inf)  # a checkpoint's own value replaces it
        self.steps = StepsFile(self.run)
        self.steps_size: int | None = None
        self.restored: dict | None = None

    def on_train_start(self, trainer: L.Trainer, task) -> None:
        if not trainer.is_global_zero:
            return
        columns = ["step", "kl_weight", *(["capacity"] if task.schedule.pulls_to_capacity else []), *STEP_VALUES, "epoch"]
        if not self.resume:
            return self.steps.start(columns)
        state = self.restored or {}
        self.steps.resume(state.get("steps_size"), trainer.global_step, columns)
        if "epoch" in state:
            self.rows = [r for r in self.rows if r["epoch"] <= state["epoch"]]
            self.best = state["best"]
        return None

    def on_train_epoch_end(self, trainer: L.Trainer, task) -> None:
        last_step = max(trainer.global_step - 1, 0)
        capacity = task.schedule.capacity(last_step)
        row = {"epoch": task.current_epoch + 1, "step": trainer.global_step, "beta": task.schedule.weight(last_step),
               **({"capacity": capacity} if capacity is not None else {}), "free_bits": task.free_bits,
               "lr": task.model_optimizer().param_groups[0]["lr"],
               **task.train_row(), **task.val_row, "skipped_steps": task.skipped_steps()}
        if "train_elbo" in row:
            task.log("train_elbo", row["train_elbo"], prog_bar=True)
        records = task.take_steps()
        if not trainer.is_global_zero:
            return
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.run.write_metrics(self.rows)
        steps = self.step_rows(task, records, row["epoch"])
        self.steps_size = self.steps.append(steps)
        log_tensorboard(trainer, row, self.steps.columns, steps)
        val = row.get(self.column, math.nan)
        if math.isfinite(val) and val > self.best:
            self.best = val
            self.run.save_model(task.model, self.spec)

    def step_rows(self, task, records, epoch: int) -> list[list]:
        """steps.csv's rows of the epoch's steps that were taken (skipped ones have none)."""
        values = records.values.tolist()
        rows = []
        for step, (loss, recon, kl, skipped) in zip(records.steps, values):
            if skipped:
                continue
            cells = {"step": step, "kl_weight": task.schedule.weight(step), "capacity": task.schedule.capacity(step),
                     "loss": loss, "recon": recon, "kl": kl, "epoch": epoch}
            rows.append([cells.get(c, "") for c in self.steps.columns])
        return rows

    def state_dict(self) -> dict:
        if self.steps_size is None:
            return {}
        return {"best": self.best, "steps_size": self.steps_size, "epoch": self.rows[-1]["epoch"] if self.rows else 0}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = dict(state_dict)


def log_tensorboard(trainer: L.Trainer, row: dict, columns: list[str], steps: list[list]) -> None:
    """The epoch's row and every step's KL weight, capacity, loss, recon and KL into TensorBoard:
    one event per step holding all its values, flushed once."""
    if trainer.logger is None:
        return
    writer = trainer.logger.experiment
    keys = [(i, c) for i, c in enumerate(columns) if c not in ("step", "epoch")]
    step_at = columns.index("step")
    for cells in steps:
        add_scalars(writer, {f"step/{c}": cells[i] for i, c in keys if cells[i] not in ("", None)}, cells[step_at])
    add_scalars(writer, {f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")
                         and isinstance(v, (int, float)) and math.isfinite(v)}, row["epoch"])
    writer.flush()


def add_scalars(writer, values: dict[str, float], step: int) -> None:
    """Several scalars of one step as one TensorBoard event (tensorboardX), else one call each."""
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        return
    from tensorboardX.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
    file_writer().add_summary(summary, step)


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
    run = RunDir(run_dir)
    if drawable(x.shape[1:]):
        x = x[:16].to(next(model.parameters()).device)
        y = labels[:16] if labels is not None else None
        save_grid(run.file("samples.png"), sample(model, 64, seed))
        save_grid(run.file("reconstructions.png"), torch.cat([x, reconstruct(model, x, y)]), rows=2)
        ends = y[:2] if y is not None else None
        save_grid(run.file("interpolation.png"), interpolate(model, x[0], x[1], 10, condition=ends), rows=1)
    elif run.vocabulary() is not None:
        write_texts(run, model, x, seed, labels)
    rows = run.metrics()
    if rows:
        save_curves(run.file("curves.png"), rows)


TEXT_SAMPLES = 20


def write_texts(run: RunDir, model, x: torch.Tensor, seed: int, labels: torch.Tensor | None = None) -> None:
    """The texts of a run on token rows: samples.txt (greedy decoding of prior draws),
    reconstructions.txt (input, then its greedy reconstruction) and interpolation.txt (the
    homotopy between the first two held-out texts)."""
    codec = run.vocabulary()
    x = x[:TEXT_SAMPLES].to(next(model.parameters()).device)
    y = labels[:TEXT_SAMPLES] if labels is not None else None
    atomic_write(run.file("samples.txt"), "\n".join(codec.decode(sample(model, TEXT_SAMPLES, seed))) + "\n")
    pairs = zip(codec.decode(x), codec.decode(reconstruct(model, x, y)))
    atomic_write(run.file("reconstructions.txt"), "".join(f"{a}\n  -> {b}\n" for a, b in pairs))
    if len(x) >= 2:
        path = interpolate(model, x[0], x[1], 8, condition=y[:2] if y is not None else None)
        atomic_write(run.file("interpolation.txt"), "\n".join(codec.decode(path)) + "\n")
