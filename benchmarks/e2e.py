"""End-to-end contestants of bench_train.py: Burda et al.'s (2015) 1-layer model, an MLP VAE
784-200-200-50 with tanh units (Gaussian encoder, Bernoulli decoder on logits, dynamic
binarisation, batch 100, Adam lr 1e-3), trained on MNIST for whole epochs with a validation ELBO
after each.

Each ``*_e2e(data_dir, epochs, out, seed)`` returns {"total": seconds of the whole call (data
loading, setup, every epoch, every file), "epochs": seconds of each epoch with its validation and
its files}. klvae.fit writes all it always writes (metrics.csv, steps.csv, TensorBoard, checkpoints,
best weights, pictures); the bare loop writes its weights once at the end; pythae's trainer writes
its own checkpoints.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

import klvae
from contestants import PYTHAE, Decoder, DynamicBinarized, Encoder, mlp
from klvae.data import load_dataset

HIDDEN, LATENT, BATCH, LR, MIN_SCALE = [200, 200], 50, 100, 1e-3, 1e-4

if PYTHAE:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback
else:
    TrainingCallback = object


class EpochClock(L.Callback):
    """Seconds of each epoch, from its start to the next one's (or the end of training): its
    batches, its validation and diagnostics, metrics.csv, steps.csv, TensorBoard, weights, checkpoints."""

    def __init__(self):
        self.seconds: list[float] = []
        self.t0: float | None = None

    def on_train_epoch_start(self, trainer, task) -> None:
        now = time.perf_counter()
        if self.t0 is not None:
            self.seconds.append(now - self.t0)
        self.t0 = now

    def on_train_end(self, trainer, task) -> None:
        self.on_train_epoch_start(trainer, task)


def klvae_e2e(data_dir: str, epochs: int, out: Path, seed: int) -> dict:
    """klvae.fit as a user calls it, every diagnostic on; the run directory is ``out / "klvae-e2e"``."""
    clock = EpochClock()
    t0 = time.perf_counter()
    klvae.fit({"data": "mnist", "data_dir": data_dir, "net": "mlp", "hidden": HIDDEN, "latent_dim": LATENT,
               "activation": "tanh", "batch_size": BATCH, "lr": LR, "epochs": epochs, "seed": seed,
               "progress": False, "out": str(out / "klvae-e2e")}, overwrite=True, callbacks=[clock])
    return {"total": time.perf_counter() - t0, "epochs": clock.seconds}


def elbo(enc: nn.Module, dec: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One-sample ELBO per point (N,) in nats: scale softplus + MIN_SCALE, analytic KL (klvae's)."""
    loc, raw = enc(x).chunk(2, dim=-1)
    scale = F.softplus(raw) + MIN_SCALE
    z = loc + scale * torch.randn_like(loc)
    recon = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
    return recon - (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).sum(-1)


def bare_e2e(data_dir: str, epochs: int, out: Path, seed: int) -> dict:
    """A hand-written loop: the same nets and data, Adam(fused=True), a validation ELBO each epoch."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data = load_dataset("mnist", data_dir, binarize="dynamic", val_fraction=0.1, seed=seed)
    train, val = data.train.flatten(1), data.val.flatten(1)
    enc, dec = mlp([784, *HIDDEN, 2 * LATENT], nn.Tanh), mlp([LATENT, *HIDDEN[::-1], 784], nn.Tanh)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR, fused=True)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(train))
        for i in range(0, len(train), BATCH):
            p = train[perm[i:i + BATCH]]
            x = (torch.rand_like(p) < p).to(p.dtype)  # dynamic binarisation
            opt.zero_grad(set_to_none=True)
            (-elbo(enc, dec, x).mean()).backward()
            opt.step()
        with torch.no_grad():
            val_elbo = sum(elbo(enc, dec, val[i:i + BATCH]).sum() for i in range(0, len(val), BATCH)) / len(val)
        seconds.append(time.perf_counter() - start)
    torch.save({"encoder": enc.state_dict(), "decoder": dec.state_dict(), "val_elbo": val_elbo}, out / "bare-e2e.pt")
    return {"total": time.perf_counter() - t0, "epochs": seconds}


class PythaeEpochClock(TrainingCallback):
    def __init__(self):
        self.starts: list[float] = []

    def on_epoch_begin(self, training_config, **kwargs):
        self.starts.append(time.perf_counter())

    def on_train_end(self, training_config, **kwargs):
        self.starts.append(time.perf_counter())


def pythae_e2e(data_dir: str, epochs: int, out: Path, seed: int) -> dict:
    """pythae's BaseTrainer with train and eval data (it evaluates and checkpoints every epoch)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data = load_dataset("mnist", data_dir, binarize="dynamic", val_fraction=0.1, seed=seed)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                Encoder(HIDDEN, LATENT, nn.Tanh), Decoder(HIDDEN, LATENT, nn.Tanh))
    config = BaseTrainerConfig(output_dir=str(out / "pythae-e2e"), num_epochs=epochs, learning_rate=LR,
                               per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                               optimizer_cls="Adam", no_cuda=True, seed=seed)
    clock = PythaeEpochClock()
    BaseTrainer(model, DynamicBinarized(data.train, torch.zeros(len(data.train))),
                eval_dataset=BaseDataset(data.val, torch.zeros(len(data.val))), training_config=config,
                callbacks=[clock]).train()
    total = time.perf_counter() - t0
    epoch_seconds = [b - a for a, b in zip(clock.starts, clock.starts[1:])] or [total / epochs]
    return {"total": total, "epochs": epoch_seconds}
